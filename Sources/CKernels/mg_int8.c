#include "mg_int8.h"
#include "mg_cpu.h"

#include <math.h>

static float up(double value) {  // value as a float no smaller than it
    float f = (float)value;
    return (double)f < value ? nextafterf(f, INFINITY) : f;
}

void mg_int8_quantize_rows(const float *x, long ldx, int m, int k, int k4, uint8_t *out, float *scale, float *norms) {
    for (int r = 0; r < m; r++) {
        const float *row = x + (long)r * ldx;
        uint8_t *q = out + (long)r * k4;
        float largest = 0;
        int finite = 1;
        for (int i = 0; i < k; i++) {
            float v = fabsf(row[i]);
            if (!(v <= 3.4e38f)) finite = 0;  // NaN or infinity
            if (v > largest) largest = v;
        }
        float s = finite && largest > 0 ? largest / 127 : 1;
        float inverse = 1 / s;
        double squares = 0, errors = 0, kept = 0;
        for (int i = 0; i < k; i++) {
            float scaled = finite ? row[i] * inverse : 0;
            long level = lrintf(scaled);
            if (level > 127) level = 127;
            if (level < -127) level = -127;
            q[i] = (uint8_t)(level + 128);
            double approximation = (double)s * (double)level;  // exact: 24 + 7 bits
            double difference = (double)row[i] - approximation;
            squares += (double)row[i] * row[i];
            errors += difference * difference;
            kept += approximation * approximation;
        }
        for (int i = k; i < k4; i++) q[i] = 128;
        scale[r] = s;
        norms[3 * r] = finite ? up(sqrt(squares) * (1 + 0x1p-40)) : NAN;
        norms[3 * r + 1] = finite ? up(sqrt(errors) * (1 + 0x1p-40)) : NAN;
        norms[3 * r + 2] = finite ? up(sqrt(kept) * (1 + 0x1p-40)) : NAN;
    }
}

void mg_int8_panels_product_reference(
    const uint8_t *xq, int m, int k4, const int8_t *panels, const int32_t *colsum, const float *wscale, const float *xscale,
    int first, int last, float *a, long lda) {
    for (int r = 0; r < m; r++) {
        for (int p = first; p < last; p++) {
            const int8_t *panel = panels + (long)p * k4 * MG_INT8_PANEL;
            for (int c = 0; c < MG_INT8_PANEL; c++) {
                int32_t sum = 0;
                for (int i = 0; i < k4; i++) sum += (int32_t)xq[(long)r * k4 + i] * panel[(i / 4) * 64 + c * 4 + i % 4];
                int j = p * MG_INT8_PANEL + c;
                sum -= 128 * colsum[j];
                a[(long)r * lda + j] = (float)sum * (xscale[r] * wscale[j]);
            }
        }
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

#define MG_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

MG_CPU_FEATURE(mg_int8_available, __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw"))

/// `rows` (1 ... 4) rows of X against `count` (1 ... 4) panels: one accumulator each, every
/// group of 4 bytes of a row broadcast once for all the panels, each panel's 64 bytes loaded
/// once for all the rows.
static inline __attribute__((always_inline)) MG_TARGET void block(
    const uint8_t *xq, int rows, int k4, const int8_t *panel, int count, const int32_t *colsum, const float *wscale,
    const float *xscale, float *a, long lda) {
    __m512i sum[4][4];
    for (int r = 0; r < 4; r++)
        for (int p = 0; p < 4; p++) sum[r][p] = _mm512_setzero_si512();
    const long stride = (long)k4 * MG_INT8_PANEL;
    for (int t = 0; t < k4 / 4; t++) {
        __m512i w[4];
        for (int p = 0; p < 4; p++)
            if (p < count) w[p] = _mm512_loadu_si512((const void *)(panel + p * stride + (long)t * 64));
        for (int r = 0; r < 4; r++) {
            if (r < rows) {
                int32_t bytes;
                __builtin_memcpy(&bytes, xq + (long)r * k4 + 4 * t, 4);
                __m512i s = _mm512_set1_epi32(bytes);
                for (int p = 0; p < 4; p++)
                    if (p < count) sum[r][p] = _mm512_dpbusd_epi32(sum[r][p], s, w[p]);
            }
        }
    }
    for (int p = 0; p < 4; p++) {
        if (p >= count) continue;
        __m512i offset = _mm512_slli_epi32(_mm512_loadu_si512((const void *)(colsum + p * MG_INT8_PANEL)), 7);
        __m512 ws = _mm512_loadu_ps(wscale + p * MG_INT8_PANEL);
        for (int r = 0; r < 4; r++) {
            if (r >= rows) continue;
            __m512 value = _mm512_cvtepi32_ps(_mm512_sub_epi32(sum[r][p], offset));
            __m512 scales = _mm512_mul_ps(_mm512_set1_ps(xscale[r]), ws);
            _mm512_storeu_ps(a + r * lda + p * MG_INT8_PANEL, _mm512_mul_ps(value, scales));
        }
    }
}

static inline __attribute__((always_inline)) MG_TARGET void rows_block(
    const uint8_t *xq, int rows, int k4, const int8_t *panels, const int32_t *colsum, const float *wscale, const float *xscale,
    int first, int last, float *a, long lda) {
    int p = first;
    const long stride = (long)k4 * MG_INT8_PANEL;
    for (; p + 4 <= last; p += 4) {
        long column = (long)p * MG_INT8_PANEL;
        block(xq, rows, k4, panels + p * stride, 4, colsum + column, wscale + column, xscale, a + column, lda);
    }
    for (; p < last; p++) {
        long column = (long)p * MG_INT8_PANEL;
        block(xq, rows, k4, panels + p * stride, 1, colsum + column, wscale + column, xscale, a + column, lda);
    }
}

MG_TARGET void mg_int8_panels_product(
    const uint8_t *xq, int m, int k4, const int8_t *panels, const int32_t *colsum, const float *wscale, const float *xscale,
    int first, int last, float *a, long lda) {
    int r = 0;
    for (; r + 4 <= m; r += 4) rows_block(xq + (long)r * k4, 4, k4, panels, colsum, wscale, xscale + r, first, last, a + r * lda, lda);
    const uint8_t *rest = xq + (long)r * k4;
    switch (m - r) {
#define TAIL(n) case n: rows_block(rest, n, k4, panels, colsum, wscale, xscale + r, first, last, a + r * lda, lda); break;
        TAIL(1) TAIL(2) TAIL(3)
#undef TAIL
        default: break;
    }
}

/// How far a value may lie from its approximation `a` (see mg_int8_candidates). Each bound is
/// computed in float: the slack on |a| (2^-12) and on the margin (1 + 2^-12) covers their own
/// rounding and the approximation's (at most 3 ulp of a).
typedef struct {
    const float *w_norm, *w_error;
    float x_error, x_norm;
} bounds;

static const float slack = 0x1p-12f, widen = 1 + 0x1p-12f;

static inline float margin(const bounds *b, int j, float magnitude) {
    return (slack * magnitude + b->x_error * b->w_norm[j] + b->x_norm * b->w_error[j]) * widen;
}

static inline MG_TARGET __m512 margins(const bounds *b, int j, __m512 v) {
    __m512 columns = _mm512_fmadd_ps(_mm512_set1_ps(b->x_error), _mm512_loadu_ps(b->w_norm + j),
        _mm512_mul_ps(_mm512_set1_ps(b->x_norm), _mm512_loadu_ps(b->w_error + j)));
    return _mm512_mul_ps(_mm512_fmadd_ps(_mm512_set1_ps(slack), _mm512_abs_ps(v), columns), _mm512_set1_ps(widen));
}

/// An adjusted column's value (its approximation less the adjustment) and its margin, from the
/// value before adjusting.
static inline float adjusted(const bounds *b, int j, float before, float adjustment, float *value) {
    *value = before - adjustment;
    return margin(b, j, fabsf(before) + fabsf(adjustment) + fabsf(*value));
}

MG_TARGET int mg_int8_candidates(
    float *a, int n, const float *w_norm, const float *w_error, float x_error, float x_norm, const int32_t *adjust_index,
    const float *adjust_value, int adjust_count, int32_t *out, int capacity) {
    const bounds b = { w_norm, w_error, x_error, x_norm };
    // Adjusted columns are bounded apart, and kept out of the vector passes meanwhile.
    float lower = -INFINITY;
    float adjusted_upper[adjust_count > 0 ? adjust_count : 1];
    float saved[adjust_count > 0 ? adjust_count : 1];
    for (int i = 0; i < adjust_count; i++) {
        float value, m = adjusted(&b, adjust_index[i], a[adjust_index[i]], adjust_value[i], &value);
        adjusted_upper[i] = value + m;
        if (value - m > lower) lower = value - m;
        saved[i] = value;
    }
    for (int i = 0; i < adjust_count; i++) a[adjust_index[i]] = -INFINITY;
    __m512 best = _mm512_set1_ps(lower);
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512 v = _mm512_loadu_ps(a + j);
        best = _mm512_max_ps(best, _mm512_sub_ps(v, margins(&b, j, v)));
    }
    lower = _mm512_reduce_max_ps(best);
    for (; j < n; j++) {
        float m = margin(&b, j, fabsf(a[j]));
        if (a[j] - m > lower) lower = a[j] - m;
    }
    const __m512 floor = _mm512_set1_ps(lower);
    int found = 0, next_adjusted = 0;
    // Adjusted columns in ascending order among the rest: indices are few, so a sorted copy.
    int32_t order[adjust_count > 0 ? adjust_count : 1];
    for (int i = 0; i < adjust_count; i++) order[i] = i;
    for (int i = 1; i < adjust_count; i++) {
        int32_t key = order[i];
        int p = i - 1;
        for (; p >= 0 && adjust_index[order[p]] > adjust_index[key]; p--) order[p + 1] = order[p];
        order[p + 1] = key;
    }
#define TAKE(index) do { if (found < capacity) out[found] = (index); found++; } while (0)
#define ADJUSTED_BEFORE(limit) \
    while (next_adjusted < adjust_count && adjust_index[order[next_adjusted]] < (limit)) { \
        if (adjusted_upper[order[next_adjusted]] >= lower) TAKE(adjust_index[order[next_adjusted]]); \
        next_adjusted++; \
    }
    for (j = 0; j + 16 <= n; j += 16) {
        __m512 v = _mm512_loadu_ps(a + j);
        __mmask16 hits = _mm512_cmp_ps_mask(_mm512_add_ps(v, margins(&b, j, v)), floor, _CMP_GE_OQ);
        if (!hits) continue;
        for (int c = 0; c < 16; c++) {
            if (!(hits >> c & 1)) continue;
            ADJUSTED_BEFORE(j + c)
            TAKE(j + c);
        }
    }
    for (; j < n; j++) {
        if (a[j] + margin(&b, j, fabsf(a[j])) >= lower) {
            ADJUSTED_BEFORE(j)
            TAKE(j);
        }
    }
    ADJUSTED_BEFORE(n)
#undef ADJUSTED_BEFORE
#undef TAKE
    for (int i = 0; i < adjust_count; i++) a[adjust_index[i]] = saved[i];
    return found;
}

MG_TARGET void mg_int8_upper_bounds(
    float *a, int n, const float *w_norm, const float *w_error, float x_error, float x_norm, const int32_t *adjust_index,
    const float *adjust_value, int adjust_count) {
    const bounds b = { w_norm, w_error, x_error, x_norm };
    float upper[adjust_count > 0 ? adjust_count : 1];
    for (int i = 0; i < adjust_count; i++) {
        float value, m = adjusted(&b, adjust_index[i], a[adjust_index[i]], adjust_value[i], &value);
        upper[i] = value + m;
    }
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512 v = _mm512_loadu_ps(a + j);
        _mm512_storeu_ps(a + j, _mm512_add_ps(v, margins(&b, j, v)));
    }
    for (; j < n; j++) a[j] += margin(&b, j, fabsf(a[j]));
    for (int i = 0; i < adjust_count; i++) a[adjust_index[i]] = upper[i];
}

#else

int mg_int8_available(void) { return 0; }
void mg_int8_upper_bounds(
    float *a, int n, const float *w_norm, const float *w_error, float x_error, float x_norm, const int32_t *adjust_index,
    const float *adjust_value, int adjust_count) {}
void mg_int8_panels_product(
    const uint8_t *xq, int m, int k4, const int8_t *panels, const int32_t *colsum, const float *wscale, const float *xscale,
    int first, int last, float *a, long lda) {}
int mg_int8_candidates(
    float *a, int n, const float *w_norm, const float *w_error, float x_error, float x_norm, const int32_t *adjust_index,
    const float *adjust_value, int adjust_count, int32_t *out, int capacity) { return -1; }

#endif
