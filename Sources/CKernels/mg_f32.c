#include "mg_f32.h"
#include "mg_cpu.h"
#include "mg_layout.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define MG_TARGET __attribute__((target("avx512f")))

MG_CPU_FEATURE(mg_f32_available, __builtin_cpu_supports("avx512f"))

/// 16 scales or offsets as floats (float16 widened exactly).
static inline __attribute__((always_inline)) MG_TARGET __m512 sixteen(const char *at, int kind) {
    return half_scales(kind) ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)at)) : _mm512_loadu_ps((const float *)at);
}

/// A quantized group's 16 scales and offsets, loaded once for its rows.
typedef struct { __m512 scale, offset; } group_scales;

static inline __attribute__((always_inline)) MG_TARGET group_scales load_scales(const void *w, int kind, int i) {
    const char *group = (const char *)w + (long)(i / group_rows(kind)) * group_bytes(kind);
    group_scales s;
    s.scale = sixteen(group, kind);
    s.offset = has_offsets(kind) ? sixteen(group + scale_bytes(kind), kind) : _mm512_setzero_ps();
    return s;
}

/// Row i of a quantized panel as 16 floats, its group's scales given: the levels (in the
/// group's 4-row chunks, column c's 4 rows in 32-bit word c: bytes, or nibbles with a word of
/// fifth bits a row after the chunks for 5-bit kinds, less the stored bias) times their
/// columns' scales, plus their offsets: two roundings at most, as the dequantized weight has.
static inline __attribute__((always_inline)) MG_TARGET __m512 quantized_row(const void *w, int kind, int i, group_scales s) {
    const char *group = (const char *)w + (long)(i / group_rows(kind)) * group_bytes(kind);
    const char *levels = group + header_bytes(kind);
    int row = i % group_rows(kind);
    __m512i chunk = _mm512_loadu_si512((const void *)level_chunk(levels, kind, row));
    int shift = 8 * (row % 4) + (level_bits(kind) != 8 && row >= 16 ? 4 : 0);
    __m512i q = _mm512_and_si512(_mm512_srl_epi32(chunk, _mm_cvtsi32_si128(shift)), _mm512_set1_epi32(level_bits(kind) == 8 ? 255 : 15));
    if (level_bits(kind) == 5) {
        unsigned long long mask = fifth_mask(levels, (row % 16) / 4, row >= 16);
        int low = (int)(unsigned)mask, high = (int)(unsigned)(mask >> 32), r = row % 4;
        __m512i words = _mm512_setr_epi32(low, low, low, low, low, low, low, low, high, high, high, high, high, high, high, high);
        const __m512i lanes = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
        __m512i fifth = _mm512_and_si512(_mm512_srlv_epi32(words, _mm512_add_epi32(lanes, _mm512_set1_epi32(r))), _mm512_set1_epi32(1));
        q = _mm512_or_si512(q, _mm512_slli_epi32(fifth, 4));
    }
    if (level_bias(kind)) q = _mm512_sub_epi32(q, _mm512_set1_epi32(level_bias(kind)));
    __m512 weight = _mm512_mul_ps(_mm512_cvtepi32_ps(q), s.scale);
    if (has_offsets(kind)) weight = _mm512_add_ps(weight, s.offset);
    return weight;
}

/// Loads row i of a panel as 16 floats: f32 as is, bf16 widened (columns in the order 0, 8, 1,
/// 9, ...), a quantized kind's dequantized weights.
static inline __attribute__((always_inline)) MG_TARGET __m512 panel_row(const void *w, int kind, int i) {
    if (kind >= Q8_0) return quantized_row(w, kind, i, load_scales(w, kind, i));
    if (kind == BF16) {
        __m512i words = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const unsigned short *)w + (long)i * 16)));
        return _mm512_castsi512_ps(_mm512_slli_epi32(words, 16));
    }
    return _mm512_loadu_ps((const float *)w + (long)i * 16);
}

/// `rows` (1 ... 16) rows against the panel slice: one accumulator a row, the panel row loaded
/// once for all of them, each x broadcast into its multiply-add from the one line of packed X
/// that holds step i's 16 rows. The panel is read front to back; the lines 24 rows ahead (48
/// for bf16: the same bytes) are fetched meanwhile (the next panel follows the last row in
/// memory). Measured on the packed probe, streamed m 16: 12 rows ahead 151-152 GFLOP/s, 24
/// 168-178, 48 162.
///
/// `bf16`: the panel holds bfloat16 (PackedMatrix's layout: 32-bit word j of a row is column j in
/// its low half and column j + 8 in its high half); each row widens to floats in one register
/// with columns in the order 0, 8, 1, 9, ..., which the stores put back in order.
static inline __attribute__((always_inline)) MG_TARGET void block(
    const void *w, int kind, int k, const float *x, int rows, float *y, long ldy, int count, const float *bias,
    int accumulate) {
    __m512 sum[16];
    for (int r = 0; r < 16; r++) sum[r] = _mm512_setzero_ps();
    const int ahead = kind == F32 ? 24 : kind == BF16 ? 48 : (int)(1536 / row_bytes(kind));
    group_scales scales = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int i = 0; i < k; i++) {
        _mm_prefetch((const char *)w + (long)(i + ahead) * row_bytes(kind), _MM_HINT_T0);
        // A quantized group's scales once for its rows (the slice starts on a group).
        if (kind >= Q8_0 && i % group_rows(kind) == 0) scales = load_scales(w, kind, i);
        __m512 row = kind >= Q8_0 ? quantized_row(w, kind, i, scales) : panel_row(w, kind, i);
        for (int r = 0; r < 16; r++)
            if (r < rows) sum[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[(long)i * 16 + r]), row, sum[r]);
    }
    if (kind == BF16) {
        const __m512i order = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
        for (int r = 0; r < 16; r++)
            if (r < rows) sum[r] = _mm512_permutexvar_ps(order, sum[r]);
    }
    __mmask16 mask = count >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << count) - 1);
    __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias) : _mm512_setzero_ps();
    for (int r = 0; r < 16; r++) {
        if (r >= rows) continue;
        __m512 value = sum[r];
        if (bias) value = _mm512_add_ps(value, b);
        if (accumulate) value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, y + r * ldy));
        _mm512_mask_storeu_ps(y + r * ldy, mask, value);
    }
}

MG_TARGET void mg_f32_pack_rows(const float *x, long ldx, int m, int k, float *out) {
    int blocks = (m + 15) / 16;
    for (int b = 0; b < blocks; b++) {
        float *target = out + (long)b * k * 16;
        int rows = m - 16 * b < 16 ? m - 16 * b : 16;
        for (int i = 0; i < k; i++) {
            for (int r = 0; r < 16; r++) target[(long)i * 16 + r] = r < rows ? x[(long)(16 * b + r) * ldx + i] : 0;
        }
    }
}

/// `rows` (1 ... 8) rows, from `first` among the 16 of packed X, against two adjacent panels at
/// once: two panel rows loaded for 16 multiply-adds, where `block` loads one for each 16 rows'
/// broadcasts, so that the load ports (a broadcast is a load) keep the FMA units busy. Each
/// column's sum is still one chain in i order.
static inline __attribute__((always_inline)) MG_TARGET void block_pair(
    const void *w, const void *w2, int kind, int k, const float *x, int first, int rows, float *y, long ldy, int count,
    const float *bias, int accumulate) {
    __m512 a[8], b[8];
    for (int r = 0; r < 8; r++) a[r] = b[r] = _mm512_setzero_ps();
    const int ahead = kind == F32 ? 24 : kind == BF16 ? 48 : (int)(1536 / row_bytes(kind));
    group_scales scales = {_mm512_setzero_ps(), _mm512_setzero_ps()}, scales2 = scales;
    for (int i = 0; i < k; i++) {
        _mm_prefetch((const char *)w + (long)(i + ahead) * row_bytes(kind), _MM_HINT_T0);
        _mm_prefetch((const char *)w2 + (long)(i + ahead) * row_bytes(kind), _MM_HINT_T0);
        if (kind >= Q8_0 && i % group_rows(kind) == 0) {
            scales = load_scales(w, kind, i);
            scales2 = load_scales(w2, kind, i);
        }
        __m512 row = kind >= Q8_0 ? quantized_row(w, kind, i, scales) : panel_row(w, kind, i);
        __m512 row2 = kind >= Q8_0 ? quantized_row(w2, kind, i, scales2) : panel_row(w2, kind, i);
        for (int r = 0; r < 8; r++) {
            if (r >= rows) continue;
            __m512 s = _mm512_set1_ps(x[(long)i * 16 + first + r]);
            a[r] = _mm512_fmadd_ps(s, row, a[r]);
            b[r] = _mm512_fmadd_ps(s, row2, b[r]);
        }
    }
    const __m512i order = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    __mmask16 mask2 = count >= 32 ? (__mmask16)0xffff : (__mmask16)((1u << (count - 16)) - 1);
    __m512 bias1 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
    __m512 bias2 = bias ? _mm512_maskz_loadu_ps(mask2, bias + 16) : _mm512_setzero_ps();
    for (int r = 0; r < 8; r++) {
        if (r >= rows) continue;
        __m512 first_half = kind == BF16 ? _mm512_permutexvar_ps(order, a[r]) : a[r];
        __m512 second_half = kind == BF16 ? _mm512_permutexvar_ps(order, b[r]) : b[r];
        if (bias) {
            first_half = _mm512_add_ps(first_half, bias1);
            second_half = _mm512_add_ps(second_half, bias2);
        }
        float *row_y = y + r * ldy;
        if (accumulate) {
            first_half = _mm512_add_ps(first_half, _mm512_loadu_ps(row_y));
            second_half = _mm512_add_ps(second_half, _mm512_maskz_loadu_ps(mask2, row_y + 16));
        }
        _mm512_storeu_ps(row_y, first_half);
        _mm512_mask_storeu_ps(row_y + 16, mask2, second_half);
    }
}

static inline __attribute__((always_inline)) MG_TARGET void panel_rows(
    const void *w, long panel_stride, int panels, int kind, int k, const float *packed, int k_total, int m, float *y, long ldy,
    int count, const float *bias, int accumulate) {
    const void *w2 = (const char *)w + panel_stride / 16 * row_bytes(kind);
    for (int r = 0; r < m; r += 16) {
        const float *xs = packed + (long)(r / 16) * k_total * 16;
        float *ys = y + r * ldy;
        if (panels == 2) {
            for (int first = 0; first < 16 && r + first < m; first += 8) {
                switch (m - r - first < 8 ? m - r - first : 8) {
#define PAIR(n) case n: block_pair(w, w2, kind, k, xs, first, n, ys + first * ldy, ldy, count, bias, accumulate); break;
                    PAIR(1) PAIR(2) PAIR(3) PAIR(4) PAIR(5) PAIR(6) PAIR(7) PAIR(8)
#undef PAIR
                    default: break;
                }
            }
            continue;
        }
        switch (m - r < 16 ? m - r : 16) {
#define ROWS(n) case n: block(w, kind, k, xs, n, ys, ldy, count, bias, accumulate); break;
            ROWS(1) ROWS(2) ROWS(3) ROWS(4) ROWS(5) ROWS(6) ROWS(7) ROWS(8)
            ROWS(9) ROWS(10) ROWS(11) ROWS(12) ROWS(13) ROWS(14) ROWS(15) ROWS(16)
#undef ROWS
            default: break;
        }
    }
}

MG_TARGET void mg_f32_panel_rows(
    const float *w, long panel_stride, int panels, int k, const float *packed, int k_total, int m, float *y, long ldy, int count,
    const float *bias, int accumulate) {
    panel_rows(w, panel_stride, panels, F32, k, packed, k_total, m, y, ldy, count, bias, accumulate);
}

MG_TARGET void mg_bf16_panel_rows(
    const unsigned short *w, long panel_stride, int panels, int k, const float *packed, int k_total, int m, float *y, long ldy,
    int count, const float *bias, int accumulate) {
    panel_rows(w, panel_stride, panels, BF16, k, packed, k_total, m, y, ldy, count, bias, accumulate);
}

MG_TARGET void mg_quantized_panel_rows(
    int kind, const void *w, long panel_stride, int panels, int k, const float *packed, int k_total, int m, float *y, long ldy,
    int count, const float *bias, int accumulate) {
    switch (kind) {
#define KIND(name) case name: panel_rows(w, panel_stride, panels, name, k, packed, k_total, m, y, ldy, count, bias, accumulate); break;
        KIND(Q8_0) KIND(Q4_0) KIND(Q4_1) KIND(Q5_0) KIND(Q5_1) KIND(Q6_K) KIND(Q2_K) KIND(Q4_K) KIND(Q5_K)
#undef KIND
        default: break;
    }
}

#else

int mg_f32_available(void) { return 0; }
void mg_f32_pack_rows(const float *x, long ldx, int m, int k, float *out) {}
void mg_f32_panel_rows(
    const float *w, long panel_stride, int panels, int k, const float *packed, int k_total, int m, float *y, long ldy, int count,
    const float *bias, int accumulate) {}
void mg_bf16_panel_rows(
    const unsigned short *w, long panel_stride, int panels, int k, const float *packed, int k_total, int m, float *y, long ldy,
    int count, const float *bias, int accumulate) {}
void mg_quantized_panel_rows(
    int kind, const void *w, long panel_stride, int panels, int k, const float *packed, int k_total, int m, float *y, long ldy,
    int count, const float *bias, int accumulate) {}

#endif
