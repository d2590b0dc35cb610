// The AVX-512 intrinsics that mg_f32.c and mg_quant.c's VNNI kernel use, written out in scalar
// C from Intel's definitions, so that those kernels can be checked on a CPU without AVX-512
// (check.sh). Only what they use; nothing here is fast.
#ifndef MG_EMULATED_IMMINTRIN_H
#define MG_EMULATED_IMMINTRIN_H

#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct { float f[16]; } __m512;
typedef union { int32_t i[16]; uint32_t u[16]; uint16_t h[32]; uint8_t b[64]; int8_t s[64]; } __m512i;
typedef union { uint16_t h[16]; uint8_t b[32]; } __m256i;
typedef union { int32_t i[4]; uint64_t q[2]; } __m128i;
typedef uint16_t __mmask16;
typedef uint64_t __mmask64;

#define _MM_HINT_T0 3
static inline void _mm_prefetch(const void *p, int hint) { (void)p; (void)hint; }

static inline __m512 _mm512_setzero_ps(void) { __m512 r; memset(&r, 0, sizeof r); return r; }
static inline __m512i _mm512_setzero_si512(void) { __m512i r; memset(&r, 0, sizeof r); return r; }
static inline __m512 _mm512_set1_ps(float v) { __m512 r; for (int i = 0; i < 16; i++) r.f[i] = v; return r; }
static inline __m512i _mm512_set1_epi32(int v) { __m512i r; for (int i = 0; i < 16; i++) r.i[i] = v; return r; }
static inline __m512i _mm512_set1_epi8(char v) { __m512i r; memset(r.b, (uint8_t)v, 64); return r; }
static inline __m512i _mm512_setr_epi32(int a0, int a1, int a2, int a3, int a4, int a5, int a6, int a7, int a8, int a9, int a10,
                                        int a11, int a12, int a13, int a14, int a15) {
    __m512i r = {{a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15}};
    return r;
}
static inline __m128i _mm_cvtsi32_si128(int v) { __m128i r = {{v, 0, 0, 0}}; return r; }

static inline __m512 _mm512_loadu_ps(const void *p) { __m512 r; memcpy(&r, p, 64); return r; }
static inline __m512i _mm512_loadu_si512(const void *p) { __m512i r; memcpy(&r, p, 64); return r; }
static inline __m256i _mm256_loadu_si256(const void *p) { __m256i r; memcpy(&r, p, 32); return r; }
static inline __m512 _mm512_maskz_loadu_ps(__mmask16 k, const void *p) {
    __m512 r = _mm512_setzero_ps();
    for (int i = 0; i < 16; i++)
        if (k >> i & 1) memcpy(&r.f[i], (const char *)p + 4 * i, 4);
    return r;
}
static inline void _mm512_storeu_ps(void *p, __m512 v) { memcpy(p, &v, 64); }
static inline void _mm512_mask_storeu_ps(void *p, __mmask16 k, __m512 v) {
    for (int i = 0; i < 16; i++)
        if (k >> i & 1) memcpy((char *)p + 4 * i, &v.f[i], 4);
}

static inline __m512 _mm512_add_ps(__m512 a, __m512 b) { for (int i = 0; i < 16; i++) a.f[i] += b.f[i]; return a; }
static inline __m512 _mm512_mul_ps(__m512 a, __m512 b) { for (int i = 0; i < 16; i++) a.f[i] *= b.f[i]; return a; }
static inline __m512 _mm512_fmadd_ps(__m512 a, __m512 b, __m512 c) { for (int i = 0; i < 16; i++) a.f[i] = fmaf(a.f[i], b.f[i], c.f[i]); return a; }
static inline __m512 _mm512_cvtepi32_ps(__m512i a) { __m512 r; for (int i = 0; i < 16; i++) r.f[i] = (float)a.i[i]; return r; }
static inline __m512 _mm512_castsi512_ps(__m512i a) { __m512 r; memcpy(&r, &a, 64); return r; }
static inline __m512 _mm512_cvtph_ps(__m256i a) {
    __m512 r;
    for (int i = 0; i < 16; i++) {
        _Float16 h;
        memcpy(&h, &a.h[i], 2);
        r.f[i] = (float)h;
    }
    return r;
}
static inline __m512i _mm512_cvtepu16_epi32(__m256i a) { __m512i r; for (int i = 0; i < 16; i++) r.u[i] = a.h[i]; return r; }
static inline __m512 _mm512_permutexvar_ps(__m512i index, __m512 a) {
    __m512 r;
    for (int i = 0; i < 16; i++) r.f[i] = a.f[index.u[i] & 15];
    return r;
}

static inline __m512i _mm512_and_si512(__m512i a, __m512i b) { for (int i = 0; i < 16; i++) a.u[i] &= b.u[i]; return a; }
static inline __m512i _mm512_or_si512(__m512i a, __m512i b) { for (int i = 0; i < 16; i++) a.u[i] |= b.u[i]; return a; }
static inline __m512i _mm512_add_epi32(__m512i a, __m512i b) { for (int i = 0; i < 16; i++) a.u[i] += b.u[i]; return a; }
static inline __m512i _mm512_maskz_mov_epi8(__mmask64 k, __m512i a) { for (int i = 0; i < 64; i++) a.b[i] = k >> i & 1 ? a.b[i] : 0; return a; }
static inline __m512i _mm512_sub_epi32(__m512i a, __m512i b) { for (int i = 0; i < 16; i++) a.u[i] -= b.u[i]; return a; }
static inline __m512i _mm512_slli_epi32(__m512i a, unsigned n) { for (int i = 0; i < 16; i++) a.u[i] = n > 31 ? 0 : a.u[i] << n; return a; }
static inline __m512i _mm512_srli_epi16(__m512i a, unsigned n) {
    for (int i = 0; i < 32; i++) a.h[i] = n > 15 ? 0 : (uint16_t)(a.h[i] >> n);
    return a;
}
static inline __m512i _mm512_srl_epi32(__m512i a, __m128i count) {
    for (int i = 0; i < 16; i++) a.u[i] = count.q[0] > 31 ? 0 : a.u[i] >> count.q[0];
    return a;
}
static inline __m512i _mm512_srlv_epi32(__m512i a, __m512i count) {
    for (int i = 0; i < 16; i++) a.u[i] = count.u[i] > 31 ? 0 : a.u[i] >> count.u[i];
    return a;
}
/// VNNI: each 32-bit lane plus the 4 products of a's unsigned bytes and b's signed bytes.
static inline __m512i _mm512_dpbusd_epi32(__m512i src, __m512i a, __m512i b) {
    for (int i = 0; i < 16; i++) {
        int32_t sum = 0;
        for (int j = 0; j < 4; j++) sum += (int32_t)a.b[4 * i + j] * (int32_t)b.s[4 * i + j];
        src.u[i] += (uint32_t)sum;
    }
    return src;
}

#endif
