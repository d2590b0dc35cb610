#include "mg_quant.h"
#include "mg_int8.h"
#include "mg_layout.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define MG_AVX2 __attribute__((target("avx2,fma,f16c")))

MG_AVX2 void mg_q8_quantize_rows(const float *x, long ldx, int m, int k, signed char *levels, float *scales, int *sums) {
    const int blocks = k / 32;
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int r = 0; r < m; r++) {
        for (int b = 0; b < blocks; b++) {
            const float *v = x + (long)r * ldx + 32 * b;
            __m256 part[4], largest = _mm256_setzero_ps(), unordered = _mm256_setzero_ps();
            for (int p = 0; p < 4; p++) {
                part[p] = _mm256_loadu_ps(v + 8 * p);
                largest = _mm256_max_ps(largest, _mm256_and_ps(part[p], magnitude));
                unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(part[p], part[p], _CMP_UNORD_Q));
            }
            float lanes[8];
            _mm256_storeu_ps(lanes, largest);
            float most = 0;
            for (int j = 0; j < 8; j++) most = lanes[j] > most ? lanes[j] : most;
            float d = _mm256_movemask_ps(unordered) ? __builtin_nanf("") : most / 127;
            float inverse = d != 0 && d <= 3.4028234e38f ? 1 / d : 0;
            signed char *out = levels + (long)r * k + 32 * b;
            int sum[2] = {0, 0};
            for (int p = 0; p < 4; p++) {
                __m256i q = inverse != 0 ? _mm256_cvtps_epi32(_mm256_mul_ps(part[p], _mm256_set1_ps(inverse))) : _mm256_setzero_si256();
                int words[8];
                _mm256_storeu_si256((__m256i *)words, q);
                for (int j = 0; j < 8; j++) {
                    int level = words[j] > 127 ? 127 : words[j] < -127 ? -127 : words[j];
                    out[8 * p + j] = (signed char)level;
                    sum[p / 2] += level;
                }
            }
            scales[(long)r * blocks + b] = d;
            sums[(long)r * 2 * blocks + 2 * b] = sum[0];
            sums[(long)r * 2 * blocks + 2 * b + 1] = sum[1];
        }
    }
}

/// 8 scales or offsets (columns 8h ..< 8h + 8) as floats, float16 widened exactly.
static inline __attribute__((always_inline)) MG_AVX2 __m256 eight(const char *at, int kind, int h) {
    return half_scales(kind) ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(at + 16 * h))) : _mm256_loadu_ps((const float *)at + 8 * h);
}

/// 32 bits as 32 bytes: 16 where the bit is set, else 0 (a 5-bit level's fifth bit, in the
/// order of a half chunk's bytes).
static inline __attribute__((always_inline)) MG_AVX2 __m256i fifth_bytes(unsigned bits) {
    const __m256i spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i select = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i x = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), spread), select);
    return _mm256_and_si256(_mm256_cmpeq_epi8(x, select), _mm256_set1_epi8(16));
}

/// `rows` (1 or 2) rows of quantized X against one panel, in two halves of 8 columns: per
/// 4-row chunk, bytes as signed levels (stored less 128) with the sign moved onto X's bytes so
/// that the byte multiply-adds see magnitudes of at most 128 x 127 (their 16-bit pair sums
/// cannot saturate), nibbles as they are stored (less the bias after the group); pairs summed
/// to 32 bits; then the group's float32 multiply-adds.
static inline __attribute__((always_inline)) MG_AVX2 void avx2_block(
    const char *w, int kind, int k, const signed char *xq, const float *xd, const int *xs, int rows, float *y, long ldy,
    int count, const float *bias, int accumulate) {
    __m256 f[2][2];
    for (int r = 0; r < 2; r++) f[r][0] = f[r][1] = _mm256_setzero_ps();
    const int per = group_rows(kind), groups = k / per, blocks = k / 32;
    const __m256i ones = _mm256_set1_epi16(1), nibble = _mm256_set1_epi8(15), flip = _mm256_set1_epi8((char)0x80);
    for (int g = 0; g < groups; g++) {
        const char *group = w + (long)g * group_bytes(kind), *levels = group + header_bytes(kind);
        __m256i sum[2][2];
        for (int r = 0; r < 2; r++) sum[r][0] = sum[r][1] = _mm256_setzero_si256();
        const signed char *xg = xq + (long)g * per;
        if (level_bits(kind) == 8) {
            for (int t = 0; t < per / 4; t++) {
                __m256i x[2];
                for (int r = 0; r < 2; r++) {
                    int bytes = 0;
                    if (r < rows) __builtin_memcpy(&bytes, xg + (long)r * k + 4 * t, 4);
                    x[r] = _mm256_set1_epi32(bytes);
                }
                for (int h = 0; h < 2; h++) {
                    __m256i level = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(levels + t * 64 + 32 * h)), flip);
                    __m256i size = _mm256_abs_epi8(level);
                    for (int r = 0; r < 2; r++) {
                        if (r >= rows) continue;
                        __m256i pairs = _mm256_maddubs_epi16(size, _mm256_sign_epi8(x[r], level));
                        sum[r][h] = _mm256_add_epi32(sum[r][h], _mm256_madd_epi16(pairs, ones));
                    }
                }
            }
        } else {
            for (int t = 0; t < 4; t++) {
                __m256i x[2], x2[2];
                for (int r = 0; r < 2; r++) {
                    int bytes = 0, bytes2 = 0;
                    if (r < rows) {
                        __builtin_memcpy(&bytes, xg + (long)r * k + 4 * t, 4);
                        __builtin_memcpy(&bytes2, xg + (long)r * k + 16 + 4 * t, 4);
                    }
                    x[r] = _mm256_set1_epi32(bytes);
                    x2[r] = _mm256_set1_epi32(bytes2);
                }
                for (int h = 0; h < 2; h++) {
                    __m256i v = _mm256_loadu_si256((const __m256i *)(levels + t * 64 + 32 * h));
                    __m256i low = _mm256_and_si256(v, nibble), high = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
                    if (level_bits(kind) == 5) {
                        low = _mm256_or_si256(low, fifth_bytes((unsigned)(fifth_mask(levels, t, 0) >> (32 * h))));
                        high = _mm256_or_si256(high, fifth_bytes((unsigned)(fifth_mask(levels, t, 1) >> (32 * h))));
                    }
                    for (int r = 0; r < 2; r++) {
                        if (r >= rows) continue;
                        __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(low, x[r]), _mm256_maddubs_epi16(high, x2[r]));
                        sum[r][h] = _mm256_add_epi32(sum[r][h], _mm256_madd_epi16(pairs, ones));
                    }
                }
            }
        }
        const int block = g * per / 32, bias_levels = level_bits(kind) == 8 ? 0 : level_bias(kind);
        for (int h = 0; h < 2; h++) {
            __m256 scale = eight(group, kind, h);
            __m256 offset = has_offsets(kind) ? eight(group + scale_bytes(kind), kind, h) : _mm256_setzero_ps();
            for (int r = 0; r < 2; r++) {
                if (r >= rows) continue;
                float d = xd[(long)r * blocks + block];
                const int *sums = xs + (long)r * 2 * blocks;
                int xsum = per == 32 ? sums[2 * block] + sums[2 * block + 1] : sums[g];
                __m256 exact = _mm256_cvtepi32_ps(_mm256_sub_epi32(sum[r][h], _mm256_set1_epi32(bias_levels * xsum)));
                f[r][h] = _mm256_fmadd_ps(exact, _mm256_mul_ps(scale, _mm256_set1_ps(d)), f[r][h]);
                if (has_offsets(kind)) f[r][h] = _mm256_fmadd_ps(offset, _mm256_set1_ps(d * (float)xsum), f[r][h]);
            }
        }
    }
    for (int r = 0; r < rows; r++) {
        float value[16], *row_y = y + r * ldy;
        _mm256_storeu_ps(value, f[r][0]);
        _mm256_storeu_ps(value + 8, f[r][1]);
        for (int j = 0; j < count && j < 16; j++) {
            float v = value[j];
            if (bias) v += bias[j];
            if (accumulate) v += row_y[j];
            row_y[j] = v;
        }
    }
}

static MG_AVX2 void avx2_rows(
    int kind, const void *w, long panel_bytes, int panels, int k, const signed char *xq, const float *xd, const int *xs, int m,
    float *y, long ldy, int count, const float *bias, int accumulate) {
    const int blocks = k / 32;
    for (int p = 0; p < panels; p++) {
        const char *panel = (const char *)w + p * panel_bytes;
        int columns = count - 16 * p;
        if (columns <= 0) break;
        for (int r = 0; r < m; r += 2) {
            const signed char *q = xq + (long)r * k;
            const float *d = xd + (long)r * blocks;
            const int *s = xs + (long)r * 2 * blocks;
            float *out = y + r * ldy + 16 * p;
            const float *b = bias ? bias + 16 * p : 0;
            int rows = m - r < 2 ? m - r : 2;
            switch (kind) {
#define KIND(name) case name: \
                if (rows == 2) avx2_block(panel, name, k, q, d, s, 2, out, ldy, columns, b, accumulate); \
                else avx2_block(panel, name, k, q, d, s, 1, out, ldy, columns, b, accumulate); \
                break;
                KIND(Q8_0) KIND(Q4_0) KIND(Q4_1) KIND(Q5_0) KIND(Q5_1) KIND(Q6_K) KIND(Q2_K) KIND(Q4_K) KIND(Q5_K)
#undef KIND
                default: break;
            }
        }
    }
}

/// 16 scales or offsets as floats (float16 widened exactly).
static inline __attribute__((always_inline)) __attribute__((target("avx512f"))) __m512 sixteen512(const char *at, int kind) {
    return half_scales(kind) ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)at)) : _mm512_loadu_ps((const float *)at);
}

#define MG_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

/// `rows` (1 ... 4) rows of quantized X against `panels` (1 or 2) panels: per group, each
/// column's sum of stored level x X level in 32-bit integers (VNNI: 4 K rows a lane, 64
/// products an instruction; weights unsigned as stored, X signed), less the stored bias times
/// the group's X sum, then one multiply-add in float32: (that integer) x (scale x d), plus
/// offset x (d x X sum) where the format has offsets.
static inline __attribute__((always_inline)) MG_VNNI void vnni_block(
    const char *w, const char *w2, int kind, int k, const signed char *xq, const float *xd, const int *xs, int rows, float *y,
    long ldy, int count, const float *bias, int accumulate) {
    __m512 f[4][2];
    for (int r = 0; r < 4; r++) f[r][0] = f[r][1] = _mm512_setzero_ps();
    const int per = group_rows(kind), groups = k / per, blocks = k / 32;
    const __m512i nibble = _mm512_set1_epi8(15);
    for (int g = 0; g < groups; g++) {
        const char *first = w + (long)g * group_bytes(kind), *second = w2 ? w2 + (long)g * group_bytes(kind) : first;
        const char *levels = first + header_bytes(kind), *levels2 = second + header_bytes(kind);
        __m512i sum[4][2];
        for (int r = 0; r < 4; r++) sum[r][0] = sum[r][1] = _mm512_setzero_si512();
        const signed char *xg = xq + (long)g * per;
        if (level_bits(kind) == 8) {
            for (int t = 0; t < per / 4; t++) {
                __m512i v = _mm512_loadu_si512((const void *)(levels + t * 64));
                __m512i v2 = w2 ? _mm512_loadu_si512((const void *)(levels2 + t * 64)) : v;
                for (int r = 0; r < 4; r++) {
                    if (r >= rows) continue;
                    int bytes;
                    __builtin_memcpy(&bytes, xg + (long)r * k + 4 * t, 4);
                    __m512i s = _mm512_set1_epi32(bytes);
                    sum[r][0] = _mm512_dpbusd_epi32(sum[r][0], v, s);
                    if (w2) sum[r][1] = _mm512_dpbusd_epi32(sum[r][1], v2, s);
                }
            }
        } else {
            for (int t = 0; t < 4; t++) {
                __m512i v = _mm512_loadu_si512((const void *)(levels + t * 64));
                __m512i v2 = w2 ? _mm512_loadu_si512((const void *)(levels2 + t * 64)) : v;
                __m512i low = _mm512_and_si512(v, nibble), high = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
                __m512i low2 = _mm512_and_si512(v2, nibble), high2 = _mm512_and_si512(_mm512_srli_epi16(v2, 4), nibble);
                if (level_bits(kind) == 5) {
                    const __m512i sixteen = _mm512_set1_epi8(16);
                    low = _mm512_or_si512(low, _mm512_maskz_mov_epi8(fifth_mask(levels, t, 0), sixteen));
                    high = _mm512_or_si512(high, _mm512_maskz_mov_epi8(fifth_mask(levels, t, 1), sixteen));
                    if (w2) {
                        low2 = _mm512_or_si512(low2, _mm512_maskz_mov_epi8(fifth_mask(levels2, t, 0), sixteen));
                        high2 = _mm512_or_si512(high2, _mm512_maskz_mov_epi8(fifth_mask(levels2, t, 1), sixteen));
                    }
                }
                for (int r = 0; r < 4; r++) {
                    if (r >= rows) continue;
                    int bytes, bytes2;
                    __builtin_memcpy(&bytes, xg + (long)r * k + 4 * t, 4);
                    __builtin_memcpy(&bytes2, xg + (long)r * k + 16 + 4 * t, 4);
                    __m512i s = _mm512_set1_epi32(bytes), s2 = _mm512_set1_epi32(bytes2);
                    sum[r][0] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(sum[r][0], low, s), high, s2);
                    if (w2) sum[r][1] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(sum[r][1], low2, s), high2, s2);
                }
            }
        }
        __m512 scale = sixteen512(first, kind), scale2 = sixteen512(second, kind);
        __m512 offset = has_offsets(kind) ? sixteen512(first + scale_bytes(kind), kind) : _mm512_setzero_ps();
        __m512 offset2 = has_offsets(kind) ? sixteen512(second + scale_bytes(kind), kind) : _mm512_setzero_ps();
        const int block = g * per / 32;
        for (int r = 0; r < 4; r++) {
            if (r >= rows) continue;
            float d = xd[(long)r * blocks + block];
            const int *sums = xs + (long)r * 2 * blocks;
            int xsum = per == 32 ? sums[2 * block] + sums[2 * block + 1] : sums[g];
            __m512 vd = _mm512_set1_ps(d);
            __m512i correction = _mm512_set1_epi32(level_bias(kind) * xsum);
            f[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(sum[r][0], correction)), _mm512_mul_ps(scale, vd), f[r][0]);
            if (w2) f[r][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(sum[r][1], correction)), _mm512_mul_ps(scale2, vd), f[r][1]);
            if (has_offsets(kind)) {
                __m512 shift = _mm512_set1_ps(d * (float)xsum);
                f[r][0] = _mm512_fmadd_ps(offset, shift, f[r][0]);
                if (w2) f[r][1] = _mm512_fmadd_ps(offset2, shift, f[r][1]);
            }
        }
    }
    __mmask16 mask = count >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << count) - 1);
    __mmask16 mask2 = count >= 32 ? (__mmask16)0xffff : count > 16 ? (__mmask16)((1u << (count - 16)) - 1) : 0;
    __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias) : _mm512_setzero_ps();
    __m512 b2 = bias && w2 ? _mm512_maskz_loadu_ps(mask2, bias + 16) : _mm512_setzero_ps();
    for (int r = 0; r < 4; r++) {
        if (r >= rows) continue;
        float *row_y = y + r * ldy;
        __m512 value = f[r][0], value2 = f[r][1];
        if (bias) {
            value = _mm512_add_ps(value, b);
            value2 = _mm512_add_ps(value2, b2);
        }
        if (accumulate) {
            value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, row_y));
            if (w2) value2 = _mm512_add_ps(value2, _mm512_maskz_loadu_ps(mask2, row_y + 16));
        }
        _mm512_mask_storeu_ps(row_y, mask, value);
        if (w2) _mm512_mask_storeu_ps(row_y + 16, mask2, value2);
    }
}

static inline __attribute__((always_inline)) MG_VNNI void vnni_group_rows(
    const char *w, const char *w2, int kind, int k, const signed char *xq, const float *xd, const int *xs, int m, float *y,
    long ldy, int count, const float *bias, int accumulate) {
    const int blocks = k / 32;
    for (int r = 0; r < m; r += 4) {
        const signed char *q = xq + (long)r * k;
        const float *d = xd + (long)r * blocks;
        const int *s = xs + (long)r * 2 * blocks;
        switch (m - r < 4 ? m - r : 4) {
#define ROWS(n) case n: vnni_block(w, w2, kind, k, q, d, s, n, y + r * ldy, ldy, count, bias, accumulate); break;
            ROWS(1) ROWS(2) ROWS(3) ROWS(4)
#undef ROWS
            default: break;
        }
    }
}

static MG_VNNI void vnni_rows(
    int kind, const void *w, long panel_bytes, int panels, int k, const signed char *xq, const float *xd, const int *xs, int m,
    float *y, long ldy, int count, const float *bias, int accumulate) {
    const char *first = (const char *)w, *second = panels == 2 ? first + panel_bytes : 0;
    switch (kind) {
#define KIND(name) case name: \
        if (second) vnni_group_rows(first, second, name, k, xq, xd, xs, m, y, ldy, count, bias, accumulate); \
        else vnni_group_rows(first, 0, name, k, xq, xd, xs, m, y, ldy, count, bias, accumulate); \
        break;
        KIND(Q8_0) KIND(Q4_0) KIND(Q4_1) KIND(Q5_0) KIND(Q5_1) KIND(Q6_K) KIND(Q2_K) KIND(Q4_K) KIND(Q5_K)
#undef KIND
        default: break;
    }
}


void mg_quantized_integer_rows(
    int vnni, int kind, const void *w, long panel_bytes, int panels, int k, const signed char *xq, const float *xd, const int *xs,
    int m, float *y, long ldy, int count, const float *bias, int accumulate) {
    if (vnni && mg_int8_available()) vnni_rows(kind, w, panel_bytes, panels, k, xq, xd, xs, m, y, ldy, count, bias, accumulate);
    else avx2_rows(kind, w, panel_bytes, panels, k, xq, xd, xs, m, y, ldy, count, bias, accumulate);
}

#else

void mg_q8_quantize_rows(const float *x, long ldx, int m, int k, signed char *levels, float *scales, int *sums) {}
void mg_quantized_integer_rows(
    int vnni, int kind, const void *w, long panel_bytes, int panels, int k, const signed char *xq, const float *xd, const int *xs,
    int m, float *y, long ldy, int count, const float *bias, int accumulate) {}

#endif
