import Foundation

/// ResNet (He et al. 2015) from a state dict with torchvision's names: ResNet-18/34 (basic
/// blocks), ResNet-50/101/152 (bottlenecks, stride on the 3x3 as in torchvision), and CIFAR
/// ResNets (akamaster's: 3 stages of 16/32/64 channels, a `linear` head, "option A" shortcuts
/// that subsample and zero-pad channels). The architecture is read from the tensor names.
/// Batch norm is folded into the convolutions at load; activations are NHWC.
package final class ResNetModel: Sendable {
    package enum Family: String, Sendable, Equatable {
        case imagenet  // torchvision resnet18...152: 7x7 stem, max pool, 4 stages, `fc`
        case cifar  // 3x3 stem, 3 stages, `linear`, option-A shortcuts
    }

    /// One residual block: convolutions in order, and the shortcut.
    struct Block: Sendable {
        let convolutions: [Convolution]  // 2 (basic) or 3 (bottleneck)
        let shortcut: Shortcut
    }

    enum Shortcut: Sendable {
        case identity
        case projection(Convolution)  // torchvision downsample: 1x1 conv (stride) + bn
        case padding(stride: Int, extraChannels: Int)  // option A
    }

    package let family: Family
    package let bottleneck: Bool
    package let blockCounts: [Int]
    package let classes: Int
    let stem: Convolution
    let stages: [[Block]]
    let head: PackedMatrix
    let headBias: FloatBuffer
    let epsilon: Float = 1e-5

    package init(weights file: SafetensorsFile) throws {
        func tensor(_ name: String) throws -> FloatBuffer { try file.floats(name) }
        func shape(_ name: String) throws -> [Int] {
            guard let shape = file.shape(name) else { throw ModelLoadError(file: file.path, tensor: name, reason: "missing tensor") }
            return shape
        }
        let cifar = file.contains("linear.weight")
        family = cifar ? .cifar : .imagenet
        bottleneck = file.contains("layer1.0.conv3.weight")
        let stageCount = cifar ? 3 : 4
        var counts: [Int] = []
        for stage in 1...stageCount {
            var blocks = 0
            while file.contains("layer\(stage).\(blocks).conv1.weight") { blocks += 1 }
            guard blocks > 0 else { throw ModelLoadError(file: file.path, tensor: "layer\(stage).0.conv1.weight", reason: "missing tensor") }
            counts.append(blocks)
        }
        blockCounts = counts
        let epsilon = self.epsilon

        /// conv + bn, folded.
        func convolution(_ convName: String, _ bnName: String, stride: Int) throws -> Convolution {
            let dims = try shape(convName + ".weight")
            guard dims.count == 4, dims[2] == dims[3] else {
                throw ModelLoadError(file: file.path, tensor: convName + ".weight", reason: "expected a square [out, in, k, k] kernel, got \(dims)")
            }
            let weight = try tensor(convName + ".weight")
            let gamma = try file.floats(bnName + ".weight", shape: [dims[0]]).array
            let beta = try file.floats(bnName + ".bias", shape: [dims[0]]).array
            let mean = try file.floats(bnName + ".running_mean", shape: [dims[0]]).array
            let variance = try file.floats(bnName + ".running_var", shape: [dims[0]]).array
            let scale = (0..<dims[0]).map { gamma[$0] / (variance[$0] + epsilon).squareRoot() }
            let shift = (0..<dims[0]).map { beta[$0] - mean[$0] * scale[$0] }
            return Convolution(
                weight: weight.pointer, outputChannels: dims[0], inputChannels: dims[1], kernel: dims[2], stride: stride,
                padding: dims[2] / 2, scale: scale, shift: shift)
        }

        stem = cifar
            ? try convolution("conv1", "bn1", stride: 1)
            : try convolution("conv1", "bn1", stride: 2)
        var stages: [[Block]] = []
        for (stageIndex, blocks) in counts.enumerated() {
            var stage: [Block] = []
            for index in 0..<blocks {
                let p = "layer\(stageIndex + 1).\(index)."
                let stride = index == 0 && stageIndex > 0 ? 2 : 1
                var convolutions: [Convolution] = []
                if bottleneck {
                    convolutions.append(try convolution(p + "conv1", p + "bn1", stride: 1))
                    convolutions.append(try convolution(p + "conv2", p + "bn2", stride: stride))
                    convolutions.append(try convolution(p + "conv3", p + "bn3", stride: 1))
                } else {
                    convolutions.append(try convolution(p + "conv1", p + "bn1", stride: stride))
                    convolutions.append(try convolution(p + "conv2", p + "bn2", stride: 1))
                }
                let inputChannels = convolutions[0].inputChannels
                let outputChannels = convolutions[convolutions.count - 1].outputChannels
                let shortcut: Shortcut
                if file.contains(p + "downsample.0.weight") {
                    shortcut = .projection(try convolution(p + "downsample.0", p + "downsample.1", stride: stride))
                } else if stride != 1 || inputChannels != outputChannels {
                    guard cifar, outputChannels >= inputChannels, (outputChannels - inputChannels) % 2 == 0 else {
                        throw ModelLoadError(file: file.path, tensor: p + "downsample.0.weight", reason: "missing tensor (the block changes shape)")
                    }
                    shortcut = .padding(stride: stride, extraChannels: outputChannels - inputChannels)
                } else {
                    shortcut = .identity
                }
                stage.append(Block(convolutions: convolutions, shortcut: shortcut))
            }
            stages.append(stage)
        }
        self.stages = stages
        let headName = cifar ? "linear" : "fc"
        let headShape = try shape(headName + ".weight")
        let finalChannels = stages.last?.last?.convolutions.last?.outputChannels ?? 0
        guard headShape.count == 2, headShape[1] == finalChannels else {
            throw ModelLoadError(file: file.path, tensor: headName + ".weight", reason: "shape \(headShape), expected [classes, \(finalChannels)]")
        }
        classes = headShape[0]
        head = PackedMatrix(try tensor(headName + ".weight"), rows: finalChannels, columns: classes, transposed: true)
        headBias = try file.floats(headName + ".bias", shape: [classes])
    }

    /// Logits `[n, classes]` for `n` preprocessed images `[n, size, size, 3]`, in one batched pass.
    package func forward(_ input: [Float], n: Int, height: Int, width: Int) -> [[Float]] {
        var (x, h, w) = stem.apply(FloatBuffer(input), n: n, h: height, w: width, relu: true)
        if family == .imagenet {
            (x, h, w) = Kernels.maxPool3x3(x.pointer, n: n, h: h, w: w, c: stem.outputChannels)
        }
        for stage in stages {
            for block in stage {
                let residualInput = x
                let (inH, inW) = (h, w)
                let last = block.convolutions.count - 1
                var y = x
                for convolution in block.convolutions[..<last] {
                    (y, h, w) = convolution.apply(y, n: n, h: h, w: w, relu: true)
                }
                // The last convolution adds the shortcut (and applies ReLU) as it stores its result.
                let final = block.convolutions[last]
                switch block.shortcut {
                case .identity:
                    (y, h, w) = final.apply(y, n: n, h: h, w: w, relu: true, adding: residualInput)
                case .projection(let convolution):
                    let (projected, _, _) = convolution.apply(residualInput, n: n, h: inH, w: inW)
                    (y, h, w) = final.apply(y, n: n, h: h, w: w, relu: true, adding: projected)
                case .padding(let stride, let extra):
                    (y, h, w) = final.apply(y, n: n, h: h, w: w)
                    let channels = final.outputChannels
                    let inputChannels = channels - extra
                    let pad = extra / 2
                    for image in 0..<n {
                        for oy in 0..<h {
                            for ox in 0..<w {
                                let source = residualInput.pointer + ((image * inH + oy * stride) * inW + ox * stride) * inputChannels
                                let destination = y.pointer + ((image * h + oy) * w + ox) * channels + pad
                                Kernels.add(destination, source, count: inputChannels)
                            }
                        }
                    }
                    Kernels.relu(y.pointer, count: n * h * w * channels)
                }
                x = y
            }
        }
        let finalChannels = head.rows
        let pooled = Kernels.globalAveragePool(x.pointer, n: n, positions: h * w, c: finalChannels)
        let logits = FloatBuffer(count: n * classes, zeroed: false)
        head.multiply(pooled.pointer, m: n, into: logits.pointer, bias: headBias.pointer)
        return (0..<n).map { Array(UnsafeBufferPointer(start: logits.pointer + $0 * classes, count: classes)) }
    }

    /// The method each convolution takes on a batch of `n` images, in the order they run.
    func methods(n: Int, height: Int, width: Int) -> [Convolution.Method] {
        var methods = [stem.method(n: n, h: height, w: width)]
        var (h, w) = (stem.outputSize(height), stem.outputSize(width))
        if family == .imagenet { (h, w) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1) }
        for block in stages.joined() {
            let (inH, inW) = (h, w)
            for convolution in block.convolutions {
                methods.append(convolution.method(n: n, h: h, w: w))
                (h, w) = (convolution.outputSize(h), convolution.outputSize(w))
            }
            if case .projection(let convolution) = block.shortcut { methods.append(convolution.method(n: n, h: inH, w: inW)) }
        }
        return methods
    }

    package var description: String {
        let depth = blockCounts.reduce(0, +) * (bottleneck ? 3 : 2) + 2
        return "ResNet-\(depth)\(family == .cifar ? " (CIFAR)" : "")"
    }
}
