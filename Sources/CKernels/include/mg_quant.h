// Integer products of quantized panels (PackedMatrix's quantized formats), as llama.cpp
// computes its quantized products: X's rows quantized to 8 bits per block of 32 K values, each
// group's weights and X's levels multiplied and summed in 32-bit integers, then one float32
// multiply-add per group and column. Two variants give the very same floats: AVX2 (byte
// multiply-adds to 16 bits, then to 32) and AVX-512 VNNI (4 byte products summed into 32 bits
// in one instruction).
#ifndef MG_QUANT_H
#define MG_QUANT_H

/// X's rows quantized (K a multiple of 32): per block of 32 K values, d = the largest magnitude
/// / 127 and each value x (1 / d) rounded to nearest even: `levels[r * k + i]`,
/// `scales[r * (k / 32) + b]`, and the sum of each 16 levels `sums[r * (k / 16) + h]`. A block
/// holding NaN gets d NaN, one holding infinity d infinity; both get levels 0, so their products
/// are NaN, as float32 products would be.
void mg_q8_quantize_rows(const float *x, long ldx, int m, int k, signed char *levels, float *scales, int *sums);

/// y[r][0 ..< count] = the quantized panels' weights x X's quantized rows (+ bias) (+ y when
/// accumulate), r < m: per group (in K order) and column, s = the integer sum of level x X
/// level, exactly; then acc = fma(s, scale * d, acc), and for formats with offsets
/// acc = fma(offset, d * (X's sum over the group), acc); bias added before y. Every quantized
/// kind (mg_f32.c's kinds); `w` a panel from K row 0, and when `panels` is 2 the next `panel_bytes` on (its columns 16 ..< count).
/// `vnni` 1 runs the AVX-512 VNNI variant (where mg_int8_available: VNNI and BW), 0 the AVX2 one.
void mg_quantized_integer_rows(
    int vnni, int kind, const void *w, long panel_bytes, int panels, int k, const signed char *xq, const float *xd, const int *xs,
    int m, float *y, long ldy, int count, const float *bias, int accumulate);

#endif
