// The quantized panels' layout, shared by the kernels' C files (QuantizedPanels.swift
// describes it; not part of the module's interface).
#ifndef MG_LAYOUT_H
#define MG_LAYOUT_H

/// Panel element kinds: float32, bfloat16, and the quantized formats (PackedMatrix.Format's
/// kernelKind; QuantizedPanels.swift describes their layouts).
enum { F32 = 0, BF16 = 1, Q8_0 = 2, Q4_0 = 3, Q4_1 = 4, Q5_0 = 5, Q5_1 = 6, Q6_K = 7, Q2_K = 8, Q4_K = 9, Q5_K = 10 };

/// A quantized kind's groups: rows per group, bits per level, the bias stored with the levels
/// (bytes plus 128: unsigned; Q4_0's nibbles plus 8, Q5_0's plus 16), whether each column has an offset after its scale, and whether scales and offsets
/// are float16 (as the ggml type stores them) or float32 (the K-quants' products).
static inline __attribute__((always_inline)) int group_rows(int kind) { return kind == Q6_K || kind == Q2_K ? 16 : 32; }
static inline __attribute__((always_inline)) int level_bits(int kind) {
    return kind == Q4_0 || kind == Q4_1 || kind == Q4_K ? 4 : kind == Q5_0 || kind == Q5_1 || kind == Q5_K ? 5 : 8;
}
static inline __attribute__((always_inline)) int level_bias(int kind) {
    return level_bits(kind) == 8 ? 128 : kind == Q4_0 ? 8 : kind == Q5_0 ? 16 : 0;
}
static inline __attribute__((always_inline)) int has_offsets(int kind) {
    return kind == Q4_1 || kind == Q5_1 || kind == Q2_K || kind == Q4_K || kind == Q5_K;
}
static inline __attribute__((always_inline)) int half_scales(int kind) { return kind <= Q5_1; }
static inline __attribute__((always_inline)) long scale_bytes(int kind) { return half_scales(kind) ? 32 : 64; }
static inline __attribute__((always_inline)) long header_bytes(int kind) { return has_offsets(kind) ? 2 * scale_bytes(kind) : scale_bytes(kind); }

/// Bytes of levels a K row: bytes 16, nibbles 8, and 2 more for a word of fifth bits.
static inline __attribute__((always_inline)) long level_row_bytes(int kind) { return level_bits(kind) == 8 ? 16 : level_bits(kind) == 4 ? 8 : 10; }
static inline __attribute__((always_inline)) long group_bytes(int kind) { return header_bytes(kind) + group_rows(kind) * level_row_bytes(kind); }

/// Where a group's 4-row chunk holding row i lies: bytes (i / 4) * 64 of its levels; nibbles
/// ((i % 16) / 4) * 64, rows 16 ... 31 in the high halves.
static inline __attribute__((always_inline)) const char *level_chunk(const char *levels, int kind, int i) {
    return levels + (long)((level_bits(kind) == 8 ? i : i % 16) / 4) * 64;
}

/// A 5-bit group's fifth bits, after the nibbles: a 64-bit mask per chunk t and half (rows
/// 4t ... 4t + 3 low, 16 + 4t ... high), whose bit 4j + r is the fifth bit of row r of the
/// four, column j: the order of the chunk's bytes.
static inline __attribute__((always_inline)) unsigned long long fifth_mask(const char *levels, int t, int high) {
    unsigned long long mask;
    __builtin_memcpy(&mask, levels + 256 + 8 * (2 * t + high), 8);
    return mask;
}

/// Bytes of one row of a panel.
static inline __attribute__((always_inline)) long row_bytes(int kind) {
    return kind == F32 ? 64 : kind == BF16 ? 32 : group_bytes(kind) / group_rows(kind);
}

#endif
