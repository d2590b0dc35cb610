// Native bfloat16 products (AVX512-BF16's VDPBF16PS), for PackedMatrix's bf16 panels. Swift has
// no spelling for these instructions; everything else about products stays in Swift.
#ifndef MG_BF16_H
#define MG_BF16_H

#include <stdint.h>

/// 1 when this CPU runs VDPBF16PS (checked once), else 0.
int mg_bf16_available(void);

/// Rows a product's kernel keeps in registers at once; X is laid out in blocks of this many.
#define MG_BF16_BLOCK 8

/// Rows of X as bfloat16 pairs, in blocks of MG_BF16_BLOCK rows: the pair p of row r is at
/// `pairs[((r / 8) * k_pairs + p) * 8 + r % 8]` (k_pairs = (k + 1) / 2) and holds x[r][2p]
/// (low half) and x[r][2p + 1] (high half), rounded to nearest even; an odd K's last pair has
/// 0 on top, and the last block's missing rows are 0. `pairs` holds blocks * k_pairs * 8 words.
void mg_bf16_pack_rows(const float *x, long ldx, int m, int k, uint32_t *pairs);

/// Two 16-column panels of PackedMatrix's bf16 layout (per K row, word i holds column i low and
/// column i + 8 high) re-laid in pairs of K rows, side by side: `out[p * 32 + j]` holds
/// W[2p][j] low and W[2p + 1][j] high of `first`, `out[p * 32 + 16 + j]` the same of `second`
/// (0 past K, and everywhere for a null `second`).
void mg_bf16_pair_panels(const uint16_t *first, const uint16_t *second, int k, uint32_t *out);

/// y[r][0..<count] = (accumulate ? y : 0) + (bias ? bias : 0) + sum over p of the pair products,
/// for rows 0..<m of `pairs` (whole blocks from mg_bf16_pack_rows, from a block's start) against
/// two re-laid panels (count up to 32 columns) of `k_pairs` pairs; `next` (or null): 2 k_pairs
/// cache lines to fetch into L2 meanwhile (the next two panels).
void mg_bf16_panels_product(
    const uint32_t *pairs, int m, const uint32_t *panels, int k_pairs, float *y, long ldy, int count, const float *bias,
    int accumulate, const void *next);

#endif
