import Foundation

/// A 3x3, stride-1, padding-1 convolution by Winograd's minimal filtering F(4x4, 3x3) (Lavin &
/// Gray 2015): each 4x4 block of output comes from a 6x6 block of input with 36 multiplies per
/// channel pair instead of 144. Per tile, `V = Bᵀ d B` (input), `U = G g Gᵀ` (weights, at load),
/// `M = V ⊙ U` summed over input channels — 36 independent matrix products
/// `[tiles, cin] · [cin, cout]` — and `Y = Aᵀ M A` (output).
///
/// Where the direct convolution already runs the multiply-add units at their peak, this is
/// what makes a 3x3 layer faster: the same answer from a quarter of the multiplies, at the
/// price of transforms (additions, vectorised over channels) and of weights 4x larger.
struct WinogradConvolution: Sendable {
    let inputChannels: Int
    let outputChannels: Int
    /// `U` for each of the 36 positions of a 6x6 tile: `[cin, cout]`.
    let transformed: [PackedMatrix]
    let bias: FloatBuffer

    static let positions = 36

    /// `patchWeights` as the direct product has them, `[(ky · 3 + kx) · cin + i, cout]`, already
    /// scaled by a folded batch norm.
    init(patchWeights: UnsafePointer<Float>, outputChannels: Int, inputChannels: Int, bias: FloatBuffer) {
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.bias = bias
        let g: [[Double]] = [
            [1.0 / 4, 0, 0], [-1.0 / 6, -1.0 / 6, -1.0 / 6], [-1.0 / 6, 1.0 / 6, -1.0 / 6],
            [1.0 / 24, 1.0 / 12, 1.0 / 6], [1.0 / 24, -1.0 / 12, 1.0 / 6], [0, 0, 1],
        ]
        let matrices = (0..<Self.positions).map { _ in FloatBuffer(count: inputChannels * outputChannels, zeroed: false) }
        var gg = [Double](repeating: 0, count: 18)  // G g, reused for every channel pair
        for o in 0..<outputChannels {
            for i in 0..<inputChannels {
                // G g (6x3), then (G g) Gᵀ (6x6), in double precision.
                for r in 0..<6 {
                    for c in 0..<3 {
                        // g[ky][kx] = W[(ky · 3 + kx) · cin + i, o]
                        gg[r * 3 + c] = (0..<3).reduce(0.0) {
                            $0 + g[r][$1] * Double(patchWeights[(($1 * 3 + c) * inputChannels + i) * outputChannels + o])
                        }
                    }
                }
                for r in 0..<6 {
                    for c in 0..<6 {
                        let value = (0..<3).reduce(0.0) { $0 + gg[r * 3 + $1] * g[c][$1] }
                        matrices[r * 6 + c][i * outputChannels + o] = Float(value)
                    }
                }
            }
        }
        transformed = matrices.map { PackedMatrix($0, rows: inputChannels, columns: outputChannels) }
    }

    /// Bytes of transformed weights (streamed once per block of tiles).
    var weightBytes: Int { transformed.reduce(0) { $0 + $1.byteCount } }

    static func tiles(_ size: Int) -> Int { (size + 3) / 4 }

    /// How the tiles are shared among the compute threads.
    enum Plan: Equatable {
        /// Blocks of `tiles` tiles, each transformed, multiplied and transformed back by one
        /// thread while its scratch is in cache (many tiles: small channel counts, large images).
        case fused(tiles: Int)
        /// Every tile transformed, then each product shared among the threads (few tiles and
        /// large weights: the weights stream from memory once instead of once per thread).
        case phased
    }

    /// The plan with the least memory traffic for `tiles` tiles on `threads` threads.
    func plan(tiles: Int, threads: Int) -> Plan {
        let scratchPerTile = Self.positions * (inputChannels + outputChannels) * 4
        let cached = max(12, (Self.blockBytes / scratchPerTile) / 12 * 12)  // whole 6-row micro-kernel blocks
        let block = max(1, min(cached, (tiles + threads - 1) / threads))
        return traffic(tiles: tiles, plan: .fused(tiles: block)) <= traffic(tiles: tiles, plan: .phased) ? .fused(tiles: block) : .phased
    }

    /// Multiply-adds (x2) of the products plus the transforms' arithmetic, in the same units.
    func flops(tiles: Int) -> Int {
        tiles * Self.positions * (2 * inputChannels * outputChannels + 12 * (inputChannels + outputChannels))
    }

    /// Bytes a plan moves beyond the input and output themselves.
    func traffic(tiles: Int, plan: Plan) -> Int {
        let scratchPerTile = Self.positions * (inputChannels + outputChannels) * 4
        switch plan {
        case .fused(let block):
            let spills = block * scratchPerTile > 2 * Self.blockBytes ? 2 * tiles * scratchPerTile : 0
            return (tiles + block - 1) / block * weightBytes + spills
        case .phased: return weightBytes + 2 * tiles * scratchPerTile
        }
    }

    /// Scratch of a fused block: about half of a 1 MiB L2, the rest for the weights streaming past.
    static let blockBytes = 512 << 10

    /// `[n, h, w, cin]` -> `[n, h, w, cout]`, plus bias (plus what `output` holds when
    /// `accumulate`), then ReLU when asked.
    func apply(
        _ input: UnsafePointer<Float>, n: Int, h: Int, w: Int, relu: Bool, accumulate: Bool = false,
        into output: UnsafeMutablePointer<Float>, plan: Plan? = nil
    ) {
        let tilesPerImage = Self.tiles(h) * Self.tiles(w)
        let tiles = n * tilesPerImage
        let threads = ComputeThreads.count(forWork: tiles * Self.positions * inputChannels * outputChannels)
        let geometry = Geometry(h: h, w: w, tilesAcross: Self.tiles(w), tilesPerImage: tilesPerImage)
        nonisolated(unsafe) let input = input
        nonisolated(unsafe) let output = output
        switch plan ?? self.plan(tiles: tiles, threads: threads) {
        case .fused(let block):
            let blocks = (tiles + block - 1) / block
            ComputeThreads.run(threads: threads, chunks: blocks) { index in
                let first = index * block
                let count = min(block, tiles - first)
                // The thread's own block: still in its core's cache from the previous block.
                let v = ThreadScratch.floats(Self.positions * count * (inputChannels + outputChannels))
                let m = v + Self.positions * count * inputChannels
                transformInput(input, geometry, tiles: first..<(first + count), into: v)
                for position in 0..<Self.positions {
                    transformed[position].multiplySerial(
                        v + position * inputChannels, m: count, ldx: Self.positions * inputChannels,
                        into: m + position * outputChannels, ldy: Self.positions * outputChannels)
                }
                transformOutput(m, geometry, tiles: first..<(first + count), relu: relu, accumulate: accumulate, into: output)
            }
        case .phased:
            let v = FloatBuffer(count: Self.positions * tiles * inputChannels, zeroed: false)
            let m = FloatBuffer(count: Self.positions * tiles * outputChannels, zeroed: false)
            nonisolated(unsafe) let vp = v.pointer
            nonisolated(unsafe) let mp = m.pointer
            let chunk = max(1, (tiles + threads * 4 - 1) / (threads * 4))
            let chunks = (tiles + chunk - 1) / chunk
            ComputeThreads.run(threads: threads, chunks: chunks) { index in
                let range = (index * chunk)..<min(tiles, (index + 1) * chunk)
                transformInput(input, geometry, tiles: range, into: vp + range.lowerBound * Self.positions * inputChannels)
            }
            for position in 0..<Self.positions {
                transformed[position].multiply(
                    vp + position * inputChannels, m: tiles, ldx: Self.positions * inputChannels, into: mp + position * outputChannels,
                    ldy: Self.positions * outputChannels)
            }
            ComputeThreads.run(threads: threads, chunks: chunks) { index in
                let range = (index * chunk)..<min(tiles, (index + 1) * chunk)
                transformOutput(
                    mp + range.lowerBound * Self.positions * outputChannels, geometry, tiles: range, relu: relu, accumulate: accumulate,
                    into: output)
            }
        }
    }

    struct Geometry {
        let h, w, tilesAcross, tilesPerImage: Int
    }

    typealias Lane = SIMD8<Float>

    /// `V = Bᵀ d B` for each tile in `tiles`: position p of the i-th tile goes to
    /// `v + (i * 36 + p) * cin` (a tile's transform is one contiguous run).
    func transformInput(_ input: UnsafePointer<Float>, _ geometry: Geometry, tiles: Range<Int>, into v: UnsafeMutablePointer<Float>) {
        let c = inputChannels
        let rowStep = geometry.w * c
        withUnsafeTemporaryAllocation(of: Lane.self, capacity: 72) { scratch in
            guard let d = scratch.baseAddress else { return }  // 72 lanes: never empty
            let t = d + 36
            let window = UnsafeRawPointer(d).assumingMemoryBound(to: Float.self)
            for (i, tile) in tiles.enumerated() {
                let image = tile / geometry.tilesPerImage
                let within = tile % geometry.tilesPerImage
                let y0 = within / geometry.tilesAcross * 4 - 1
                let x0 = within % geometry.tilesAcross * 4 - 1
                // The window's rows and columns inside the image; the rest reads as zeros.
                let (rowsFrom, rowsTo) = (max(0, -y0), min(6, geometry.h - y0))
                let (columnsFrom, columnsTo) = (max(0, -x0), min(6, geometry.w - x0))
                let origin = input + ((image * geometry.h + y0) * geometry.w + x0) * c
                var channel = 0
                while channel < c {
                    let lanes = min(8, c - channel)
                    // Bᵀ d over each column of the window, then (Bᵀ d) B over each row. Full
                    // vectors are read in place; a channel tail is gathered first.
                    if lanes == 8 {
                        for col in 0..<6 {
                            if col < columnsFrom || col >= columnsTo {
                                for r in 0..<6 { t[r * 6 + col] = Lane() }
                            } else if rowsFrom == 0 && rowsTo == 6 {
                                Self.store(Self.inputLine(origin + col * c + channel, rowStep), to: t + col, stride: Self.tStride)
                            } else {
                                Self.store(
                                    Self.inputLine(origin + col * c + channel, rowStep, rows: rowsFrom..<rowsTo), to: t + col,
                                    stride: Self.tStride)
                            }
                        }
                    } else {
                        for r in 0..<6 {
                            for col in 0..<6 {
                                let outside = r < rowsFrom || r >= rowsTo || col < columnsFrom || col >= columnsTo
                                d[r * 6 + col] = outside ? Lane() : Self.load(origin + (r * geometry.w + col) * c + channel, lanes)
                            }
                        }
                        for col in 0..<6 { Self.store(Self.inputLine(window + col * 8, 48), to: t + col, stride: Self.tStride) }
                    }
                    // The row pass writes full vectors straight to V (position r * 6 + j is c floats
                    // after the one before it); a channel tail goes through d.
                    let destination = v + i * Self.positions * c + channel
                    let raw = UnsafeMutableRawPointer(destination)
                    for r in 0..<6 {
                        let row = UnsafeRawPointer(t + r * 6).assumingMemoryBound(to: Float.self)
                        if lanes == 8 {
                            Self.store(Self.inputLine(row, 8), to: raw + r &* 6 &* c &* 4, stride: c &* 4)
                        } else {
                            Self.store(Self.inputLine(row, 8), to: d + r * 6, stride: Self.laneBytes)
                            for j in 0..<6 { Self.store(d[r * 6 + j], destination + (r * 6 + j) * c, lanes) }
                        }
                    }
                    channel += 8
                }
            }
        }
    }

    typealias Six = (Lane, Lane, Lane, Lane, Lane, Lane)
    static let laneBytes = MemoryLayout<Lane>.stride
    /// Between the rows of the 6x6 intermediate `t` (column j of row r at `t + r * 6 + j`).
    static let tStride = 6 * laneBytes

    /// Six vectors to `to`, `stride` bytes apart.
    @inline(__always)
    static func store(_ six: Six, to: UnsafeMutableRawPointer, stride: Int) {
        to.storeBytes(of: six.0, as: Lane.self)
        to.storeBytes(of: six.1, toByteOffset: stride, as: Lane.self)
        to.storeBytes(of: six.2, toByteOffset: 2 &* stride, as: Lane.self)
        to.storeBytes(of: six.3, toByteOffset: 3 &* stride, as: Lane.self)
        to.storeBytes(of: six.4, toByteOffset: 4 &* stride, as: Lane.self)
        to.storeBytes(of: six.5, toByteOffset: 5 &* stride, as: Lane.self)
    }

    @inline(__always)
    static func store(_ six: Six, to: UnsafeMutablePointer<Lane>, stride: Int) {
        store(six, to: UnsafeMutableRawPointer(to), stride: stride)
    }

    /// One line of `Bᵀ x`: six vectors `step` floats apart in, six out.
    @inline(__always)
    static func inputLine(_ x: UnsafePointer<Float>, _ step: Int) -> Six {
        let raw = UnsafeRawPointer(x)
        return inputLine(
            raw.loadUnaligned(as: Lane.self), raw.loadUnaligned(fromByteOffset: 4 * step, as: Lane.self),
            raw.loadUnaligned(fromByteOffset: 8 * step, as: Lane.self), raw.loadUnaligned(fromByteOffset: 12 * step, as: Lane.self),
            raw.loadUnaligned(fromByteOffset: 16 * step, as: Lane.self), raw.loadUnaligned(fromByteOffset: 20 * step, as: Lane.self))
    }

    /// The same with only `rows` of the six read (a window over the image's top or bottom edge).
    @inline(__always)
    static func inputLine(_ x: UnsafePointer<Float>, _ step: Int, rows: Range<Int>) -> Six {
        let raw = UnsafeRawPointer(x)
        func row(_ r: Int) -> Lane { rows.contains(r) ? raw.loadUnaligned(fromByteOffset: 4 * r * step, as: Lane.self) : Lane() }
        return inputLine(row(0), row(1), row(2), row(3), row(4), row(5))
    }

    @inline(__always)
    static func inputLine(_ d0: Lane, _ d1: Lane, _ d2: Lane, _ d3: Lane, _ d4: Lane, _ d5: Lane) -> Six {
        let four = Lane(repeating: 4), five = Lane(repeating: 5), two = Lane(repeating: 2)
        let a = d4 - four * d2, b = d3 - four * d1
        let e = d4 - d2, f = two * (d3 - d1)
        return ((d4 - five * d2).addingProduct(four, d0), a + b, a - b, e + f, e - f, (d5 - five * d3).addingProduct(four, d1))
    }

    /// `Y = Aᵀ M A` (+ bias, + what `output` holds when `accumulate`, ReLU) for each tile;
    /// position p of the i-th tile is read from `m + (i * 36 + p) * cout`. Output pixels outside
    /// the image are not written.
    func transformOutput(
        _ m: UnsafePointer<Float>, _ geometry: Geometry, tiles: Range<Int>, relu: Bool, accumulate: Bool,
        into output: UnsafeMutablePointer<Float>
    ) {
        let c = outputChannels
        withUnsafeTemporaryAllocation(of: Lane.self, capacity: 60) { scratch in
            guard let s = scratch.baseAddress else { return }  // 60 lanes: never empty
            let t = s + 36
            let gathered = UnsafeRawPointer(s).assumingMemoryBound(to: Float.self)
            for (i, tile) in tiles.enumerated() {
                let image = tile / geometry.tilesPerImage
                let within = tile % geometry.tilesPerImage
                let y0 = within / geometry.tilesAcross * 4
                let x0 = within % geometry.tilesAcross * 4
                let rows = min(4, geometry.h - y0), columns = min(4, geometry.w - x0)
                var channel = 0
                while channel < c {
                    let lanes = min(8, c - channel)
                    // Aᵀ M (6 columns of 6 -> 4), then (Aᵀ M) A (4 rows of 6 -> 4). Full vectors
                    // are read in place; a channel tail is gathered first.
                    let source = m + i * Self.positions * c + channel
                    if lanes == 8 {
                        for col in 0..<6 { Self.outputLine(source + col * c, 6 * c, t + col, 6) }
                    } else {
                        for p in 0..<36 { s[p] = Self.load(source + p * c, lanes) }
                        for col in 0..<6 { Self.outputLine(gathered + col * 8, 48, t + col, 6) }
                    }
                    let b = Self.load(bias.pointer + channel, lanes)
                    for r in 0..<rows {
                        Self.outputLine(UnsafeRawPointer(t + r * 6).assumingMemoryBound(to: Float.self), 8, s + r * 4, 1)
                        for col in 0..<columns {
                            let destination = output + ((image * geometry.h + y0 + r) * geometry.w + x0 + col) * c + channel
                            var value = s[r * 4 + col] + b
                            if accumulate { value += Self.load(destination, lanes) }
                            if relu { value.replace(with: Lane(), where: value .< Lane()) }
                            Self.store(value, destination, lanes)
                        }
                    }
                    channel += 8
                }
            }
        }
    }

    /// One line of `Aᵀ x`: six vectors `step` floats apart in, four out.
    @inline(__always)
    static func outputLine(_ x: UnsafePointer<Float>, _ step: Int, _ out: UnsafeMutablePointer<Lane>, _ outStep: Int) {
        let raw = UnsafeRawPointer(x)
        let m0 = raw.loadUnaligned(as: Lane.self), m1 = raw.loadUnaligned(fromByteOffset: 4 * step, as: Lane.self)
        let m2 = raw.loadUnaligned(fromByteOffset: 8 * step, as: Lane.self), m3 = raw.loadUnaligned(fromByteOffset: 12 * step, as: Lane.self)
        let m4 = raw.loadUnaligned(fromByteOffset: 16 * step, as: Lane.self), m5 = raw.loadUnaligned(fromByteOffset: 20 * step, as: Lane.self)
        let a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4
        out[0] = m0 + a + c
        out[outStep] = b.addingProduct(Lane(repeating: 2), d)
        out[2 * outStep] = a.addingProduct(Lane(repeating: 4), c)
        out[3 * outStep] = (b + m5).addingProduct(Lane(repeating: 8), d)
    }

    @inline(__always)
    static func load(_ pointer: UnsafePointer<Float>, _ lanes: Int) -> Lane {
        if lanes == 8 { return UnsafeRawPointer(pointer).loadUnaligned(as: Lane.self) }
        var value = Lane()
        for j in 0..<lanes { value[j] = pointer[j] }
        return value
    }

    @inline(__always)
    static func store(_ value: Lane, _ pointer: UnsafeMutablePointer<Float>, _ lanes: Int) {
        if lanes == 8 {
            UnsafeMutableRawPointer(pointer).storeBytes(of: value, as: Lane.self)
            return
        }
        for j in 0..<lanes { pointer[j] = value[j] }
    }
}

