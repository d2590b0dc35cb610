import Foundation

/// A 2-D convolution over NHWC activations, as a matrix product: patches (im2col) times the
/// weights `[kh·kw·cin, cout]` (packed). A 1x1 convolution with stride 1 needs no patches.
/// Batch norm is folded into the weights and bias by whoever builds it.
public struct Convolution: Sendable {
    public let inputChannels: Int
    public let outputChannels: Int
    public let kernel: Int
    public let stride: Int
    public let padding: Int
    let weights: PackedMatrix
    let bias: FloatBuffer

    /// `weight` in PyTorch's layout `[cout, cin, kh, kw]` (kh = kw = `kernel`); `scale` and
    /// `shift` (per output channel) fold a following batch norm: `y = scale · conv(x) + shift`.
    public init(
        weight: UnsafePointer<Float>, outputChannels: Int, inputChannels: Int, kernel: Int, stride: Int, padding: Int,
        scale: [Float]? = nil, shift: [Float]? = nil
    ) {
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        let rows = kernel * kernel * inputChannels
        let matrix = FloatBuffer(count: rows * outputChannels, zeroed: false)
        for o in 0..<outputChannels {
            let factor = scale?[o] ?? 1
            for i in 0..<inputChannels {
                for ky in 0..<kernel {
                    for kx in 0..<kernel {
                        let source = ((o * inputChannels + i) * kernel + ky) * kernel + kx
                        let row = (ky * kernel + kx) * inputChannels + i
                        matrix[row * outputChannels + o] = weight[source] * factor
                    }
                }
            }
        }
        weights = PackedMatrix(matrix, rows: rows, columns: outputChannels)
        bias = FloatBuffer(shift ?? [Float](repeating: 0, count: outputChannels))
    }

    public func outputSize(_ size: Int) -> Int { (size + 2 * padding - kernel) / stride + 1 }

    /// Applies the convolution to `[n, h, w, cin]`; returns `[n, ho, wo, cout]`, with ReLU if asked.
    public func apply(_ input: FloatBuffer, n: Int, h: Int, w: Int, relu: Bool = false) -> (FloatBuffer, Int, Int) {
        let ho = outputSize(h)
        let wo = outputSize(w)
        let rows = n * ho * wo
        let output = FloatBuffer(count: rows * outputChannels, zeroed: false)
        if kernel == 1 && padding == 0 && stride == 1 {
            weights.multiply(input.pointer, m: rows, into: output.pointer, bias: bias.pointer)
        } else {
            let patch = kernel * kernel * inputChannels
            let patches = FloatBuffer(count: rows * patch, zeroed: false)
            Self.im2col(input.pointer, n: n, h: h, w: w, c: inputChannels, kernel: kernel, stride: stride, padding: padding, ho: ho, wo: wo, into: patches.pointer)
            weights.multiply(patches.pointer, m: rows, into: output.pointer, bias: bias.pointer)
        }
        if relu { Kernels.relu(output.pointer, count: rows * outputChannels) }
        return (output, ho, wo)
    }

    /// One row per output position: the `kernel × kernel × c` input values it sees (zeros outside).
    static func im2col(
        _ input: UnsafePointer<Float>, n: Int, h: Int, w: Int, c: Int, kernel: Int, stride: Int, padding: Int,
        ho: Int, wo: Int, into patches: UnsafeMutablePointer<Float>
    ) {
        let patch = kernel * kernel * c
        nonisolated(unsafe) let input = input
        nonisolated(unsafe) let patches = patches
        let total = n * ho
        let threads = ComputeThreads.count(forWork: total * wo * patch * 8)
        ComputeThreads.run(threads: threads, chunks: total) { index in
            let image = index / ho
            let oy = index % ho
            for ox in 0..<wo {
                var destination = patches + ((image * ho + oy) * wo + ox) * patch
                for ky in 0..<kernel {
                    let iy = oy * stride - padding + ky
                    for kx in 0..<kernel {
                        let ix = ox * stride - padding + kx
                        if iy >= 0 && iy < h && ix >= 0 && ix < w {
                            destination.update(from: input + ((image * h + iy) * w + ix) * c, count: c)
                        } else {
                            destination.initialize(repeating: 0, count: c)
                        }
                        destination += c
                    }
                }
            }
        }
    }
}

extension Kernels {
    public static func relu(_ values: UnsafeMutablePointer<Float>, count: Int) {
        let raw = UnsafeMutableRawPointer(values)
        let zero = SIMD8<Float>()
        var i = 0
        while i + 8 <= count {
            let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            raw.storeBytes(of: v.replacing(with: zero, where: v .< zero), toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            if values[i] < 0 { values[i] = 0 }
            i += 1
        }
    }

    /// 3x3 max pooling, stride 2, padding 1 (torchvision's stem), NHWC.
    public static func maxPool3x3(_ input: UnsafePointer<Float>, n: Int, h: Int, w: Int, c: Int) -> (FloatBuffer, Int, Int) {
        let ho = (h + 2 - 3) / 2 + 1
        let wo = (w + 2 - 3) / 2 + 1
        let output = FloatBuffer(count: n * ho * wo * c, zeroed: false)
        for image in 0..<n {
            for oy in 0..<ho {
                for ox in 0..<wo {
                    let destination = output.pointer + ((image * ho + oy) * wo + ox) * c
                    destination.initialize(repeating: -.infinity, count: c)
                    for ky in 0..<3 {
                        let iy = oy * 2 - 1 + ky
                        guard iy >= 0 && iy < h else { continue }
                        for kx in 0..<3 {
                            let ix = ox * 2 - 1 + kx
                            guard ix >= 0 && ix < w else { continue }
                            let source = input + ((image * h + iy) * w + ix) * c
                            for channel in 0..<c { destination[channel] = max(destination[channel], source[channel]) }
                        }
                    }
                }
            }
        }
        return (output, ho, wo)
    }

    /// Mean over the spatial positions: `[n, h, w, c]` -> `[n, c]`.
    public static func globalAveragePool(_ input: UnsafePointer<Float>, n: Int, positions: Int, c: Int) -> FloatBuffer {
        let output = FloatBuffer(count: n * c)
        let scale = 1 / Float(positions)
        for image in 0..<n {
            let destination = output.pointer + image * c
            for position in 0..<positions { add(destination, input + (image * positions + position) * c, count: c) }
            for channel in 0..<c { destination[channel] *= scale }
        }
        return output
    }
}
