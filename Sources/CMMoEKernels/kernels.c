#define _GNU_SOURCE
#include "mmoe_kernels.h"
#include <string.h>
#if defined(__linux__)
#include <sched.h>
#endif

#define NR 16
#define MR 6
#define KC 512
#define MC 120

int mmoe_current_cpu(void) {
#if defined(__linux__)
    return sched_getcpu();
#else
    return -1;
#endif
}

size_t mmoe_packed_size(int k, int n) {
    size_t panels = (size_t)(n + NR - 1) / NR;
    return panels * NR * (size_t)k;
}

/* Packs columns [k0, k1) of one panel (rows of w from `row0`, `rows` of them) with scalar
 * code; returns non-zero when a value is infinite or NaN. */
static unsigned int pack_panel_scalar(const unsigned char *bytes, int k, int row0, int rows, int k0, int k1, const float *scale, float *dst) {
    unsigned int nonfinite = 0;
    for (int kk = k0; kk < k1; kk++) {
        float *out = dst + (size_t)kk * NR;
        for (int j = 0; j < rows; j++) {
            unsigned int bits;
            memcpy(&bits, bytes + ((size_t)(row0 + j) * k + kk) * 4, 4);
            nonfinite |= (bits & 0x7F800000u) == 0x7F800000u;
            float value;
            memcpy(&value, &bits, 4);
            out[j] = scale ? value * scale[row0 + j] : value;
        }
        for (int j = rows; j < NR; j++) out[j] = 0.0f;
    }
    return nonfinite;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

int mmoe_kernels_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* One MR x NR tile over kc values of k. a points at row 0, column k0 (stride lda); bp at the
 * panel's row k0. out/ldo receive the tile; when accumulate is set the tile is added to what
 * out holds. The epilogue (bias, relu) runs when last is set. */
/* A full 16-row panel, 8 values of k at a time: two 8x8 transposes per step. Returns the
 * first k not packed (the scalar code does the rest) and sets *nonfinite. */
__attribute__((target("avx2,fma")))
static int pack_panel_avx2(const unsigned char *bytes, int k, int row0, const float *scale, float *dst, unsigned int *nonfinite) {
    const __m256i exponent = _mm256_set1_epi32(0x7F800000);
    __m256i bad = _mm256_setzero_si256();
    __m256 s0 = scale ? _mm256_loadu_ps(scale + row0) : _mm256_set1_ps(1.0f);
    __m256 s1 = scale ? _mm256_loadu_ps(scale + row0 + 8) : _mm256_set1_ps(1.0f);
    int kk = 0;
    for (; kk + 8 <= k; kk += 8) {
        for (int half = 0; half < 2; half++) {
            __m256 r[8];
            for (int j = 0; j < 8; j++) {
                r[j] = _mm256_loadu_ps((const float *)(const void *)(bytes + ((size_t)(row0 + half * 8 + j) * k + kk) * 4));
                bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(r[j]), exponent), exponent));
            }
            __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
            __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
            __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
            __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 c[8];
            c[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
            c[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
            c[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
            c[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
            c[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
            c[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
            c[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
            c[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
            __m256 factor = half ? s1 : s0;
            for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + (size_t)(kk + i) * NR + half * 8, scale ? _mm256_mul_ps(c[i], factor) : c[i]);
        }
    }
    *nonfinite |= _mm256_movemask_epi8(bad) != 0;
    return kk;
}

static int mmoe_pack_fast(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
}

/* The MR x NR tile over a float32 panel. */
__attribute__((target("avx2,fma")))
static void tile(int kc, const float *a, int lda, const float *bp, float *out, int ldo, int accumulate, int last, const float *bias, int relu) {
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    if (accumulate) {
        c00 = _mm256_loadu_ps(out + 0 * ldo); c01 = _mm256_loadu_ps(out + 0 * ldo + 8);
        c10 = _mm256_loadu_ps(out + 1 * ldo); c11 = _mm256_loadu_ps(out + 1 * ldo + 8);
        c20 = _mm256_loadu_ps(out + 2 * ldo); c21 = _mm256_loadu_ps(out + 2 * ldo + 8);
        c30 = _mm256_loadu_ps(out + 3 * ldo); c31 = _mm256_loadu_ps(out + 3 * ldo + 8);
        c40 = _mm256_loadu_ps(out + 4 * ldo); c41 = _mm256_loadu_ps(out + 4 * ldo + 8);
        c50 = _mm256_loadu_ps(out + 5 * ldo); c51 = _mm256_loadu_ps(out + 5 * ldo + 8);
    } else {
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
    }
    const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda, *a4 = a + 4 * lda, *a5 = a + 5 * lda;
    for (int kk = 0; kk < kc; kk++) {
        __m256 b0 = _mm256_loadu_ps(bp + (size_t)kk * NR);
        __m256 b1 = _mm256_loadu_ps(bp + (size_t)kk * NR + 8);
        __m256 x;
        x = _mm256_broadcast_ss(a0 + kk); c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
        x = _mm256_broadcast_ss(a1 + kk); c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);
        x = _mm256_broadcast_ss(a2 + kk); c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);
        x = _mm256_broadcast_ss(a3 + kk); c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);
        x = _mm256_broadcast_ss(a4 + kk); c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41);
        x = _mm256_broadcast_ss(a5 + kk); c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51);
    }
    if (last) {
        if (bias) {
            __m256 b0 = _mm256_loadu_ps(bias), b1 = _mm256_loadu_ps(bias + 8);
            c00 = _mm256_add_ps(c00, b0); c01 = _mm256_add_ps(c01, b1); c10 = _mm256_add_ps(c10, b0); c11 = _mm256_add_ps(c11, b1);
            c20 = _mm256_add_ps(c20, b0); c21 = _mm256_add_ps(c21, b1); c30 = _mm256_add_ps(c30, b0); c31 = _mm256_add_ps(c31, b1);
            c40 = _mm256_add_ps(c40, b0); c41 = _mm256_add_ps(c41, b1); c50 = _mm256_add_ps(c50, b0); c51 = _mm256_add_ps(c51, b1);
        }
        if (relu) {
            /* max(0, x) with 0 first: a NaN x stays NaN, as PyTorch's ReLU keeps it. */
            __m256 z = _mm256_setzero_ps();
            c00 = _mm256_max_ps(z, c00); c01 = _mm256_max_ps(z, c01); c10 = _mm256_max_ps(z, c10); c11 = _mm256_max_ps(z, c11);
            c20 = _mm256_max_ps(z, c20); c21 = _mm256_max_ps(z, c21); c30 = _mm256_max_ps(z, c30); c31 = _mm256_max_ps(z, c31);
            c40 = _mm256_max_ps(z, c40); c41 = _mm256_max_ps(z, c41); c50 = _mm256_max_ps(z, c50); c51 = _mm256_max_ps(z, c51);
        }
    }
    _mm256_storeu_ps(out + 0 * ldo, c00); _mm256_storeu_ps(out + 0 * ldo + 8, c01);
    _mm256_storeu_ps(out + 1 * ldo, c10); _mm256_storeu_ps(out + 1 * ldo + 8, c11);
    _mm256_storeu_ps(out + 2 * ldo, c20); _mm256_storeu_ps(out + 2 * ldo + 8, c21);
    _mm256_storeu_ps(out + 3 * ldo, c30); _mm256_storeu_ps(out + 3 * ldo + 8, c31);
    _mm256_storeu_ps(out + 4 * ldo, c40); _mm256_storeu_ps(out + 4 * ldo + 8, c41);
    _mm256_storeu_ps(out + 5 * ldo, c50); _mm256_storeu_ps(out + 5 * ldo + 8, c51);
}

/* Stores a 1 x NR tile's sums (c0: columns 0-7, c1: 8-15): adds the partial sums already in
   `out` (`accumulate`), then on the last k block the bias and the ReLU. */
static inline __attribute__((always_inline, target("avx2,fma")))
void row_epilogue(__m256 c0, __m256 c1, float *out, int accumulate, int last, const float *bias, int relu, int valid) {
    if (valid == NR) {
        if (accumulate) {
            c0 = _mm256_add_ps(c0, _mm256_loadu_ps(out));
            c1 = _mm256_add_ps(c1, _mm256_loadu_ps(out + 8));
        }
        if (last) {
            if (bias) {
                c0 = _mm256_add_ps(c0, _mm256_loadu_ps(bias));
                c1 = _mm256_add_ps(c1, _mm256_loadu_ps(bias + 8));
            }
            if (relu) {
                c0 = _mm256_max_ps(_mm256_setzero_ps(), c0);
                c1 = _mm256_max_ps(_mm256_setzero_ps(), c1);
            }
        }
        _mm256_storeu_ps(out, c0);
        _mm256_storeu_ps(out + 8, c1);
        return;
    }
    float tmp[NR];
    _mm256_storeu_ps(tmp, c0);
    _mm256_storeu_ps(tmp + 8, c1);
    for (int j = 0; j < valid; j++) {
        float v = tmp[j] + (accumulate ? out[j] : 0.0f);
        if (last) {
            if (bias) v += bias[j];
            if (relu && v < 0) v = 0;
        }
        out[j] = v;
    }
}

/* A bfloat16 panel row (16 values, 32 bytes) read as eight 32-bit lanes: its even columns as
   float32 (each lane shifted left by 16) and its odd ones (each lane's low half cleared). */
static inline __attribute__((always_inline, target("avx2,fma"))) __m256 bf16_even(__m256i lanes) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(lanes, 16));
}

static inline __attribute__((always_inline, target("avx2,fma"))) __m256 bf16_odd(__m256i lanes) {
    return _mm256_castsi256_ps(_mm256_and_si256(lanes, _mm256_set1_epi32((int)0xFFFF0000u)));
}

static inline __attribute__((always_inline, target("avx2,fma"))) __m256i bf16_row(const unsigned short *row) {
    return _mm256_loadu_si256((const __m256i *)(const void *)row);
}

/* `row_epilogue` for sums kept by column parity (even: columns 0 2 .. 14, odd: 1 3 .. 15):
   interleaved back into column order first. */
static inline __attribute__((always_inline, target("avx2,fma")))
void row_epilogue_paired(__m256 even, __m256 odd, float *out, int accumulate, int last, const float *bias, int relu, int valid) {
    __m256 low = _mm256_unpacklo_ps(even, odd); /* 0 1 2 3 | 8 9 10 11 */
    __m256 up = _mm256_unpackhi_ps(even, odd);  /* 4 5 6 7 | 12 13 14 15 */
    row_epilogue(_mm256_permute2f128_ps(low, up, 0x20), _mm256_permute2f128_ps(low, up, 0x31), out, accumulate, last, bias, relu, valid);
}

/* The MR x NR tile over a bfloat16 panel, widened as in `row_tile_bf16`: one load and two
   operations give a panel row's even and odd columns as float32, and each row keeps an even
   and an odd accumulator (the same twelve registers as the float32 tile). */
__attribute__((target("avx2,fma")))
static void tile_bf16(int kc, const float *a, int lda, const unsigned short *bp, float *out, int ldo, int accumulate, int last, const float *bias,
                      int relu) {
    __m256 e[MR], o[MR];
    for (int i = 0; i < MR; i++) e[i] = o[i] = _mm256_setzero_ps();
    const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda, *a4 = a + 4 * lda, *a5 = a + 5 * lda;
    for (int kk = 0; kk < kc; kk++) {
        __m256i w = bf16_row(bp + (size_t)kk * NR);
        __m256 we = bf16_even(w), wo = bf16_odd(w);
        __m256 x;
        x = _mm256_broadcast_ss(a0 + kk); e[0] = _mm256_fmadd_ps(x, we, e[0]); o[0] = _mm256_fmadd_ps(x, wo, o[0]);
        x = _mm256_broadcast_ss(a1 + kk); e[1] = _mm256_fmadd_ps(x, we, e[1]); o[1] = _mm256_fmadd_ps(x, wo, o[1]);
        x = _mm256_broadcast_ss(a2 + kk); e[2] = _mm256_fmadd_ps(x, we, e[2]); o[2] = _mm256_fmadd_ps(x, wo, o[2]);
        x = _mm256_broadcast_ss(a3 + kk); e[3] = _mm256_fmadd_ps(x, we, e[3]); o[3] = _mm256_fmadd_ps(x, wo, o[3]);
        x = _mm256_broadcast_ss(a4 + kk); e[4] = _mm256_fmadd_ps(x, we, e[4]); o[4] = _mm256_fmadd_ps(x, wo, o[4]);
        x = _mm256_broadcast_ss(a5 + kk); e[5] = _mm256_fmadd_ps(x, we, e[5]); o[5] = _mm256_fmadd_ps(x, wo, o[5]);
    }
    for (int i = 0; i < MR; i++) row_epilogue_paired(e[i], o[i], out + (size_t)i * ldo, accumulate, last, bias, relu, NR);
}

/* A 1 x NR tile over a float32 panel (batch-1 GEMV rows). */
__attribute__((target("avx2,fma")))
static void row_tile_f32(int kc, const float *a, const float *bp, float *out, int accumulate, int last, const float *bias, int relu,
                         int valid) {
    /* Eight accumulators (four k steps x two halves of the panel): a multiply-add takes four
       cycles and two issue per cycle, so fewer chains leave the FMA units waiting. */
    __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps(), d0 = _mm256_setzero_ps(), d1 = _mm256_setzero_ps();
    __m256 e0 = _mm256_setzero_ps(), e1 = _mm256_setzero_ps(), f0 = _mm256_setzero_ps(), f1 = _mm256_setzero_ps();
    int kk = 0;
    for (; kk + 3 < kc; kk += 4) {
        __m256 x = _mm256_broadcast_ss(a + kk), y = _mm256_broadcast_ss(a + kk + 1);
        __m256 z = _mm256_broadcast_ss(a + kk + 2), w = _mm256_broadcast_ss(a + kk + 3);
        c0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + (size_t)kk * NR), c0);
        c1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + (size_t)kk * NR + 8), c1);
        d0 = _mm256_fmadd_ps(y, _mm256_loadu_ps(bp + (size_t)(kk + 1) * NR), d0);
        d1 = _mm256_fmadd_ps(y, _mm256_loadu_ps(bp + (size_t)(kk + 1) * NR + 8), d1);
        e0 = _mm256_fmadd_ps(z, _mm256_loadu_ps(bp + (size_t)(kk + 2) * NR), e0);
        e1 = _mm256_fmadd_ps(z, _mm256_loadu_ps(bp + (size_t)(kk + 2) * NR + 8), e1);
        f0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(bp + (size_t)(kk + 3) * NR), f0);
        f1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(bp + (size_t)(kk + 3) * NR + 8), f1);
    }
    for (; kk < kc; kk++) {
        __m256 x = _mm256_broadcast_ss(a + kk);
        c0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + (size_t)kk * NR), c0);
        c1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + (size_t)kk * NR + 8), c1);
    }
    c0 = _mm256_add_ps(_mm256_add_ps(c0, d0), _mm256_add_ps(e0, f0));
    c1 = _mm256_add_ps(_mm256_add_ps(c1, d1), _mm256_add_ps(e1, f1));
    row_epilogue(c0, c1, out, accumulate, last, bias, relu, valid);
}

/* The 1 x NR tile over a bfloat16 panel. A panel row of 16 bfloat16 values is one 32-byte
   load; as eight 32-bit lanes, shifting each left by 16 gives the even columns as float32 and
   masking off the low half the odd ones: one load and two operations widen 16 weights, where
   widening each half separately took two loads and four operations (zero-extend, shift), which
   kept batch 1 of a bfloat16 model bound by those operations (AMD EPYC, AVX2: half the
   benchmark model's first layer 12-13 us before, 7-11 us after). The even and odd sums are
   interleaved back into column order once, at the end. */
__attribute__((target("avx2,fma")))
static void row_tile_bf16(int kc, const float *a, const unsigned short *bp, float *out, int accumulate, int last, const float *bias,
                          int relu, int valid) {
    __m256 e0 = _mm256_setzero_ps(), o0 = _mm256_setzero_ps(), e1 = _mm256_setzero_ps(), o1 = _mm256_setzero_ps();
    __m256 e2 = _mm256_setzero_ps(), o2 = _mm256_setzero_ps(), e3 = _mm256_setzero_ps(), o3 = _mm256_setzero_ps();
    int kk = 0;
    for (; kk + 3 < kc; kk += 4) {
        __m256i w0 = bf16_row(bp + (size_t)kk * NR), w1 = bf16_row(bp + (size_t)(kk + 1) * NR);
        __m256i w2 = bf16_row(bp + (size_t)(kk + 2) * NR), w3 = bf16_row(bp + (size_t)(kk + 3) * NR);
        __m256 x0 = _mm256_broadcast_ss(a + kk), x1 = _mm256_broadcast_ss(a + kk + 1);
        __m256 x2 = _mm256_broadcast_ss(a + kk + 2), x3 = _mm256_broadcast_ss(a + kk + 3);
        e0 = _mm256_fmadd_ps(x0, bf16_even(w0), e0);
        o0 = _mm256_fmadd_ps(x0, bf16_odd(w0), o0);
        e1 = _mm256_fmadd_ps(x1, bf16_even(w1), e1);
        o1 = _mm256_fmadd_ps(x1, bf16_odd(w1), o1);
        e2 = _mm256_fmadd_ps(x2, bf16_even(w2), e2);
        o2 = _mm256_fmadd_ps(x2, bf16_odd(w2), o2);
        e3 = _mm256_fmadd_ps(x3, bf16_even(w3), e3);
        o3 = _mm256_fmadd_ps(x3, bf16_odd(w3), o3);
    }
    for (; kk < kc; kk++) {
        __m256i w0 = bf16_row(bp + (size_t)kk * NR);
        __m256 x0 = _mm256_broadcast_ss(a + kk);
        e0 = _mm256_fmadd_ps(x0, bf16_even(w0), e0);
        o0 = _mm256_fmadd_ps(x0, bf16_odd(w0), o0);
    }
    row_epilogue_paired(_mm256_add_ps(_mm256_add_ps(e0, e1), _mm256_add_ps(e2, e3)), _mm256_add_ps(_mm256_add_ps(o0, o1), _mm256_add_ps(o2, o3)),
                        out, accumulate, last, bias, relu, valid);
}

__attribute__((target("avx2,fma")))
static void row_tile(int kc, const float *a, const void *bp, float *out, int accumulate, int last, const float *bias, int relu, int valid, int bf16) {
    if (bf16) {
        row_tile_bf16(kc, a, (const unsigned short *)bp, out, accumulate, last, bias, relu, valid);
    } else {
        row_tile_f32(kc, a, (const float *)bp, out, accumulate, last, bias, relu, valid);
    }
}

/* One MR x NR tile over either kind of panel. */
static inline __attribute__((always_inline)) void any_tile(int kc, const float *a, int lda, const void *bp, float *out, int ldo, int accumulate, int last, const float *bias, int relu,
                     int bf16) {
    if (bf16) {
        tile_bf16(kc, a, lda, (const unsigned short *)bp, out, ldo, accumulate, last, bias, relu);
    } else {
        tile(kc, a, lda, (const float *)bp, out, ldo, accumulate, last, bias, relu);
    }
}

void mmoe_gemm_packed_panels(int m, int n, int k, const float *a, int lda, const void *packed, int bf16,
                             const float *bias, const unsigned char *relus, float *c, int ldc, int panel_begin, int panel_end) {
    size_t element = bf16 ? 2 : 4;
    float abuf[MR * KC];
    float cbuf[MR * NR];
    float biasbuf[NR];
    if (m > MC) {
        /* Row blocks keep the block of a in L2 while every panel passes over it. */
        for (int r0 = 0; r0 < m; r0 += MC) {
            int mc = m - r0 < MC ? m - r0 : MC;
            mmoe_gemm_packed_panels(mc, n, k, a + (size_t)r0 * lda, lda, packed, bf16, bias, relus, c + (size_t)r0 * ldc, ldc,
                                    panel_begin, panel_end);
        }
        return;
    }
    for (int k0 = 0; k0 < k; k0 += KC) {
        int kc = k - k0 < KC ? k - k0 : KC;
        int accumulate = k0 > 0;
        int last = k0 + kc >= k;
        for (int p = panel_begin; p < panel_end; p++) {
            const void *bp = (const unsigned char *)packed + ((size_t)p * NR * k + (size_t)k0 * NR) * element;
            int col = p * NR;
            int valid = n - col < NR ? n - col : NR;
            int relu = relus ? relus[p] : 0;
            const float *pbias = NULL;
            if (bias) {
                if (valid == NR) {
                    pbias = bias + col;
                } else {
                    memset(biasbuf, 0, sizeof biasbuf);
                    memcpy(biasbuf, bias + col, (size_t)valid * sizeof(float));
                    pbias = biasbuf;
                }
            }
            int r = 0;
            if (m < MR) {
                for (; r < m; r++) {
                    row_tile(kc, a + (size_t)r * lda + k0, bp, c + (size_t)r * ldc + col, accumulate, last, pbias, relu, valid, bf16);
                }
                continue;
            }
            for (; r + MR <= m; r += MR) {
                const float *ap = a + (size_t)r * lda + k0;
                float *cp = c + (size_t)r * ldc + col;
                if (valid == NR) {
                    any_tile(kc, ap, lda, bp, cp, ldc, accumulate, last, pbias, relu, bf16);
                } else {
                    for (int i = 0; i < MR; i++)
                        for (int j = 0; j < NR; j++) cbuf[i * NR + j] = (accumulate && j < valid) ? cp[(size_t)i * ldc + j] : 0.0f;
                    any_tile(kc, ap, lda, bp, cbuf, NR, accumulate, last, pbias, relu, bf16);
                    for (int i = 0; i < MR; i++) memcpy(cp + (size_t)i * ldc, cbuf + i * NR, (size_t)valid * sizeof(float));
                }
            }
            if (r < m) {
                int rest = m - r;
                memset(abuf, 0, sizeof(float) * MR * (size_t)kc);
                for (int i = 0; i < rest; i++) memcpy(abuf + i * kc, a + (size_t)(r + i) * lda + k0, (size_t)kc * sizeof(float));
                float *cp = c + (size_t)r * ldc + col;
                for (int i = 0; i < MR; i++)
                    for (int j = 0; j < NR; j++) cbuf[i * NR + j] = (accumulate && i < rest && j < valid) ? cp[(size_t)i * ldc + j] : 0.0f;
                any_tile(kc, abuf, kc, bp, cbuf, NR, accumulate, last, pbias, relu, bf16);
                for (int i = 0; i < rest; i++) memcpy(cp + (size_t)i * ldc, cbuf + i * NR, (size_t)valid * sizeof(float));
            }
        }
    }
}

#else

int mmoe_kernels_available(void) { return 0; }

static int pack_panel_avx2(const unsigned char *bytes, int k, int row0, const float *scale, float *dst, unsigned int *nonfinite) {
    (void)bytes; (void)k; (void)row0; (void)scale; (void)dst; (void)nonfinite;
    return 0;
}

static int mmoe_pack_fast(void) { return 0; }

void mmoe_gemm_packed_panels(int m, int n, int k, const float *a, int lda, const void *packed, int bf16,
                             const float *bias, const unsigned char *relu, float *c, int ldc, int panel_begin, int panel_end) {
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)packed; (void)bf16; (void)bias; (void)relu; (void)c; (void)ldc;
    (void)panel_begin; (void)panel_end;
}
#endif

long long mmoe_pack_bt(const void *w, int k, int n, const float *scale, float *packed) {
    const unsigned char *bytes = (const unsigned char *)w;
    int panels = (n + NR - 1) / NR;
    int fast = mmoe_pack_fast();
    unsigned int nonfinite = 0;
    for (int p = 0; p < panels; p++) {
        float *dst = packed + (size_t)p * NR * k;
        int rows = n - p * NR < NR ? n - p * NR : NR;
        int done = (fast && rows == NR) ? pack_panel_avx2(bytes, k, p * NR, scale, dst, &nonfinite) : 0;
        nonfinite |= pack_panel_scalar(bytes, k, p * NR, rows, done, k, scale, dst);
    }
    if (!nonfinite) return -1;
    for (size_t i = 0; i < (size_t)n * k; i++) {
        unsigned int bits;
        memcpy(&bits, bytes + i * 4, 4);
        if ((bits & 0x7F800000u) == 0x7F800000u) return (long long)i;
    }
    return -1;
}


void mmoe_gemm_packed(int m, int n, int k, const float *a, int lda, const void *packed, int bf16,
                      const float *bias, const unsigned char *relu, float *c, int ldc) {
    mmoe_gemm_packed_panels(m, n, k, a, lda, packed, bf16, bias, relu, c, ldc, 0, (n + NR - 1) / NR);
}

long long mmoe_pack_bt_bf16(const void *w, int k, int n, unsigned short *packed) {
    const unsigned char *bytes = (const unsigned char *)w;
    int panels = (n + NR - 1) / NR;
    long long first = -1;
    for (int p = 0; p < panels; p++) {
        unsigned short *dst = packed + (size_t)p * NR * k;
        int rows = n - p * NR < NR ? n - p * NR : NR;
        for (int j = 0; j < rows; j++) {
            const unsigned char *row = bytes + (size_t)(p * NR + j) * k * 2;
            for (int kk = 0; kk < k; kk++) {
                unsigned short bits;
                memcpy(&bits, row + (size_t)kk * 2, 2);
                if ((bits & 0x7F80u) == 0x7F80u) {
                    long long index = (long long)(p * NR + j) * k + kk;
                    if (first < 0 || index < first) first = index;
                }
                dst[(size_t)kk * NR + j] = bits;
            }
        }
        for (int j = rows; j < NR; j++)
            for (int kk = 0; kk < k; kk++) dst[(size_t)kk * NR + j] = 0;
    }
    return first;
}

/* ---- CRC-32C ------------------------------------------------------------------------------ */

/* Bitwise fallback (the table-driven Swift CRC32C in MMoECore is the fast portable one). */
static unsigned int crc32c_portable(unsigned int crc, const unsigned char *p, size_t n) {
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2")))
static unsigned int crc32c_hardware(unsigned int crc, const unsigned char *p, size_t n) {
    unsigned long long c = crc;
    while (n >= 8) {
        unsigned long long word;
        memcpy(&word, p, 8);
        c = _mm_crc32_u64(c, word);
        p += 8;
        n -= 8;
    }
    unsigned int c32 = (unsigned int)c;
    while (n--) c32 = _mm_crc32_u8(c32, *p++);
    return c32;
}

unsigned int mmoe_crc32c_update(unsigned int state, const void *bytes, size_t count) {
    return __builtin_cpu_supports("sse4.2") ? crc32c_hardware(state, (const unsigned char *)bytes, count)
                    : crc32c_portable(state, (const unsigned char *)bytes, count);
}
#else
unsigned int mmoe_crc32c_update(unsigned int state, const void *bytes, size_t count) {
    return crc32c_portable(state, (const unsigned char *)bytes, count);
}
#endif
