import Foundation

/// How a quantized format stores a panel (16 columns): for each group of `groupRows` K rows,
/// the 16 columns' scales, their offsets where the format has them (float16 where the ggml
/// type stores them so, as Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 do: then a panel takes the file's
/// bytes; float32 where they are products, as the K-quants' are), then the group's integer
/// levels in chunks of 4 K rows x 16 columns, 64 bytes, column j's 4 rows in 32-bit word j (the
/// operand layout of AVX-512 VNNI's byte dot products): bytes (8 bits: chunk i / 4, byte
/// 4j + i % 4), or nibbles (4 bits: rows i and i + 16 share a byte, low and high half, in
/// chunk (i % 16) / 4), or nibbles and then their fifth bits (5 bits: `fifthMask`). A level
/// is stored plus `bias` (a byte plus 128: unsigned), which the kernels take off again. A
/// weight is scale x level rounded, then plus the offset rounded: the very float gguf-py's
/// `dequantize` gives for the ggml blocks it came from.
struct Quantization: Equatable {
    let groupRows: Int
    let bits: Int
    let bias: Int
    let offsets: Bool
    let halfScales: Bool

    /// Bytes of the 16 scales (and of the 16 offsets after them).
    var scaleBytes: Int { halfScales ? 32 : 64 }
    var headerBytes: Int { offsets ? 2 * scaleBytes : scaleBytes }
    var levelRowBytes: Int { bits == 8 ? 16 : bits == 4 ? 8 : 10 }
    var groupBytes: Int { headerBytes + groupRows * levelRowBytes }

    /// Where level (row i of its group, column j) lies in the group's levels: its byte, and
    /// the shift of its bits there.
    @inline(__always)
    func position(row i: Int, column j: Int) -> (byte: Int, shift: Int) {
        bits == 8 ? ((i / 4) * 64 + 4 * j + i % 4, 0) : (((i % 16) / 4) * 64 + 4 * j + i % 4, i >= 16 ? 4 : 0)
    }

    /// Where a 5-bit level's fifth bit lies after the nibbles: one 64-bit mask per nibble chunk
    /// and half (rows 0 ... 15 low, 16 ... 31 high), at 256 + 8 (2 chunk + half), whose bit
    /// 4j + i % 4 is column j's: the order of the chunk's bytes.
    @inline(__always)
    static func fifthMask(row i: Int) -> Int { 256 + 8 * (2 * ((i % 16) / 4) + (i >= 16 ? 1 : 0)) }
}

extension PackedMatrix.Format {
    /// The panel layout of a quantized format; nil for f32 and bf16.
    var quantization: Quantization? {
        switch self {
        case .f32, .bf16: nil
        case .q8_0: Q8_0.layout
        case .q4_0: Q4_0.layout
        case .q4_1: Q4_1.layout
        case .q4_k: Q4_K.layout
        case .q5_0: Q5_0.layout
        case .q5_1: Q5_1.layout
        case .q5_k: Q5_K.layout
        case .q6_k: Q6_K.layout
        case .q2_k: Q2_K.layout
        }
    }

    /// The format that holds ggml type `type`'s blocks exactly (several types share one: their
    /// groups are the same shape), or nil.
    init?(ggmlType type: UInt32) {
        switch type {
        case 8: self = .q8_0
        case 2: self = .q4_0
        case 3: self = .q4_1
        case 12: self = .q4_k
        case 6: self = .q5_0
        case 7: self = .q5_1
        case 13: self = .q5_k
        case 11, 14: self = .q6_k  // Q3_K, Q6_K
        case 10: self = .q2_k
        default: return nil
        }
    }

    /// The kernels' number for the format (mg_f32.c's kinds).
    var kernelKind: Int32 {
        switch self {
        case .f32: 0
        case .bf16: 1
        case .q8_0: 2
        case .q4_0: 3
        case .q4_1: 4
        case .q5_0: 5
        case .q5_1: 6
        case .q6_k: 7
        case .q2_k: 8
        case .q4_k: 9
        case .q5_k: 10
        }
    }
}

/// A quantized format's layout, for the Swift blocks' generic row loads.
protocol QuantizedLayout {
    static var layout: Quantization { get }
}

enum Q8_0: QuantizedLayout { static let layout = Quantization(groupRows: 32, bits: 8, bias: 128, offsets: false, halfScales: true) }
enum Q4_0: QuantizedLayout { static let layout = Quantization(groupRows: 32, bits: 4, bias: 8, offsets: false, halfScales: true) }
enum Q4_1: QuantizedLayout { static let layout = Quantization(groupRows: 32, bits: 4, bias: 0, offsets: true, halfScales: true) }
enum Q4_K: QuantizedLayout { static let layout = Quantization(groupRows: 32, bits: 4, bias: 0, offsets: true, halfScales: false) }
enum Q5_0: QuantizedLayout { static let layout = Quantization(groupRows: 32, bits: 5, bias: 16, offsets: false, halfScales: true) }
enum Q5_1: QuantizedLayout { static let layout = Quantization(groupRows: 32, bits: 5, bias: 0, offsets: true, halfScales: true) }
enum Q5_K: QuantizedLayout { static let layout = Quantization(groupRows: 32, bits: 5, bias: 0, offsets: true, halfScales: false) }
enum Q6_K: QuantizedLayout { static let layout = Quantization(groupRows: 16, bits: 8, bias: 128, offsets: false, halfScales: false) }
enum Q2_K: QuantizedLayout { static let layout = Quantization(groupRows: 16, bits: 8, bias: 128, offsets: true, halfScales: false) }

/// One K row of a quantized panel as floats, for the Swift blocks: the same operations as
/// mg_f32.c's `panel_row`.
enum QuantizedPanel<Layout: QuantizedLayout>: PanelElement {
    static var rowBytes: Int { Layout.layout.groupBytes / Layout.layout.groupRows }

    @inline(__always)
    static func row(_ panel: UnsafeRawPointer, _ k: Int) -> (SIMD8<Float>, SIMD8<Float>) {
        let q = Layout.layout
        let group = panel + (k / q.groupRows) * q.groupBytes
        let levels = group + q.headerBytes, i = k % q.groupRows
        // Column j's 4 rows are word j of the chunk (position(row:column: 0) less i % 4).
        let at = q.position(row: i, column: 0)
        let words = levels.loadUnaligned(fromByteOffset: at.byte - i % 4, as: SIMD16<UInt32>.self) &>> UInt32(8 * (i % 4) + at.shift)
        var level = SIMD16<Int32>(truncatingIfNeeded: words & SIMD16(repeating: q.bits == 8 ? 255 : 15))
        if q.bits == 5 {
            let mask = UInt64(littleEndian: levels.loadUnaligned(fromByteOffset: Quantization.fifthMask(row: i), as: UInt64.self))
            let (low, high) = (UInt32(truncatingIfNeeded: mask), UInt32(truncatingIfNeeded: mask >> 32))
            let words = SIMD16<UInt32>(lowHalf: SIMD8(repeating: low), highHalf: SIMD8(repeating: high))
            let bits = (words &>> (SIMD16(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28) &+ UInt32(i % 4))) & 1
            level |= SIMD16<Int32>(truncatingIfNeeded: bits) &<< 4
        }
        level &-= SIMD16(repeating: Int32(q.bias))
        let low = level.lowHalf, high = level.highHalf
        let scales = Self.sixteen(group, q)
        var first = scales.0 * SIMD8<Float>(low), second = scales.1 * SIMD8<Float>(high)
        if q.offsets {
            let offsets = Self.sixteen(group + q.scaleBytes, q)
            first += offsets.0
            second += offsets.1
        }
        return (first, second)
    }

    /// 16 scales (or offsets) as floats, widened exactly where they are float16.
    @inline(__always)
    static func sixteen(_ at: UnsafeRawPointer, _ q: Quantization) -> (SIMD8<Float>, SIMD8<Float>) {
        if q.halfScales {
            let halves = at.loadUnaligned(as: SIMD16<Float16>.self)
            return (SIMD8<Float>(halves.lowHalf), SIMD8<Float>(halves.highHalf))
        }
        return (at.loadUnaligned(as: SIMD8<Float>.self), at.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self))
    }
}

extension PackedMatrix {
    /// Where column `j` of `panel`'s group `group` starts (its scale).
    private func groupBase(panel: Int, group: Int, _ q: Quantization) -> UnsafeMutableRawPointer {
        storage + (panel * (rows / q.groupRows) + group) * q.groupBytes
    }

    /// Stores one column's group: its scale, its offset, its levels.
    func storeGroup(panel: Int, group: Int, column j: Int, scale: Float, offset: Float?, level: (Int) -> Int) {
        guard let q = format.quantization else { return }
        let base = groupBase(panel: panel, group: group, q)
        func store(_ value: Float, at: Int) {
            // A half-scale format's scales and offsets came from float16: exact again.
            if q.halfScales { base.storeBytes(of: Float16(value), toByteOffset: at + 2 * j, as: Float16.self) } else { base.storeBytes(of: value, toByteOffset: at + 4 * j, as: Float.self) }
        }
        store(scale, at: 0)
        if q.offsets { store(offset ?? 0, at: q.scaleBytes) }
        let levels = base + q.headerBytes
        for i in 0..<q.groupRows {
            let stored = UInt8(truncatingIfNeeded: level(i) + q.bias)
            let (byte, shift) = q.position(row: i, column: j)
            let mask: UInt8 = q.bits == 8 ? 255 : 15
            levels.storeBytes(of: levels.load(fromByteOffset: byte, as: UInt8.self) | (stored & mask) << shift, toByteOffset: byte, as: UInt8.self)
            if q.bits == 5 {
                let at = Quantization.fifthMask(row: i), mask = levels.loadUnaligned(fromByteOffset: at, as: UInt64.self)
                levels.storeBytes(of: mask | UInt64((stored >> 4) & 1) << UInt64(4 * j + i % 4), toByteOffset: at, as: UInt64.self)
            }
        }
    }

    /// `W[k, n]` of a quantized matrix: scale x level, plus the offset where there is one.
    func quantizedElement(row k: Int, column n: Int, _ q: Quantization) -> Float {
        let base = groupBase(panel: n / Self.panelWidth, group: k / q.groupRows, q)
        let j = n % Self.panelWidth
        let levels = base + q.headerBytes, i = k % q.groupRows
        let (byte, shift) = q.position(row: i, column: j)
        var level = Int(levels.load(fromByteOffset: byte, as: UInt8.self) >> shift) & (q.bits == 8 ? 255 : 15)
        if q.bits == 5 { level |= Int((levels.loadUnaligned(fromByteOffset: Quantization.fifthMask(row: i), as: UInt64.self) >> UInt64(4 * j + i % 4)) & 1) << 4 }
        level -= q.bias
        func load(_ at: Int) -> Float {
            q.halfScales ? Float(base.load(fromByteOffset: at + 2 * j, as: Float16.self)) : base.load(fromByteOffset: at + 4 * j, as: Float.self)
        }
        let value = load(0) * Float(level)
        return q.offsets ? value + load(q.scaleBytes) : value
    }

    /// A matrix from ggml blocks as GGUF stores them, without widening: `column(n)` is output
    /// n's type and where its K values' blocks lie. Every type must have `format`'s groups.
    convenience init(ggml column: (Int) -> (type: UInt32, blocks: UnsafeRawPointer), rows: Int, columns: Int, format: Format) {
        self.init(rows: rows, columns: columns, format: format)
        guard let q = format.quantization else { preconditionFailure("PackedMatrix(ggml:): \(format) is not quantized") }
        for n in 0..<columns {
            let (type, blocks) = column(n)
            guard let layout = GGMLQuants.types[type] else { preconditionFailure("PackedMatrix(ggml:): type \(type)") }
            for block in 0..<rows / layout.elements {
                GGMLQuants.groups(type, blocks + block * layout.bytes) { index, size, scale, offset, level in
                    precondition(size == q.groupRows, "PackedMatrix(ggml:): groups of \(size) in a format of \(q.groupRows)")
                    self.storeGroup(
                        panel: n / Self.panelWidth, group: (block * layout.elements) / size + index, column: n % Self.panelWidth,
                        scale: scale, offset: offset, level: level)
                }
            }
        }
    }

    /// Quantizes `source` (`[K, N]`, or `[N, K]` when `transposed`) at load, as llama.cpp's
    /// reference quantizers do (Q8_0 or Q4_0).
    func quantize(_ source: UnsafePointer<Float>, transposed: Bool) {
        guard let q = format.quantization else { return }
        let groups = rows / q.groupRows
        nonisolated(unsafe) let source = source
        let (rows, columns, format) = (self.rows, self.columns, self.format)
        ComputeThreads.run(threads: panels > 64 ? ComputeThreads.cores : 1, chunks: panels) { panel in
            var values = [Float](repeating: 0, count: q.groupRows)
            for j in 0..<min(Self.panelWidth, columns - panel * Self.panelWidth) {
                let n = panel * Self.panelWidth + j
                for group in 0..<groups {
                    for i in 0..<q.groupRows {
                        let k = group * q.groupRows + i
                        values[i] = transposed ? source[n * rows + k] : source[k * columns + n]
                    }
                    let (scale, levels) = format == .q4_0 ? Self.quantizeQ4_0(values) : Self.quantizeQ8_0(values)
                    self.storeGroup(panel: panel, group: group, column: j, scale: scale, offset: nil) { levels[$0] }
                }
            }
        }
    }

    /// ggml's `quantize_row_q8_0_ref`: the scale is the largest magnitude over 127, rounded to
    /// float16 as stored; each value times the float32 scale's reciprocal, rounded half away from zero.
    static func quantizeQ8_0(_ values: [Float]) -> (scale: Float, levels: [Int]) {
        let largest = values.reduce(Float(0)) { max($0, abs($1)) }
        let d = largest / 127
        let inverse: Float = d != 0 ? 1 / d : 0
        return (Float(Float16(d)), values.map { level(($0 * inverse).rounded(.toNearestOrAwayFromZero)) })
    }

    /// ggml's `quantize_row_q4_0_ref`: the scale is the value of largest magnitude (the first
    /// such) over -8, rounded to float16; each value times the float32 scale's reciprocal, plus
    /// 8.5, truncated, at most 15, less 8.
    static func quantizeQ4_0(_ values: [Float]) -> (scale: Float, levels: [Int]) {
        var largest: Float = 0, extreme: Float = 0
        for value in values where largest < abs(value) {
            largest = abs(value)
            extreme = value
        }
        let d = extreme / -8
        let inverse: Float = d != 0 ? 1 / d : 0
        return (Float(Float16(d)), values.map { min(15, level(($0 * inverse + 8.5).rounded(.towardZero))) - 8 })
    }

    /// A whole number as a level; a weight that is not finite (a corrupt file) gives 0, not a trap.
    private static func level(_ value: Float) -> Int { value.isFinite ? Int(max(-128, min(127, value))) : 0 }
}
