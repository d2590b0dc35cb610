import Foundation

/// ggml's quantized block formats (llama.cpp's `ggml-common.h` layouts), as groups of integer
/// levels with a float32 scale and, for some formats, an offset, and read back as float32.
/// Each value is computed with the same float32 operations, in the same order, as gguf-py's
/// `quants.py` `dequantize_blocks` (a scale widened from float16, or its product with a
/// sub-block's scale, times the integer, then minus or plus the minimum where the format has
/// one), so that every value is the very float gguf-py gives: the tests compare them bit for bit.
enum GGMLQuants {
    /// ggml's type numbers of the formats read here (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K ... Q6_K),
    /// with their block sizes as GGUFFile knows them.
    static let types: [UInt32: (elements: Int, bytes: Int)] = GGUFFile.typeLayouts
        .filter { [2, 3, 6, 7, 8, 10, 11, 12, 13, 14].contains($0.key) }
        .mapValues { ($0.blockElements, $0.blockBytes) }

    static func supports(_ type: UInt32) -> Bool { types[type] != nil }

    /// One group of a block: `size` consecutive values, each `scale` x level, rounded, then
    /// plus `offset` (rounded again) where the format has one. Every format above is such
    /// groups (of 32 values, or 16 for Q2_K, Q3_K and Q6_K); `level(i)` is value i's integer.
    typealias Group = (_ index: Int, _ size: Int, _ scale: Float, _ offset: Float?, _ level: (Int) -> Int) -> Void

    /// The groups of one block of `type` at `b`, in order.
    static func groups(_ type: UInt32, _ b: UnsafeRawPointer, _ group: Group) {
        switch type {
        case 2: q4_0(b, group)
        case 3: q4_1(b, group)
        case 6: q5_0(b, group)
        case 7: q5_1(b, group)
        case 8: q8_0(b, group)
        case 10: q2_K(b, group)
        case 11: q3_K(b, group)
        case 12: q4_K(b, group, fifthBits: false)
        case 13: q4_K(b, group, fifthBits: true)
        default: q6_K(b, group)
        }
    }

    /// `count` values (whole blocks) of `type` from `source` into `target`, spread over the
    /// compute threads for large tensors.
    static func dequantize(_ type: UInt32, _ source: UnsafeRawPointer, count: Int, into target: UnsafeMutablePointer<Float>) {
        guard let layout = types[type] else { preconditionFailure("GGMLQuants.dequantize: unsupported type \(type)") }
        let blocks = count / layout.elements
        let perChunk = 4096
        let chunks = (blocks + perChunk - 1) / perChunk
        nonisolated(unsafe) let (source, target) = (source, target)
        ComputeThreads.run(threads: chunks > 1 ? ComputeThreads.cores : 1, chunks: chunks) { chunk in
            for block in (chunk * perChunk)..<min(blocks, (chunk + 1) * perChunk) {
                let y = target + block * layout.elements
                groups(type, source + block * layout.bytes) { index, size, scale, offset, level in
                    let values = y + index * size
                    if let offset {
                        for i in 0..<size { values[i] = scale * Float(level(i)) + offset }
                    } else {
                        for i in 0..<size { values[i] = scale * Float(level(i)) }
                    }
                }
            }
        }
    }

    @inline(__always) private static func half(_ b: UnsafeRawPointer, _ offset: Int) -> Float {
        Float(Float16(bitPattern: UInt16(littleEndian: b.loadUnaligned(fromByteOffset: offset, as: UInt16.self))))
    }

    @inline(__always) private static func byte(_ b: UnsafeRawPointer, _ offset: Int) -> Int { Int(b.load(fromByteOffset: offset, as: UInt8.self)) }

    /// Element j of a 32-element block of nibbles: the low halves of its 16 bytes, then the high.
    @inline(__always) private static func nibble(_ qs: UnsafeRawPointer, _ j: Int) -> Int { j < 16 ? byte(qs, j) & 15 : byte(qs, j - 16) >> 4 }

    // Q4_0: d, 16 bytes of nibbles; (q - 8) d.
    private static func q4_0(_ b: UnsafeRawPointer, _ group: Group) {
        group(0, 32, half(b, 0), nil) { nibble(b + 2, $0) - 8 }
    }

    // Q4_1: d, m, nibbles; d q + m.
    private static func q4_1(_ b: UnsafeRawPointer, _ group: Group) {
        group(0, 32, half(b, 0), half(b, 2)) { nibble(b + 4, $0) }
    }

    /// Q5's fifth bit of element j: bit j of the little-endian word at `qh`.
    @inline(__always) private static func fifth(_ qh: UInt32, _ j: Int) -> Int { Int((qh >> UInt32(j)) & 1) << 4 }

    // Q5_0: d, 4 bytes of fifth bits, nibbles; (q - 16) d.
    private static func q5_0(_ b: UnsafeRawPointer, _ group: Group) {
        let qh = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
        group(0, 32, half(b, 0), nil) { (nibble(b + 6, $0) | fifth(qh, $0)) - 16 }
    }

    // Q5_1: d, m, fifth bits, nibbles; d q + m.
    private static func q5_1(_ b: UnsafeRawPointer, _ group: Group) {
        let qh = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        group(0, 32, half(b, 0), half(b, 2)) { nibble(b + 8, $0) | fifth(qh, $0) }
    }

    // Q8_0: d, 32 signed bytes; q d.
    private static func q8_0(_ b: UnsafeRawPointer, _ group: Group) {
        group(0, 32, half(b, 0), nil) { Int(b.load(fromByteOffset: 2 + $0, as: Int8.self)) }
    }

    /// Q2_K's and Q3_K's 2-bit value e of a block (e = 128 h + 32 s + l: bits 2s of byte 32 h + l).
    @inline(__always) private static func crumb(_ qs: UnsafeRawPointer, _ e: Int) -> Int { (byte(qs, (e / 128) * 32 + e % 32) >> (2 * ((e % 128) / 32))) & 3 }

    // Q2_K: 16 scale bytes (low nibble scale, high nibble minimum, per 16 elements), 64 bytes of
    // 2-bit values, d, dmin; (d sc) q - (dmin m).
    private static func q2_K(_ b: UnsafeRawPointer, _ group: Group) {
        let d = half(b, 80), dmin = half(b, 82)
        for index in 0..<16 {
            let scale = byte(b, index)
            group(index, 16, d * Float(scale & 15), -(dmin * Float(scale >> 4))) { crumb(b + 16, index * 16 + $0) }
        }
    }

    // Q3_K: 32 bytes of high-bit masks (element e: bit e / 32 of byte e % 32), 64 bytes of
    // 2-bit values (laid out as Q2_K's), 12 bytes of 6-bit scales, d.
    private static func q3_K(_ b: UnsafeRawPointer, _ group: Group) {
        let d = half(b, 108)
        for index in 0..<16 {
            // Low four bits: nibble (index / 8) of byte index % 8; high two: bits 2 (index / 4)
            // of byte 8 + index % 4.
            let low = (byte(b, 96 + index % 8) >> (4 * (index / 8))) & 15
            let high = (byte(b, 104 + index % 4) >> (2 * (index / 4))) & 3
            group(index, 16, d * Float((low | high << 4) - 32), nil) { i in
                let e = index * 16 + i
                // A set mask bit means no offset; a clear one, minus 4.
                return crumb(b + 32, e) - ((byte(b, e % 32) >> (e / 32)) & 1 ^ 1) << 2
            }
        }
    }

    /// Q4_K/Q5_K's 6-bit scale and minimum of sub-block j from their 12 packed bytes.
    @inline(__always) private static func scaleMin(_ s: UnsafeRawPointer, _ j: Int) -> (Int, Int) {
        if j < 4 { return (byte(s, j) & 63, byte(s, j + 4) & 63) }
        return ((byte(s, j + 4) & 15) | ((byte(s, j - 4) >> 2) & 0x30), (byte(s, j + 4) >> 4) | ((byte(s, j) >> 2) & 0x30))
    }

    // Q4_K: d, dmin, 12 bytes of scales and minimums, 128 bytes of nibbles (sub-block 2g + s
    // is nibble s of bytes 32 g ..< 32 g + 32); (d sc) q - (dmin m). Q5_K: 32 bytes of fifth
    // bits between the scales and the nibbles (element l of sub-block j: bit j of byte l).
    private static func q4_K(_ b: UnsafeRawPointer, _ group: Group, fifthBits: Bool) {
        let d = half(b, 0), dmin = half(b, 2)
        let qs = b + (fifthBits ? 48 : 16)
        for j in 0..<8 {
            let (scale, minimum) = scaleMin(b + 4, j)
            group(j, 32, d * Float(scale), -(dmin * Float(minimum))) { l in
                let q = (byte(qs, (j / 2) * 32 + l) >> (4 * (j % 2))) & 15
                return fifthBits ? q | ((byte(b + 16, l) >> j) & 1) << 4 : q
            }
        }
    }

    // Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 signed scales, d; (d sc)(q - 32).
    // Element e = 128 h + r: low nibble (r / 64) of byte 64 h + r % 64, high bits 2 (r / 32) of
    // byte 32 h + r % 32.
    private static func q6_K(_ b: UnsafeRawPointer, _ group: Group) {
        let d = half(b, 208)
        for index in 0..<16 {
            group(index, 16, d * Float(b.load(fromByteOffset: 192 + index, as: Int8.self)), nil) { i in
                let e = index * 16 + i, h = e / 128, r = e % 128
                let low = (byte(b, h * 64 + r % 64) >> (4 * (r / 64))) & 15
                let top = (byte(b, 128 + h * 32 + r % 32) >> (2 * (r / 32))) & 3
                return (low | top << 4) - 32
            }
        }
    }
}
