import Foundation
import Synchronization
import CKernels
import CPrefetch

/// A weight matrix `W[K, N]` stored in panels of 16 columns (`panel[p][k][0..<16]`), so that a
/// product `Y = X · W` streams each panel once, contiguously, while 4 rows of `X` accumulate in
/// registers. This is the layout that makes small batches (decoding: 1 to 32 rows) run at memory
/// bandwidth and large ones at the FMA units' rate; OpenBLAS's sgemm packs its operands on every
/// call instead, which costs more than the product itself for skinny matrices.
package final class PackedMatrix: @unchecked Sendable {
    /// How weights are stored. Products always accumulate in float32; `bf16` halves the bytes
    /// read per product (decoding is bound by memory bandwidth) at bfloat16's 8-bit precision.
    /// The quantized formats hold llama.cpp's blocks (QuantizedPanels.swift): each column's K
    /// values in groups of 32 (16 for the K-quants' 6-, 3- and 2-bit types) of integer levels
    /// with a scale, and an offset for the types that have one. Bytes a weight: `q8_0` Q8_0
    /// 1.0625 and `q4_0` Q4_0 0.5625 (both as in the file), `q4_1` Q4_1 0.625, `q5_0` Q5_0 0.6875,
    /// `q5_1` Q5_1 0.75, `q4_k` Q4_K 0.75, `q5_k` Q5_K 0.875, `q6_k` Q6_K and Q3_K 1.25, `q2_k`
    /// Q2_K 1.5 (the K-quants' scales are products, kept as float32). A product runs in
    /// integers (`integerProducts`: X rounded to 8 bits per block of 32, as llama.cpp does), or
    /// exactly: each weight multiplied out (the float gguf-py's `dequantize` gives) before its
    /// multiply-add, the float32 product of the dequantized matrix bit for bit.
    /// From floats, `q8_0` and `q4_0` quantize as llama.cpp's reference quantizers; a K that is
    /// not whole groups, or another quantized format, keeps float32.
    package enum Format: String, Sendable {
        case f32, bf16
        case q8_0, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q2_k

        /// Bytes of one K row of a 16-column panel.
        var rowBytes: Int {
            switch self {
            case .f32: 64
            case .bf16: 32
            default: quantization.map { $0.groupBytes / $0.groupRows } ?? 64
            }
        }
    }

    package static let panelWidth = 16
    package let rows: Int  // K
    package let columns: Int  // N
    package let format: Format
    let panels: Int
    let storage: UnsafeMutableRawPointer
    let storageBytes: Int

    /// Packs `source`, which is `[K, N]` row-major, or `[N, K]` row-major when `transposed`
    /// (PyTorch `nn.Linear` weights, or an embedding table used as an output head).
    package convenience init(_ source: UnsafePointer<Float>, rows: Int, columns: Int, transposed: Bool = false, format: Format = .f32) {
        let quantizable = (format == .q8_0 || format == .q4_0) && rows % 32 == 0
        self.init(rows: rows, columns: columns, format: format.quantization == nil || quantizable ? format : .f32)
        if quantizable {
            quantize(source, transposed: transposed)
            return
        }
        let width = Self.panelWidth
        for panel in 0..<panels {
            let firstColumn = panel * width
            let count = min(width, columns - firstColumn)
            for k in 0..<rows {
                let offset = (panel * rows + k) * width
                for j in 0..<count {
                    let value = transposed ? source[(firstColumn + j) * rows + k] : source[k * columns + firstColumn + j]
                    switch self.format {
                    case .bf16:
                        // Word i of a row holds column i (low half) and column i + 8 (high half), so
                        // both halves become floats with one shift or one mask.
                        let slot = j < 8 ? (offset + 2 * j) * 2 : (offset + 2 * (j - 8) + 1) * 2
                        storage.storeBytes(of: Self.bfloat16(value), toByteOffset: slot, as: UInt16.self)
                    default: storage.storeBytes(of: value, toByteOffset: (offset + j) * 4, as: Float.self)
                    }
                }
            }
        }
    }

    package convenience init(_ buffer: FloatBuffer, rows: Int, columns: Int, transposed: Bool = false, format: Format = .f32) {
        self.init(buffer.pointer, rows: rows, columns: columns, transposed: transposed, format: format)
    }

    /// Zeroed storage for a `rows` x `columns` matrix in `format`.
    init(rows: Int, columns: Int, format: Format) {
        self.rows = rows
        self.columns = columns
        self.format = format
        panels = (columns + Self.panelWidth - 1) / Self.panelWidth
        storageBytes = panels * rows * format.rowBytes
        let buffer = FloatBuffer.allocateRaw(bytes: storageBytes)
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: storageBytes)
        storage = buffer
    }

    deinit { free(storage) }

    /// float32 -> bfloat16, rounding to nearest even.
    static func bfloat16(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return 0x7FC0 }
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }

    /// `W[k, n]` (for embedding lookups through an output head).
    @inline(__always)
    package func element(row k: Int, column n: Int) -> Float {
        let index = (n / Self.panelWidth) * rows * Self.panelWidth + k * Self.panelWidth + n % Self.panelWidth
        switch format {
        case .f32: return storage.load(fromByteOffset: index * 4, as: Float.self)
        case .bf16:
            let rowStart = index - n % Self.panelWidth
            let j = n % Self.panelWidth
            let slot = j < 8 ? rowStart + 2 * j : rowStart + 2 * (j - 8) + 1
            return Float(bitPattern: UInt32(storage.load(fromByteOffset: slot * 2, as: UInt16.self)) << 16)
        default:
            guard let q = format.quantization else { return 0 }
            return quantizedElement(row: k, column: n, q)
        }
    }

    /// Copies column `n` (length K) into `destination`.
    package func column(_ n: Int, into destination: UnsafeMutablePointer<Float>) {
        for k in 0..<rows { destination[k] = element(row: k, column: n) }
    }

    /// Bytes of weights a product reads.
    package var byteCount: Int { storageBytes }

    /// `Y[m, N] = X[m, K] · W (+ bias) (+ Y when accumulate)`. Panels are shared among the
    /// compute threads.
    package func multiply(
        _ x: UnsafePointer<Float>, m: Int, into y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>? = nil,
        accumulate: Bool = false
    ) {
        multiply(x, m: m, ldx: rows, into: y, ldy: columns, bias: bias, accumulate: accumulate)
    }

    /// `multiply` with rows of X `ldx` floats apart and rows of Y `ldy` apart. `native: false`
    /// keeps bf16 products off the CPU's bfloat16 instructions, and quantized ones off the
    /// integer kernel; `wide: false` f32 products off the AVX-512 kernel (tests compare them).
    func multiply(
        _ x: UnsafePointer<Float>, m: Int, ldx: Int, into y: UnsafeMutablePointer<Float>, ldy: Int,
        bias: UnsafePointer<Float>? = nil, accumulate: Bool = false, native: Bool = true, wide: Bool = true
    ) {
        if native && usesNativeBF16(m: m) { return multiplyNative(x, m: m, ldx: ldx, into: y, ldy: ldy, bias: bias, accumulate: accumulate) }
        if native && usesInteger { return multiplyInteger(x, m: m, ldx: ldx, into: y, ldy: ldy, bias: bias, accumulate: accumulate) }
        let onWide = wide && usesWide(m: m, native: native)
        // The AVX-512 kernel takes panels two at a time: chunks of whole pairs.
        let chunks = Chunks(m: m, of: self, pairs: onWide)
        // X packed once for the AVX-512 kernel, in blocks of 16 rows (row tiles start on one).
        let packed = onWide ? UnsafeMutablePointer<Float>.allocate(capacity: (m + 15) / 16 * 16 * rows) : nil
        defer { packed?.deallocate() }
        if let packed { mg_f32_pack_rows(x, ldx, Int32(m), Int32(rows), packed) }
        // The threads write disjoint parts of y and only read x, bias and the panels.
        nonisolated(unsafe) let x = x
        nonisolated(unsafe) let y = y
        nonisolated(unsafe) let bias = bias
        nonisolated(unsafe) let packedRows = packed.map { UnsafePointer($0) }
        let k = rows
        ComputeThreads.run(threads: chunks.threads, chunks: chunks.count) { index in
            let (panels, row, rows) = chunks[index]
            self.multiplyPanels(panels, x + row * ldx, rows, y + row * ldy, bias, accumulate, ldx, ldy, packed: packedRows.map { $0 + row * k })
        }
    }

    /// Whether a product of `m` rows runs on the AVX-512 kernel (bf16 ones that the CPU's own
    /// bfloat16 instructions do not take: a CPU without them, fewer rows, or `native: false`).
    func usesWide(m: Int, native: Bool = true) -> Bool {
        m >= Self.wideRows && Self.wideEnabled.load(ordering: .relaxed) && !(native && usesNativeBF16(m: m))
    }

    /// How a product's work is cut into (panel range x row tile) chunks, handed out in order:
    /// whichever thread is free takes the next, so a thread that starts late does not hold the
    /// others back, and a matrix with few columns (a convolution with few channels) still
    /// spreads over rows.
    struct Chunks {
        let threads, rowTile, rowTiles, panelsPerChunk, panels, m: Int

        /// `pairs`: chunks of whole pairs of panels (but for the last), for kernels that take two.
        init(m: Int, of matrix: PackedMatrix, pairs: Bool = false) {
            self.m = m
            panels = matrix.panels
            // A quantized weight costs a widening and a multiply before its multiply-add: count it as 4.
            threads = ComputeThreads.count(forWork: m * matrix.rows * matrix.columns * (matrix.format.quantization != nil ? 4 : 1), bytes: matrix.storageBytes)
            rowTile = m <= PackedMatrix.rowTile ? m : PackedMatrix.rowTile
            rowTiles = (m + rowTile - 1) / rowTile
            // With many row tiles, a chunk takes every panel for its rows: the rows are read from
            // memory once and stay cached while the panels stream past (tall products: convolutions).
            let perChunk = threads == 1 || rowTiles >= threads * 4 ? panels : max(1, panels / (threads * 8))
            panelsPerChunk = pairs ? (perChunk + 1) & ~1 : perChunk
        }

        var count: Int { (panels + panelsPerChunk - 1) / panelsPerChunk * rowTiles }

        /// Chunk `index`: its panels, its first row and its number of rows.
        subscript(index: Int) -> (panels: Range<Int>, row: Int, rows: Int) {
            let first = (index / rowTiles) * panelsPerChunk
            let row = (index % rowTiles) * rowTile
            return (first..<min(panels, first + panelsPerChunk), row, min(rowTile, m - row))
        }
    }

    // MARK: Native bfloat16 products

    /// Rows from which bf16 products run on the CPU's own bfloat16 dot products (AVX512-BF16:
    /// twice the multiply-adds of float32 FMAs per instruction), with X rounded to bfloat16 as
    /// well. Fewer rows (decoding) are bound by memory, where the float32 path reads the same
    /// bytes and keeps X exact. `MODELGATE_KERNELS=bf16=widened` turns them off.
    /// (The packed probe: at 4 rows, memory-bound, no faster than the float32 path; at 8, 1.3x.)
    static let nativeRows = 8
    static let nativeAvailable = KernelSelection.current.bf16Native

    func usesNativeBF16(m: Int) -> Bool { format == .bf16 && m >= Self.nativeRows && Self.nativeAvailable }

    private func multiplyNative(
        _ x: UnsafePointer<Float>, m: Int, ldx: Int, into y: UnsafeMutablePointer<Float>, ldy: Int, bias: UnsafePointer<Float>?,
        accumulate: Bool
    ) {
        // X once as bfloat16 pairs of K rows; each chunk re-lays its panels two at a time in
        // pairs of K rows (in its thread's own scratch, L2-resident) and runs every row of its
        // tile against them, 8 rows at a time.
        let kPairs = (rows + 1) / 2, block = Int(MG_BF16_BLOCK)
        let pairs = UnsafeMutablePointer<UInt32>.allocate(capacity: (m + block - 1) / block * block * kPairs)
        defer { pairs.deallocate() }
        mg_bf16_pack_rows(x, ldx, Int32(m), Int32(rows), pairs)
        let chunks = Chunks(m: m, of: self, pairs: true)
        nonisolated(unsafe) let pairsRead = UnsafePointer(pairs)
        nonisolated(unsafe) let y = y
        nonisolated(unsafe) let bias = bias
        ComputeThreads.run(threads: chunks.threads, chunks: chunks.count) { index in
            let (panels, row, tileRows) = chunks[index]
            let width = 2 * Self.panelWidth
            let paired = UnsafeMutableRawPointer(ThreadScratch.floats(kPairs * width, slot: .pairedPanel))
                .bindMemory(to: UInt32.self, capacity: kPairs * width)
            let panelBytes = self.rows * Self.panelWidth * 2
            for panel in stride(from: panels.lowerBound, to: panels.upperBound, by: 2) {
                let column = panel * Self.panelWidth
                let first = self.storage + panel * panelBytes
                let second = panel + 1 < panels.upperBound ? first + panelBytes : nil
                mg_bf16_pair_panels(
                    first.assumingMemoryBound(to: UInt16.self), second?.assumingMemoryBound(to: UInt16.self), Int32(self.rows), paired)
                // Row tiles start on a block: rowTile is a multiple of 8.
                mg_bf16_panels_product(
                    pairsRead + row * kPairs, Int32(tileRows), paired, Int32(kPairs), y + row * ldy + column, ldy,
                    Int32(min(width, self.columns - column)), bias.map { $0 + column }, accumulate ? 1 : 0,
                    panel + 2 < panels.upperBound ? UnsafeRawPointer(first + 2 * panelBytes) : nil)
            }
        }
    }

    // MARK: Integer products of quantized matrices

    /// Whether quantized products run on the integer kernels (mg_quant.h: AVX-512 VNNI where the
    /// CPU has it, else AVX2, the same floats either way), as llama.cpp's do: X quantized per
    /// block of 32 K values to 8 bits (mg_q8_quantize_rows), each group's levels multiplied in
    /// integers, one float32 multiply-add per group and column. X's rounding (at most half a
    /// step of its block's largest magnitude / 127) is the price; the float32 kernels keep X
    /// exact and multiply every weight out. Every quantized format. Benchmarks and tests turn it
    /// off for a task (`$integerProducts.withValue(false)`: the products computed on its thread).
    @TaskLocal package static var integerProducts = KernelSelection.current.quantized != .exact
    /// Whether the integer products run on VNNI (else AVX2); tests compare both.
    static let vnniEnabled = KernelSelection.current.quantized == .vnni

    var usesInteger: Bool {
        format.quantization != nil && rows % 32 == 0 && Self.integerProducts
    }

    /// The integer product; `vnni` picks the variant (tests run both where the CPU has VNNI).
    func multiplyInteger(
        _ x: UnsafePointer<Float>, m: Int, ldx: Int, into y: UnsafeMutablePointer<Float>, ldy: Int, bias: UnsafePointer<Float>?,
        accumulate: Bool, vnni: Bool = PackedMatrix.vnniEnabled
    ) {
        let k = rows, blocks = rows / 32
        let levels = UnsafeMutablePointer<Int8>.allocate(capacity: m * k)
        let scales = UnsafeMutablePointer<Float>.allocate(capacity: m * blocks)
        let sums = UnsafeMutablePointer<Int32>.allocate(capacity: m * 2 * blocks)
        defer {
            levels.deallocate()
            scales.deallocate()
            sums.deallocate()
        }
        mg_q8_quantize_rows(x, ldx, Int32(m), Int32(k), levels, scales, sums)
        let chunks = Chunks(m: m, of: self, pairs: true)
        nonisolated(unsafe) let (levelsRead, scalesRead, sumsRead) = (UnsafePointer(levels), UnsafePointer(scales), UnsafePointer(sums))
        nonisolated(unsafe) let y = y
        nonisolated(unsafe) let bias = bias
        let panelBytes = k * format.rowBytes
        ComputeThreads.run(threads: chunks.threads, chunks: chunks.count) { index in
            let (panels, row, tileRows) = chunks[index]
            for panel in stride(from: panels.lowerBound, to: panels.upperBound, by: 2) {
                let column = panel * Self.panelWidth, pair = panel + 1 < panels.upperBound ? 2 : 1
                mg_quantized_integer_rows(
                    vnni ? 1 : 0, self.format.kernelKind, self.storage + panel * panelBytes, panelBytes, Int32(pair), Int32(k), levelsRead + row * k,
                    scalesRead + row * blocks, sumsRead + row * 2 * blocks, Int32(tileRows), y + row * ldy + column, ldy,
                    Int32(min(pair * Self.panelWidth, self.columns - column)), bias.map { $0 + column }, accumulate ? 1 : 0)
            }
        }
    }

    /// `multiply` on the calling thread alone (a caller that already shares out the work);
    /// rows of X are `ldx` floats apart and rows of Y `ldy` (defaults: K and N, packed rows).
    func multiplySerial(
        _ x: UnsafePointer<Float>, m: Int, ldx: Int? = nil, into y: UnsafeMutablePointer<Float>, ldy: Int? = nil,
        bias: UnsafePointer<Float>? = nil, accumulate: Bool = false
    ) {
        multiplyPanels(0..<panels, x, m, y, bias, accumulate, ldx ?? rows, ldy ?? columns)
    }

    /// Row x against panel `panel` alone: its 16 columns of `x · W` into `y[16 panel ...]`, as
    /// a one-row `multiply` computes them.
    func multiplyPanel(_ panel: Int, _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>) {
        multiplyPanels(panel..<(panel + 1), x, 1, y, nil, false, rows, columns)
    }

    /// Rows per chunk when a product has many (a multiple of the 6-row micro-kernel).
    static let rowTile = 192

    /// `packed`: X from mg_f32_pack_rows, for the AVX-512 kernel; nil for the Swift blocks.
    private func multiplyPanels(
        _ range: Range<Int>, _ x: UnsafePointer<Float>, _ m: Int, _ y: UnsafeMutablePointer<Float>,
        _ bias: UnsafePointer<Float>?, _ accumulate: Bool, _ ldx: Int, _ ldy: Int, packed: UnsafePointer<Float>? = nil
    ) {
        switch format {
        case .f32:
            if let packed { return multiplyWide(range, packed, m, y, bias, accumulate, ldy) }
            multiplyPanels(range, x, m, y, bias, accumulate, ldx, ldy, F32Panel.self)
        case .bf16:
            if let packed { return multiplyWide(range, packed, m, y, bias, accumulate, ldy) }
            multiplyPanels(range, x, m, y, bias, accumulate, ldx, ldy, BF16Panel.self)
        default:
            if let packed { return multiplyWide(range, packed, m, y, bias, accumulate, ldy) }
            switch format {
            case .q4_0: multiplyPanels(range, x, m, y, bias, accumulate, ldx, ldy, QuantizedPanel<Q4_0>.self)
            case .q4_1: multiplyPanels(range, x, m, y, bias, accumulate, ldx, ldy, QuantizedPanel<Q4_1>.self)
            case .q4_k: multiplyPanels(range, x, m, y, bias, accumulate, ldx, ldy, QuantizedPanel<Q4_K>.self)
            case .q5_k: multiplyPanels(range, x, m, y, bias, accumulate, ldx, ldy, QuantizedPanel<Q5_K>.self)
            case .q5_0: multiplyPanels(range, x, m, y, bias, accumulate, ldx, ldy, QuantizedPanel<Q5_0>.self)
            case .q5_1: multiplyPanels(range, x, m, y, bias, accumulate, ldx, ldy, QuantizedPanel<Q5_1>.self)
            case .q6_k: multiplyPanels(range, x, m, y, bias, accumulate, ldx, ldy, QuantizedPanel<Q6_K>.self)
            case .q2_k: multiplyPanels(range, x, m, y, bias, accumulate, ldx, ldy, QuantizedPanel<Q2_K>.self)
            default: multiplyPanels(range, x, m, y, bias, accumulate, ldx, ldy, QuantizedPanel<Q8_0>.self)
            }
        }
    }

    /// The AVX-512 kernel's walk: each panel in slices (as the Swift blocks take them), every row.
    private func multiplyWide(
        _ range: Range<Int>, _ packed: UnsafePointer<Float>, _ m: Int, _ y: UnsafeMutablePointer<Float>,
        _ bias: UnsafePointer<Float>?, _ accumulate: Bool, _ ldy: Int
    ) {
        let k = rows
        let slice = m > 6 && k > 2 * Self.kSlice ? Self.kSlice : k
        let rowBytes = format.rowBytes
        let stride = k * Self.panelWidth  // elements from one panel to the next
        // Two panels at a time (the kernel's pair blocks load fewer times per multiply-add), an
        // odd last one alone.
        var panel = range.lowerBound
        while panel < range.upperBound {
            let pair = panel + 1 < range.upperBound ? 2 : 1
            let column = panel * Self.panelWidth
            let w = storage + panel * k * rowBytes
            var kStart = 0
            while kStart < k {
                let kCount = min(slice, k - kStart)
                let first = kStart == 0
                let slice = w + kStart * rowBytes, rowsIn = packed + kStart * 16
                let count = Int32(min(pair * Self.panelWidth, columns - column))
                let (sliceBias, sliceAccumulate) = (first ? bias.map { $0 + column } : nil, !first || accumulate ? Int32(1) : 0)
                switch format {
                case .f32:
                    mg_f32_panel_rows(
                        slice.assumingMemoryBound(to: Float.self), stride, Int32(pair), Int32(kCount), rowsIn, Int32(k), Int32(m), y + column, ldy,
                        count, sliceBias, sliceAccumulate)
                case .bf16:
                    mg_bf16_panel_rows(
                        slice.assumingMemoryBound(to: UInt16.self), stride, Int32(pair), Int32(kCount), rowsIn, Int32(k), Int32(m), y + column,
                        ldy, count, sliceBias, sliceAccumulate)
                default:
                    mg_quantized_panel_rows(
                        format.kernelKind, slice, stride, Int32(pair), Int32(kCount), rowsIn, Int32(k), Int32(m), y + column, ldy, count, sliceBias,
                        sliceAccumulate)
                }
                kStart += kCount
            }
            panel += pair
        }
    }

    @inline(__always)
    private func multiplyPanels<Element: PanelElement>(
        _ range: Range<Int>, _ x: UnsafePointer<Float>, _ m: Int, _ y: UnsafeMutablePointer<Float>,
        _ bias: UnsafePointer<Float>?, _ accumulate: Bool, _ ldx: Int, _ ldy: Int, _ element: Element.Type
    ) {
        let k = rows
        let n = columns
        // Several row blocks reuse each panel: walk it in slices that stay in L1 while every
        // block takes its turn (partial sums go through y, which is tiny). One block streams
        // the panel straight through.
        let slice = m > 6 && k > 2 * Self.kSlice ? Self.kSlice : k
        let blocks = Self.rowBlocks(m)
        for panel in range {
            let column = panel * Self.panelWidth
            let count = min(Self.panelWidth, n - column)
            let panelBase = UnsafeRawPointer(storage + panel * k * Element.rowBytes)
            var kStart = 0
            while kStart < k {
                let kCount = min(slice, k - kStart)
                let w = panelBase + kStart * Element.rowBytes
                let first = kStart == 0
                let sliceBias = first ? bias.map { $0 + column } : nil
                let sliceAccumulate = first ? accumulate : true
                // A decoding batch streams its weights from memory, and the first row block
                // waits for them while the later ones work from cache: those later blocks fetch
                // the data that comes next (the next slice or panel), so that memory and
                // arithmetic overlap instead of taking turns.
                let more = storageBytes >= Self.streamedBytes && (panel + 1 < range.upperBound || kStart + kCount < k)
                let ahead = Self.prefetchAhead(m: m, blocks: blocks.six + blocks.four, kCount: kCount, more: more, bytesPerRow: Element.rowBytes)
                let next = w + kCount * Element.rowBytes
                var r = 0
                var later = 0
                func prefetch() -> UnsafeRawPointer? {
                    guard let ahead, r > 0 else { return nil }
                    defer { later += 1 }
                    return next + later * ahead.lines * 64
                }
                for _ in 0..<blocks.six {
                    Self.block6(
                        w, kCount, x + r * ldx + kStart, ldx, y + r * ldy + column, ldy, count, sliceBias, sliceAccumulate, element,
                        prefetch: prefetch(), every: ahead?.every ?? 0)
                    r += 6
                }
                for _ in 0..<blocks.four {
                    Self.block4(
                        w, kCount, x + r * ldx + kStart, ldx, y + r * ldy + column, ldy, count, sliceBias, sliceAccumulate, element,
                        prefetch: prefetch(), every: ahead?.every ?? 0)
                    r += 4
                }
                while r < m {
                    Self.block1(w, kCount, x + r * ldx + kStart, y + r * ldy + column, count, sliceBias, sliceAccumulate, element)
                    r += 1
                }
                kStart += kCount
            }
        }
    }

    /// Rows from which products run on AVX-512 (`mg_f32_panel_rows`, `mg_bf16_panel_rows`),
    /// where the CPU has it; `MODELGATE_KERNELS=f32=avx2` keeps them on the Swift blocks. Every row
    /// count: a decoding step's one row streams its weights 15% faster there than through the
    /// Swift single-row block (Qwen2.5-0.5B shape, f32, Intel Xeon: 12.6-13.5 against
    /// 10.6-11.6 tokens/s in 3 alternating rounds).
    static let wideRows = 1
    /// Whether they do: on where the CPU has AVX-512 (and the variable allows). Benchmarks turn it
    /// off to compare both in one process; it must not be turned on where it started off.
    package static let wideEnabled = Atomic(KernelSelection.current.f32Wide)

    static let kSlice = 1024
    static let streamedBytes = 1 << 20

    /// How `m` rows are taken: blocks of 6, ending 4 + 4 rather than 6 + 1 + 1 (a single-row
    /// block reads the panel again for one row's work), then blocks of 4, then single rows.
    static func rowBlocks(_ m: Int) -> (six: Int, four: Int) {
        var r = 0, six = 0
        while r + 6 <= m && m - r != 8 && m - r != 9 { r += 6; six += 1 }
        return (six, (m - r) / 4)
    }

    /// How each of the `blocks` row blocks after the first shares out fetching the next
    /// `kCount` rows of weights: `lines` cache lines, one every `2^every` iterations. Only for 7
    /// to 32 rows (a decoding batch: one block alone has no later block, and the weights of
    /// larger products stay in cache anyway), and weights too large for the L2 cache
    /// (`streamedBytes`).
    static func prefetchAhead(m: Int, blocks: Int, kCount: Int, more: Bool, bytesPerRow: Int) -> (lines: Int, every: Int)? {
        guard more, m > 6, m <= 32, blocks > 1 else { return nil }
        let lines = (kCount * bytesPerRow / 64 + blocks - 2) / (blocks - 1)
        var every = 0
        while kCount >> (every + 1) >= lines { every += 1 }
        return (lines, every)
    }

    /// Six rows of X against one panel: 12 accumulators, 2 weight vectors and a broadcast fill
    /// the 16 vector registers of AVX2.
    @inline(__always)
    static func block6<Element: PanelElement>(
        _ w: UnsafeRawPointer, _ k: Int, _ x: UnsafePointer<Float>, _ ldx: Int, _ y: UnsafeMutablePointer<Float>, _ ldy: Int,
        _ count: Int, _ bias: UnsafePointer<Float>?, _ accumulate: Bool, _ element: Element.Type,
        prefetch: UnsafeRawPointer? = nil, every: Int = 0
    ) {
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), b0 = SIMD8<Float>(), b1 = SIMD8<Float>()
        var c0 = SIMD8<Float>(), c1 = SIMD8<Float>(), d0 = SIMD8<Float>(), d1 = SIMD8<Float>()
        var e0 = SIMD8<Float>(), e1 = SIMD8<Float>(), f0 = SIMD8<Float>(), f1 = SIMD8<Float>()
        let x0 = x, x1 = x + ldx, x2 = x + 2 * ldx, x3 = x + 3 * ldx, x4 = x + 4 * ldx, x5 = x + 5 * ldx
        let mask = (1 << every) - 1
        for kk in 0..<k {
            if let prefetch, kk & mask == 0 { mg_prefetch(prefetch + (kk >> every) << 6) }
            let (w0, w1) = Element.row(w, kk)
            var s = SIMD8<Float>(repeating: x0[kk])
            a0 = a0.addingProduct(s, w0)
            a1 = a1.addingProduct(s, w1)
            s = SIMD8<Float>(repeating: x1[kk])
            b0 = b0.addingProduct(s, w0)
            b1 = b1.addingProduct(s, w1)
            s = SIMD8<Float>(repeating: x2[kk])
            c0 = c0.addingProduct(s, w0)
            c1 = c1.addingProduct(s, w1)
            s = SIMD8<Float>(repeating: x3[kk])
            d0 = d0.addingProduct(s, w0)
            d1 = d1.addingProduct(s, w1)
            s = SIMD8<Float>(repeating: x4[kk])
            e0 = e0.addingProduct(s, w0)
            e1 = e1.addingProduct(s, w1)
            s = SIMD8<Float>(repeating: x5[kk])
            f0 = f0.addingProduct(s, w0)
            f1 = f1.addingProduct(s, w1)
        }
        store(a0, a1, y, count, bias, accumulate)
        store(b0, b1, y + ldy, count, bias, accumulate)
        store(c0, c1, y + 2 * ldy, count, bias, accumulate)
        store(d0, d1, y + 3 * ldy, count, bias, accumulate)
        store(e0, e1, y + 4 * ldy, count, bias, accumulate)
        store(f0, f1, y + 5 * ldy, count, bias, accumulate)
    }

    /// Four rows of X against one panel: 8 accumulators in registers.
    @inline(__always)
    static func block4<Element: PanelElement>(
        _ w: UnsafeRawPointer, _ k: Int, _ x: UnsafePointer<Float>, _ ldx: Int, _ y: UnsafeMutablePointer<Float>, _ ldy: Int,
        _ count: Int, _ bias: UnsafePointer<Float>?, _ accumulate: Bool, _ element: Element.Type,
        prefetch: UnsafeRawPointer? = nil, every: Int = 0
    ) {
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), b0 = SIMD8<Float>(), b1 = SIMD8<Float>()
        var c0 = SIMD8<Float>(), c1 = SIMD8<Float>(), d0 = SIMD8<Float>(), d1 = SIMD8<Float>()
        let x0 = x, x1 = x + ldx, x2 = x + 2 * ldx, x3 = x + 3 * ldx
        let mask = (1 << every) - 1
        for kk in 0..<k {
            if let prefetch, kk & mask == 0 { mg_prefetch(prefetch + (kk >> every) << 6) }
            let (w0, w1) = Element.row(w, kk)
            let s0 = SIMD8<Float>(repeating: x0[kk])
            a0 = a0.addingProduct(s0, w0)
            a1 = a1.addingProduct(s0, w1)
            let s1 = SIMD8<Float>(repeating: x1[kk])
            b0 = b0.addingProduct(s1, w0)
            b1 = b1.addingProduct(s1, w1)
            let s2 = SIMD8<Float>(repeating: x2[kk])
            c0 = c0.addingProduct(s2, w0)
            c1 = c1.addingProduct(s2, w1)
            let s3 = SIMD8<Float>(repeating: x3[kk])
            d0 = d0.addingProduct(s3, w0)
            d1 = d1.addingProduct(s3, w1)
        }
        store(a0, a1, y, count, bias, accumulate)
        store(b0, b1, y + ldy, count, bias, accumulate)
        store(c0, c1, y + 2 * ldy, count, bias, accumulate)
        store(d0, d1, y + 3 * ldy, count, bias, accumulate)
    }

    /// One row of X against one panel (decoding, and the bounded head's candidate panels): one
    /// chain in K order per column, as the AVX-512 kernel and the other blocks sum, so a column
    /// computed alone equals the same column of a whole product. (Two chains hid FMA latency,
    /// but a decoding step waits on memory, not on its multiply-adds.)
    @inline(__always)
    static func block1<Element: PanelElement>(
        _ w: UnsafeRawPointer, _ k: Int, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ count: Int,
        _ bias: UnsafePointer<Float>?, _ accumulate: Bool, _ element: Element.Type
    ) {
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>()
        for kk in 0..<k {
            let s = SIMD8<Float>(repeating: x[kk])
            let (w0, w1) = Element.row(w, kk)
            a0 = a0.addingProduct(s, w0)
            a1 = a1.addingProduct(s, w1)
        }
        store(a0, a1, y, count, bias, accumulate)
    }

    @inline(__always)
    static func store(
        _ low: SIMD8<Float>, _ high: SIMD8<Float>, _ y: UnsafeMutablePointer<Float>, _ count: Int,
        _ bias: UnsafePointer<Float>?, _ accumulate: Bool
    ) {
        if count == 16 {
            var lo = low, hi = high
            if let bias {
                lo += UnsafeRawPointer(bias).loadUnaligned(as: SIMD8<Float>.self)
                hi += UnsafeRawPointer(bias + 8).loadUnaligned(as: SIMD8<Float>.self)
            }
            let raw = UnsafeMutableRawPointer(y)
            if accumulate {
                lo += raw.loadUnaligned(as: SIMD8<Float>.self)
                hi += raw.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self)
            }
            raw.storeBytes(of: lo, as: SIMD8<Float>.self)
            raw.storeBytes(of: hi, toByteOffset: 32, as: SIMD8<Float>.self)
            return
        }
        for j in 0..<count {
            var value = j < 8 ? low[j] : high[j - 8]
            if let bias { value += bias[j] }
            if accumulate { value += y[j] }
            y[j] = value
        }
    }
}

/// How one panel row (16 weights) is loaded as two float32 vectors.
protocol PanelElement {
    /// Bytes of one K row of a panel (slices start at multiples of 32 rows).
    static var rowBytes: Int { get }
    static func row(_ panel: UnsafeRawPointer, _ k: Int) -> (SIMD8<Float>, SIMD8<Float>)
}

enum F32Panel: PanelElement {
    static var rowBytes: Int { 64 }
    @inline(__always)
    static func row(_ panel: UnsafeRawPointer, _ k: Int) -> (SIMD8<Float>, SIMD8<Float>) {
        (panel.loadUnaligned(fromByteOffset: k * 64, as: SIMD8<Float>.self),
         panel.loadUnaligned(fromByteOffset: k * 64 + 32, as: SIMD8<Float>.self))
    }
}

enum BF16Panel: PanelElement {
    static var rowBytes: Int { 32 }
    @inline(__always)
    static func row(_ panel: UnsafeRawPointer, _ k: Int) -> (SIMD8<Float>, SIMD8<Float>) {
        let words = panel.loadUnaligned(fromByteOffset: k * 32, as: SIMD8<UInt32>.self)
        return (unsafeBitCast(words &<< 16, to: SIMD8<Float>.self),
                unsafeBitCast(words & SIMD8(repeating: 0xFFFF_0000), to: SIMD8<Float>.self))
    }
}

/// The threads that share a product's panels: the caller plus the other cores' workers of the
/// compute team. Small products run on the caller alone: below about 25 µs of work, waking and
/// waiting for another core costs more than it saves, and on a busy server the other core is
/// better left to HTTP and the database.
package enum ComputeThreads {
    package static let cores = max(1, Int(ProcessInfo.processInfo.environment["MODELGATE_COMPUTE_THREADS"] ?? "") ?? ProcessInfo.processInfo.activeProcessorCount)

    /// `work` in multiply-adds; `bytes` read from memory (a product whose weights do not fit in
    /// cache is bound by memory bandwidth, which two cores share better than one).
    static func count(forWork work: Int, bytes: Int = 0) -> Int {
        work >= 1_000_000 || bytes >= 1 << 20 ? cores : 1
    }

    /// Runs `body` for every chunk index, on the compute team (or inline for one thread).
    static func run(threads: Int, chunks: Int, _ body: @escaping @Sendable (Int) -> Void) {
        if threads <= 1 || chunks <= 1 {
            for index in 0..<chunks { body(index) }
            return
        }
        ComputeTeam.shared.run(chunks: chunks, body)
    }
}

