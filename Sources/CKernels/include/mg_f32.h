// float32 products on AVX-512's 512-bit registers, for PackedMatrix's f32 panels (16 columns
// a K row, 64 bytes: one register). Swift's code is built for AVX2 (8 lanes, 16 registers);
// here a panel row is one register and 32 registers hold 16 rows' accumulators at once, so
// each weight is loaded once for 16 rows and each x broadcast serves 16 columns.
#ifndef MG_F32_H
#define MG_F32_H

/// 1 when this CPU has AVX-512F (checked once), else 0.
int mg_f32_available(void);

/// Rows of X in blocks of 16, each block's K rows of 16 floats (row r of the block at r):
/// `out[((r / 16) * k + i) * 16 + r % 16]` = x[r][i], 0 in the last block's missing rows. A
/// step of the product then broadcasts its 16 rows' values from one cache line; rows of X
/// 4 KiB apart (3,072 floats: GPT-2's MLP) would all fall in one set of the L1 cache.
/// `out` holds ceil(m / 16) * k * 16 floats.
void mg_f32_pack_rows(const float *x, long ldx, int m, int k, float *out);

/// For rows r < m of `packed` (from mg_f32_pack_rows of a K of `k_total`, pointing at the
/// slice's first i, from a block's start): y[r][0 ..< count] = (sum over the slice's k rows of
/// x[r][i] * w[i][0 ..< 16 panels]) (+ bias) (+ y when accumulate), each column's sum one chain
/// of fused multiply-adds in i order (as PackedMatrix's Swift 4- and 6-row blocks compute it),
/// bias added before y. `w` is one panel's slice: k rows of 16 floats; with `panels` 2, the
/// next panel's slice follows `panel_stride` floats on (its columns 16 ..< count).
void mg_f32_panel_rows(
    const float *w, long panel_stride, int panels, int k, const float *packed, int k_total, int m, float *y, long ldy, int count,
    const float *bias, int accumulate);

/// mg_f32_panel_rows for bfloat16 panels (PackedMatrix's bf16 layout; `panel_stride` in
/// elements), each weight widened to float32 exactly: the same sums as the Swift blocks' over
/// the same bf16 panel.
void mg_bf16_panel_rows(
    const unsigned short *w, long panel_stride, int panels, int k, const float *packed, int k_total, int m, float *y, long ldy,
    int count, const float *bias, int accumulate);

/// mg_f32_panel_rows for quantized panels of `kind` (PackedMatrix.Format's kernelKind; the
/// layouts of QuantizedPanels.swift; `panel_stride` in elements, K whole groups, the slice
/// starting on a group), each weight its level times its scale, plus its offset, in float32:
/// the same sums as the Swift blocks' over the same panel.
void mg_quantized_panel_rows(
    int kind, const void *w, long panel_stride, int panels, int k, const float *packed, int k_total, int m, float *y, long ldy,
    int count, const float *bias, int accumulate);

#endif
