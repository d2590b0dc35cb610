#include "mg_bf16.h"
#include "mg_cpu.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define MG_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

MG_CPU_FEATURE(mg_bf16_available, __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw"))

/// float32 -> bfloat16, rounding to nearest even (as VCVTNE2PS2BF16 does; NaN stays NaN).
static inline uint32_t bf16_bits(float value) {
    union { float f; uint32_t u; } v = { value };
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;
    return (v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16;
}

MG_TARGET void mg_bf16_pack_rows(const float *x, long ldx, int m, int k, uint32_t *pairs) {
    const int k_pairs = (k + 1) / 2;
    const int blocks = (m + MG_BF16_BLOCK - 1) / MG_BF16_BLOCK;
    for (int r = m; r < blocks * MG_BF16_BLOCK; r++) {  // padding rows: zeros
        for (int p = 0; p < k_pairs; p++) pairs[((long)(r / MG_BF16_BLOCK) * k_pairs + p) * MG_BF16_BLOCK + r % MG_BF16_BLOCK] = 0;
    }
    uint32_t converted[16];
    for (int r = 0; r < m; r++) {
        const float *row = x + (long)r * ldx;
        uint32_t *out = pairs + (long)(r / MG_BF16_BLOCK) * k_pairs * MG_BF16_BLOCK + r % MG_BF16_BLOCK;
        int i = 0;
        for (; i + 32 <= k; i += 32) {
            // Lower half from the second operand: x[i ..< i + 16], then x[i + 16 ..< i + 32].
            __m512bh packed = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + i + 16), _mm512_loadu_ps(row + i));
            _mm512_storeu_si512((void *)converted, (__m512i)packed);
            for (int j = 0; j < 16; j++) out[(long)(i / 2 + j) * MG_BF16_BLOCK] = converted[j];
        }
        for (; i < k; i += 2) {
            uint32_t low = bf16_bits(row[i]);
            uint32_t high = i + 1 < k ? bf16_bits(row[i + 1]) : 0;
            out[(long)(i / 2) * MG_BF16_BLOCK] = low | high << 16;
        }
    }
}

MG_TARGET void mg_bf16_pair_panels(const uint16_t *first, const uint16_t *second, int k, uint32_t *out) {
    // Row k's 16 halves hold columns 0, 8, 1, 9, ... 7, 15; row k + 1's follow at 16.
    // Output half 2c is row k's column c, half 2c + 1 row k + 1's.
    static const uint16_t order[32] = {
        0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30,
        1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31,
    };
    const __m512i index = _mm512_loadu_si512((const void *)order);
    for (int half = 0; half < 2; half++) {
        const uint16_t *panel = half == 0 ? first : second;
        uint32_t *target = out + half * 16;
        int row = 0;
        if (!panel) {
            for (; row < k; row += 2) _mm512_storeu_si512((void *)(target + (long)(row / 2) * 32), _mm512_setzero_si512());
            continue;
        }
        for (; row + 2 <= k; row += 2) {
            __m512i both = _mm512_loadu_si512((const void *)(panel + (long)row * 16));
            _mm512_storeu_si512((void *)(target + (long)(row / 2) * 32), _mm512_permutexvar_epi16(index, both));
        }
        if (row < k) {
            __m512i last = _mm512_zextsi256_si512(_mm256_loadu_si256((const void *)(panel + (long)row * 16)));
            _mm512_storeu_si512((void *)(target + (long)(row / 2) * 32), _mm512_permutexvar_epi16(index, last));
        }
    }
}

static inline MG_TARGET void store_row(__m512 sum, float *y, int count, const float *bias, int accumulate) {
    if (count <= 0) return;
    __mmask16 mask = count >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << count) - 1);
    if (bias) sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask, bias));
    if (accumulate) sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask, y));
    _mm512_mask_storeu_ps(y, mask, sum);
}

/// `rows` (1 ... 8) rows against a pair of panels: two accumulators per row, the pair's two
/// panel rows loaded once for all of them, each row's pair of X broadcast from its block
/// (consecutive words). Measured on one core, weights in L1: 8 x 32 columns 225-233 GFLOP/s,
/// 12 x 16 (more broadcasts per product) 165-170.
static inline __attribute__((always_inline)) MG_TARGET void block(
    const uint32_t *pairs, int rows, const uint32_t *panels, int k_pairs, float *y, long ldy, int count, const float *bias,
    int accumulate, const char *next) {
    __m512 low[MG_BF16_BLOCK], high[MG_BF16_BLOCK];
    for (int r = 0; r < MG_BF16_BLOCK; r++) low[r] = high[r] = _mm512_setzero_ps();
    for (int p = 0; p < k_pairs; p++) {
        if (next) {
            _mm_prefetch(next + (long)p * 128, _MM_HINT_T1);
            _mm_prefetch(next + (long)p * 128 + 64, _MM_HINT_T1);
        }
        __m512bh w0 = (__m512bh)_mm512_loadu_si512((const void *)(panels + (long)p * 32));
        __m512bh w1 = (__m512bh)_mm512_loadu_si512((const void *)(panels + (long)p * 32 + 16));
        const uint32_t *x = pairs + (long)p * MG_BF16_BLOCK;
        for (int r = 0; r < MG_BF16_BLOCK; r++) {
            if (r < rows) {
                __m512bh s = (__m512bh)_mm512_set1_epi32((int)x[r]);
                low[r] = _mm512_dpbf16_ps(low[r], s, w0);
                high[r] = _mm512_dpbf16_ps(high[r], s, w1);
            }
        }
    }
    for (int r = 0; r < MG_BF16_BLOCK; r++) {
        if (r < rows) {
            store_row(low[r], y + r * ldy, count, bias, accumulate);
            store_row(high[r], y + r * ldy + 16, count - 16, bias ? bias + 16 : 0, accumulate);
        }
    }
}

MG_TARGET void mg_bf16_panels_product(
    const uint32_t *pairs, int m, const uint32_t *panels, int k_pairs, float *y, long ldy, int count, const float *bias,
    int accumulate, const void *next) {
    // The first block fetches `next` (the next two panels to re-lay, 2 k_pairs lines) into L2
    // while it works: re-laying then reads from cache instead of waiting on memory.
    int r = 0;
    for (; r + MG_BF16_BLOCK <= m; r += MG_BF16_BLOCK) {
        block(pairs + (long)r * k_pairs, MG_BF16_BLOCK, panels, k_pairs, y + r * ldy, ldy, count, bias, accumulate, r == 0 ? next : 0);
    }
    const char *ahead = r == 0 ? next : 0;
    const uint32_t *rest = pairs + (long)r * k_pairs;
    switch (m - r) {
#define TAIL(n) case n: block(rest, n, panels, k_pairs, y + r * ldy, ldy, count, bias, accumulate, ahead); break;
        TAIL(1) TAIL(2) TAIL(3) TAIL(4) TAIL(5) TAIL(6) TAIL(7)
#undef TAIL
        default: break;
    }
}

#else

int mg_bf16_available(void) { return 0; }
void mg_bf16_pack_rows(const float *x, long ldx, int m, int k, uint32_t *pairs) {}
void mg_bf16_pair_panels(const uint16_t *first, const uint16_t *second, int k, uint32_t *out) {}
void mg_bf16_panels_product(
    const uint32_t *pairs, int m, const uint32_t *panels, int k_pairs, float *y, long ldy, int count, const float *bias,
    int accumulate, const void *next) {}

#endif
