import Foundation

/// A 2-D convolution over NHWC activations, as a matrix product: patches (im2col) times the
/// weights `[kh·kw·cin, cout]` (packed). A 1x1 convolution with stride 1 needs no patches.
/// Batch norm is folded into the weights and bias by whoever builds it.
package struct Convolution: Sendable {
    package let inputChannels: Int
    package let outputChannels: Int
    package let kernel: Int
    package let stride: Int
    package let padding: Int
    let weights: PackedMatrix
    let bias: FloatBuffer
    /// The same 3x3, stride-1 convolution by Winograd's F(4x4, 3x3), where it applies.
    let winograd: WinogradConvolution?

    /// `weight` in PyTorch's layout `[cout, cin, kh, kw]` (kh = kw = `kernel`); `scale` and
    /// `shift` (per output channel) fold a following batch norm: `y = scale · conv(x) + shift`.
    package init(
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
        let bias = FloatBuffer(shift ?? [Float](repeating: 0, count: outputChannels))
        self.bias = bias
        winograd = kernel == 3 && stride == 1 && padding == 1
            ? WinogradConvolution(patchWeights: matrix.pointer, outputChannels: outputChannels, inputChannels: inputChannels, bias: bias)
            : nil
    }

    package func outputSize(_ size: Int) -> Int { (size + 2 * padding - kernel) / stride + 1 }

    /// Applies the convolution to `[n, h, w, cin]`; returns `[n, ho, wo, cout]`, with ReLU if
    /// asked. With `residual` (`[n, ho, wo, cout]`, a residual block's shortcut) the result is
    /// `relu(conv(x) + residual)`, written over `residual` and returned: the sum is formed as
    /// the product is stored rather than by another pass over memory.
    package func apply(_ input: FloatBuffer, n: Int, h: Int, w: Int, relu: Bool = false, adding residual: FloatBuffer? = nil) -> (FloatBuffer, Int, Int) {
        apply(input, n: n, h: h, w: w, relu: relu, adding: residual, method: method(n: n, h: h, w: w))
    }

    /// How the product is formed. All give the same result; they differ in memory traffic.
    enum Method: Equatable {
        /// 1x1, stride 1: the input already is the patch matrix.
        case pointwise
        /// Patches built a tile of output rows at a time, in cache (`applyTiled`).
        case tiled(rows: Int)
        /// Every patch first (im2col), then one product.
        case patches
        /// Winograd F(4x4, 3x3) (3x3, stride 1, padding 1 only).
        case winograd(WinogradConvolution.Plan)
    }

    /// The method expected to take least time on `[n, h, w, cin]`: a direct method with the
    /// least memory traffic, or Winograd's where its quarter of the multiplies outweighs its
    /// transforms and its larger weights.
    func method(n: Int, h: Int, w: Int) -> Method {
        if kernel == 1 && padding == 0 && stride == 1 { return .pointwise }
        let rows = n * outputSize(h) * outputSize(w)
        let tile = fusedTile(rows: rows)
        let direct: Method = tile.map { .tiled(rows: $0) } ?? .patches
        guard let winograd else { return direct }
        let directTraffic = tile.map { (rows + $0 - 1) / $0 * weights.byteCount } ?? materialisedTraffic(rows: rows)
        let directCost = Self.seconds(flops: 2 * rows * kernel * kernel * inputChannels * outputChannels, bytes: directTraffic)
        let tiles = n * WinogradConvolution.tiles(h) * WinogradConvolution.tiles(w)
        let threads = ComputeThreads.count(forWork: rows * kernel * kernel * inputChannels * outputChannels)
        let plan = winograd.plan(tiles: tiles, threads: threads)
        let winogradCost = Self.seconds(flops: winograd.flops(tiles: tiles), bytes: winograd.traffic(tiles: tiles, plan: plan))
        return winogradCost < directCost ? .winograd(plan) : direct
    }

    /// A rough time for a product on this class of machine (two cores): arithmetic and memory
    /// traffic do not overlap well enough to take the larger of the two.
    static func seconds(flops: Int, bytes: Int) -> Double { Double(flops) / 150e9 + Double(bytes) / 25e9 }

    func materialisedTraffic(rows: Int) -> Int {
        2 * rows * kernel * kernel * inputChannels * 4 + (rows + PackedMatrix.rowTile - 1) / PackedMatrix.rowTile * weights.byteCount
    }

    func apply(
        _ input: FloatBuffer, n: Int, h: Int, w: Int, relu: Bool, adding residual: FloatBuffer? = nil, method: Method
    ) -> (FloatBuffer, Int, Int) {
        let ho = outputSize(h)
        let wo = outputSize(w)
        let rows = n * ho * wo
        precondition(residual.map { $0.count == rows * outputChannels } ?? true, "the residual must have the output's shape")
        let output = residual ?? FloatBuffer(count: rows * outputChannels, zeroed: false)
        let accumulate = residual != nil
        switch method {
        case .pointwise:
            precondition(kernel == 1 && padding == 0 && stride == 1, "a pointwise product needs a 1x1, stride-1 convolution")
            weights.multiply(input.pointer, m: rows, into: output.pointer, bias: bias.pointer, accumulate: accumulate)
        case .tiled(let tile):
            applyTiled(input.pointer, n: n, h: h, w: w, ho: ho, wo: wo, tile: tile, into: output.pointer, accumulate: accumulate)
        case .winograd(let plan):
            guard let winograd else { preconditionFailure("Winograd's method needs a 3x3, stride-1, padding-1 convolution") }
            winograd.apply(input.pointer, n: n, h: h, w: w, relu: relu, accumulate: accumulate, into: output.pointer, plan: plan)
            return (output, ho, wo)
        case .patches:
            let patch = kernel * kernel * inputChannels
            let patches = FloatBuffer(count: rows * patch, zeroed: false)
            Self.im2col(input.pointer, n: n, h: h, w: w, c: inputChannels, kernel: kernel, stride: stride, padding: padding, ho: ho, wo: wo, into: patches.pointer)
            weights.multiply(patches.pointer, m: rows, into: output.pointer, bias: bias.pointer, accumulate: accumulate)
        }
        if relu { Kernels.relu(output.pointer, count: rows * outputChannels) }
        return (output, ho, wo)
    }

    /// Rows of output per tile when patches are built tile by tile (`applyTiled`), or nil when
    /// materialising every patch first costs less memory traffic. A tile's patches fill about
    /// half an L2 cache, so they are multiplied while still cached; the price is that the
    /// weights are streamed once per tile instead of once per 192 rows. Whole-batch patches are
    /// tens of MB (a ResNet-18 stage-1 convolution at batch 8: 58 MB), written out and read back
    /// at memory speed — that, not arithmetic, made batches slower per image than single images.
    func fusedTile(rows: Int) -> Int? {
        let patchBytes = kernel * kernel * inputChannels * 4
        let tile = max(12, min(PackedMatrix.rowTile, Self.tileBytes / patchBytes / 6 * 6))
        let tiled = (rows + tile - 1) / tile * weights.byteCount
        return tiled <= materialisedTraffic(rows: rows) ? tile : nil
    }

    static let tileBytes = 512 << 10

    /// im2col and the product one tile of output rows at a time, tiles shared among the compute
    /// threads; each tile's patches go to a cache-sized scratch block.
    func applyTiled(
        _ input: UnsafePointer<Float>, n: Int, h: Int, w: Int, ho: Int, wo: Int, tile: Int, into output: UnsafeMutablePointer<Float>,
        accumulate: Bool
    ) {
        let rows = n * ho * wo
        let patch = kernel * kernel * inputChannels
        let tiles = (rows + tile - 1) / tile
        let threads = ComputeThreads.count(forWork: rows * patch * outputChannels)
        nonisolated(unsafe) let input = input
        nonisolated(unsafe) let output = output
        let (c, kernel, stride, padding, cout) = (inputChannels, kernel, stride, padding, outputChannels)
        let weights = weights, bias = bias
        ComputeThreads.run(threads: threads, chunks: tiles) { index in
            let first = index * tile
            let count = min(tile, rows - first)
            // ~512 KiB: the buffer recycler hands the previous tile's block back, no new pages.
            let scratch = FloatBuffer(count: count * patch, zeroed: false)
            Self.im2col(
                input, rows: first..<(first + count), h: h, w: w, c: c, kernel: kernel, stride: stride, padding: padding,
                ho: ho, wo: wo, into: scratch.pointer)
            weights.multiplySerial(scratch.pointer, m: count, into: output + first * cout, bias: bias.pointer, accumulate: accumulate)
        }
    }

    /// The patches of output rows `rows` (flattened `image, oy, ox`), one after another.
    static func im2col(
        _ input: UnsafePointer<Float>, rows: Range<Int>, h: Int, w: Int, c: Int, kernel: Int, stride: Int, padding: Int,
        ho: Int, wo: Int, into patches: UnsafeMutablePointer<Float>
    ) {
        var destination = patches
        let span = kernel * c
        // (image, oy, ox) of the first row, then stepped: no divisions per row.
        var image = rows.lowerBound / (ho * wo)
        var oy = rows.lowerBound / wo % ho
        var ox = rows.lowerBound % wo
        for _ in rows {
            defer {
                ox += 1
                if ox == wo {
                    ox = 0
                    oy += 1
                    if oy == ho {
                        oy = 0
                        image += 1
                    }
                }
            }
            // The kernel's columns that fall inside the image: for each kernel row, one
            // contiguous run of input (NHWC), zeros either side.
            let left = ox * stride - padding
            let first = max(0, -left)
            let last = min(kernel, w - left)
            for ky in 0..<kernel {
                let iy = oy * stride - padding + ky
                if iy < 0 || iy >= h || first >= last {
                    Kernels.fill(destination, 0, count: span)
                } else {
                    Kernels.fill(destination, 0, count: first * c)
                    Kernels.copy(destination + first * c, input + ((image * h + iy) * w + left + first) * c, count: (last - first) * c)
                    Kernels.fill(destination + last * c, 0, count: (kernel - last) * c)
                }
                destination += span
            }
        }
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
            // Chunk `index` is output row (image, oy): its wo positions.
            im2col(
                input, rows: (index * wo)..<((index + 1) * wo), h: h, w: w, c: c, kernel: kernel, stride: stride,
                padding: padding, ho: ho, wo: wo, into: patches + index * wo * patch)
        }
    }
}

extension Kernels {
    package static func relu(_ values: UnsafeMutablePointer<Float>, count: Int) {
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
    package static func maxPool3x3(_ input: UnsafePointer<Float>, n: Int, h: Int, w: Int, c: Int) -> (FloatBuffer, Int, Int) {
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
    package static func globalAveragePool(_ input: UnsafePointer<Float>, n: Int, positions: Int, c: Int) -> FloatBuffer {
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
