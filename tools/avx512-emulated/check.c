// Checks the AVX-512 kernels on any x86-64 CPU, through immintrin.h's scalar intrinsics:
// mg_f32.c's quantized float32 products against their definition (each weight read from the
// panel layout as QuantizedPanels.swift describes it, multiplied out, one chain of fused
// multiply-adds in K order), and mg_quant.c's VNNI integer products against its AVX2 ones (run
// natively), which must give the very same floats. check.sh builds and runs it.
#include <stdio.h>
#include <stdlib.h>

#include "mg_f32.c"
#include "vnni_slice.c"
#include "mg_quant.h"

static uint64_t state = 0x9E3779B97F4A7C15u;
static uint32_t next(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (uint32_t)(state >> 32);
}
static float uniform(float low, float high) { return low + (high - low) * (float)(next() >> 8) / 16777216.0f; }

static float scale_at(const char *at, int kind, int c) {
    if (half_scales(kind)) {
        _Float16 h;
        memcpy(&h, at + 2 * c, 2);
        return (float)h;
    }
    float f;
    memcpy(&f, at + 4 * c, 4);
    return f;
}

/// Weight (i, c) of a panel, read from the layout by its description.
static float weight(const char *panel, int kind, int i, int c) {
    const char *group = panel + (long)(i / group_rows(kind)) * group_bytes(kind);
    const unsigned char *levels = (const unsigned char *)group + header_bytes(kind);
    int row = i % group_rows(kind), level;
    if (level_bits(kind) == 8) {
        level = levels[(row / 4) * 64 + 4 * c + row % 4];
    } else {
        int byte = levels[((row % 16) / 4) * 64 + 4 * c + row % 4];
        level = row >= 16 ? byte >> 4 : byte & 15;
        if (level_bits(kind) == 5) {
            uint64_t mask;
            memcpy(&mask, levels + 256 + 8 * (2 * ((row % 16) / 4) + (row >= 16)), 8);
            level |= (int)(mask >> (4 * c + row % 4) & 1) << 4;
        }
    }
    level -= level_bias(kind);
    float w = scale_at(group, kind, c) * (float)level;
    if (has_offsets(kind)) w = w + scale_at(group + scale_bytes(kind), kind, c);
    return w;
}

static void fill_panels(char *w, int kind, int k, int panels) {
    for (int p = 0; p < panels; p++) {
        for (int g = 0; g < k / group_rows(kind); g++) {
            char *group = w + (long)p * k * row_bytes(kind) + (long)g * group_bytes(kind);
            for (long b = header_bytes(kind); b < group_bytes(kind); b++) group[b] = (char)next();
            for (int part = 0; part < (has_offsets(kind) ? 2 : 1); part++) {
                char *at = group + part * scale_bytes(kind);
                for (int c = 0; c < 16; c++) {
                    float value = part == 0 ? uniform(-0.05f, 0.05f) : uniform(-0.2f, 0.2f);
                    if (half_scales(kind)) {
                        _Float16 h = (_Float16)value;
                        memcpy(at + 2 * c, &h, 2);
                    } else {
                        memcpy(at + 4 * c, &value, 4);
                    }
                }
            }
        }
    }
}

int main(void) {
    static const int kinds[] = {Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q6_K, Q2_K, Q4_K, Q5_K};
    static const char *names[] = {"", "", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q6_K", "Q2_K", "Q4_K", "Q5_K"};
    static const int ms[] = {1, 2, 3, 4, 5, 7, 8, 13, 16, 17, 20};
    static const int ks[] = {32, 64, 256};
    static const int counts[] = {9, 16, 23, 32};
    long checked = 0, failed = 0, integer_checked = 0;
    for (unsigned kind_index = 0; kind_index < sizeof kinds / sizeof *kinds; kind_index++) {
        int kind = kinds[kind_index];
        for (unsigned ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
            int k = ks[ki];
            for (unsigned ci = 0; ci < sizeof counts / sizeof *counts; ci++) {
                int count = counts[ci], panels = count > 16 ? 2 : 1;
                for (unsigned mi = 0; mi < sizeof ms / sizeof *ms; mi++) {
                    int m = ms[mi];
                    for (int accumulate = 0; accumulate < 2; accumulate++) {
                        char *w = malloc((size_t)panels * k * row_bytes(kind));
                        fill_panels(w, kind, k, panels);
                        float *x = malloc(sizeof(float) * m * k), *bias = malloc(sizeof(float) * count);
                        float *initial = malloc(sizeof(float) * m * count), *y = malloc(sizeof(float) * m * count);
                        float *expected = malloc(sizeof(float) * m * count);
                        for (int i = 0; i < m * k; i++) x[i] = uniform(-1, 1);
                        for (int c = 0; c < count; c++) bias[c] = uniform(-1, 1);
                        for (int i = 0; i < m * count; i++) initial[i] = uniform(-1, 1);
                        // The float32 kernel against the definition.
                        float *packed = malloc(sizeof(float) * ((m + 15) / 16) * 16 * k);
                        mg_f32_pack_rows(x, k, m, k, packed);
                        memcpy(y, initial, sizeof(float) * m * count);
                        mg_quantized_panel_rows(kind, w, (long)k * 16, panels, k, packed, k, m, y, count, count, bias, accumulate);
                        float *weights = malloc(sizeof(float) * k * count);
                        for (int c = 0; c < count; c++)
                            for (int i = 0; i < k; i++) weights[c * k + i] = weight(w + (long)(c / 16) * k * row_bytes(kind), kind, i, c % 16);
                        for (int r = 0; r < m; r++) {
                            for (int c = 0; c < count; c++) {
                                float acc = 0;
                                for (int i = 0; i < k; i++) acc = fmaf(x[r * k + i], weights[c * k + i], acc);
                                acc = acc + bias[c];
                                if (accumulate) acc = acc + initial[r * count + c];
                                expected[r * count + c] = acc;
                            }
                        }
                        int differing = 0;
                        for (int i = 0; i < m * count; i++) differing += memcmp(&y[i], &expected[i], 4) != 0;
                        checked++;
                        if (differing) {
                            failed++;
                            printf("float32 %s m %d k %d count %d accumulate %d: %d of %d differ\n", names[kind], m, k, count, accumulate, differing, m * count);
                        }
                        // The VNNI integer kernel against the AVX2 one.
                        {
                            signed char *xq = malloc((size_t)m * k);
                            float *xd = malloc(sizeof(float) * m * (k / 32));
                            int *xs = malloc(sizeof(int) * m * (k / 16));
                            mg_q8_quantize_rows(x, k, m, k, xq, xd, xs);
                            memcpy(expected, initial, sizeof(float) * m * count);
                            mg_quantized_integer_rows(0, kind, w, (long)k * row_bytes(kind), panels, k, xq, xd, xs, m, expected, count, count, bias, accumulate);
                            memcpy(y, initial, sizeof(float) * m * count);
                            vnni_rows(kind, w, (long)k * row_bytes(kind), panels, k, xq, xd, xs, m, y, count, count, bias, accumulate);
                            differing = 0;
                            for (int i = 0; i < m * count; i++) differing += memcmp(&y[i], &expected[i], 4) != 0;
                            integer_checked++;
                            if (differing) {
                                failed++;
                                printf("VNNI %s m %d k %d count %d accumulate %d: %d of %d differ from AVX2\n", names[kind], m, k, count, accumulate, differing, m * count);
                            }
                            free(xq);
                            free(xd);
                            free(xs);
                        }
                        free(w);
                        free(x);
                        free(bias);
                        free(initial);
                        free(y);
                        free(expected);
                        free(packed);
                        free(weights);
                    }
                }
            }
        }
    }
    printf("emulated AVX-512: %ld float32 and %ld VNNI products checked, %ld differ\n", checked, integer_checked, failed);
    return failed ? 1 : 0;
}
