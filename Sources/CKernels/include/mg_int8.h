// Int8 products on AVX512-VNNI (VPDPBUSD: 64 byte products a 512-bit instruction, four times a
// float32 FMA's 16), for an approximate copy of an output head whose error is bounded, so that
// the exact greedy token is found by computing exactly only the columns that might hold it.
// Swift has no spelling for these instructions.
#ifndef MG_INT8_H
#define MG_INT8_H

#include <stdint.h>

/// 1 when this CPU runs VPDPBUSD on 512-bit registers (checked once), else 0.
int mg_int8_available(void);

/// Columns of a panel, as in PackedMatrix.
#define MG_INT8_PANEL 16

/// Row `r` of X quantised against its own scale: `scale[r]` = max |x| / 127 (1 for a zero
/// row) and `out[r * k4 + i]` = 128 + round(x[r][i] / scale[r]) (unsigned; 128 past K, up to
/// `k4`, a multiple of 4). `norms[3 r ...]` get |x|, |x - scale q| and |scale q| (Euclidean, each
/// rounded up), or NaN where a row holds a NaN or an infinity.
void mg_int8_quantize_rows(const float *x, long ldx, int m, int k, int k4, uint8_t *out, float *scale, float *norms);

/// `a[r * lda + j]` = xscale[r] * wscale[j] * sum over i of q(x)[r][i] * w[i][j], for every
/// row r < m of `xq` (from mg_int8_quantize_rows) and every column j of panels
/// `first ..< last`. A panel holds, for each group t of 4 rows of W, 64 bytes: column c's
/// w[4t ..< 4t + 4] at 4c; `colsum[j]` is column j's sum of w (the unsigned offset's share).
/// Writes all 16 columns of each panel (lda at least 16 * last).
void mg_int8_panels_product(
    const uint8_t *xq, int m, int k4, const int8_t *panels, const int32_t *colsum, const float *wscale, const float *xscale,
    int first, int last, float *a, long lda);

/// Columns that may hold the largest of `n` values whose approximations are `a` (adjusted by
/// `adjust_value` at `adjust_index` first: subtracted, as penalties are), when each value lies
/// within `slack * |a[j]| + x_error * w_norm[j] + x_norm * w_error[j]` of its approximation:
/// those whose upper bound reaches the largest lower bound. Writes up to `capacity` of them
/// (ascending) to `out` and returns how many there are (more than `capacity` when they did not fit).
int mg_int8_candidates(
    float *a, int n, const float *w_norm, const float *w_error, float x_error, float x_norm, const int32_t *adjust_index,
    const float *adjust_value, int adjust_count, int32_t *out, int capacity);

/// Each value's upper bound, in place: a[j] becomes a[j] (less its adjustment) plus the margin
/// mg_int8_candidates allows it.
void mg_int8_upper_bounds(
    float *a, int n, const float *w_norm, const float *w_error, float x_error, float x_norm, const int32_t *adjust_index,
    const float *adjust_value, int adjust_count);

/// The same product, one byte at a time (for tests, and CPUs without VNNI).
void mg_int8_panels_product_reference(
    const uint8_t *xq, int m, int k4, const int8_t *panels, const int32_t *colsum, const float *wscale, const float *xscale,
    int first, int last, float *a, long lda);

#endif
