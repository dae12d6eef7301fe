#include "mmoe_kernels.h"
#include <stdlib.h>
#include <string.h>

/* The AVX-512 path over the same 16-column panels as the AVX2 kernel: a 12 x 32 tile (two
 * adjacent panels, 24 zmm accumulators, one broadcast of a per row and step) for batches,
 * a 1 x 16 row kernel with four accumulators for batch 1. Chosen at run time only. */

#define NR 16
#define MR 12
#define KC 256
#define MC 240

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

/* The 6 x 64 tile for groups of four full panels: on unless MMOE_AVX512_TILE=12x32 (kept to
 * compare the two, e.g. with Benchmarks/gemm_shapes.sh, on CPUs not measured yet). */
static int wide_tiles(void) {
    static int state = -1;
    int seen = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    if (seen >= 0) return seen;
    const char *choice = getenv("MMOE_AVX512_TILE");
    int wide = !(choice != NULL && strcmp(choice, "12x32") == 0);
    __atomic_store_n(&state, wide, __ATOMIC_RELEASE);
    return wide;
}

int mmoe_avx512_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
}

/* Sixteen weights of a panel row: float32, or bfloat16 widened exactly. */
static inline __attribute__((always_inline, target("avx512f"))) __m512 load_b16(const void *bp, size_t index, int bf16) {
    if (bf16) {
        __m256i half = _mm256_loadu_si256((const __m256i *)(const void *)((const unsigned short *)bp + index));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
    }
    return _mm512_loadu_ps((const float *)bp + index);
}

/* MR rows x (panels * 16) columns; panels is 1 or 2 (a compile-time constant after inlining).
 * bp0/bp1 point at row k0 of each panel; out/ldo receive the tile. */
static inline __attribute__((always_inline, target("avx512f")))
void tile512_body(int kc, const float *a, int lda, const void *bp0, const void *bp1, float *out, int ldo, int accumulate, int last,
                  const float *bias, int relu0, int relu1, int bf16, int panels) {
    __m512 c[MR][2];
#pragma clang loop unroll(full)
    for (int i = 0; i < MR; i++) {
#pragma clang loop unroll(full)
        for (int j = 0; j < 2; j++) {
            if (j < panels) c[i][j] = accumulate ? _mm512_loadu_ps(out + (size_t)i * ldo + j * NR) : _mm512_setzero_ps();
        }
    }
    for (int kk = 0; kk < kc; kk++) {
        __m512 b0 = load_b16(bp0, (size_t)kk * NR, bf16);
        __m512 b1 = panels == 2 ? load_b16(bp1, (size_t)kk * NR, bf16) : b0;
#pragma clang loop unroll(full)
        for (int i = 0; i < MR; i++) {
            __m512 x = _mm512_set1_ps(a[(size_t)i * lda + kk]);
            c[i][0] = _mm512_fmadd_ps(x, b0, c[i][0]);
            if (panels == 2) c[i][1] = _mm512_fmadd_ps(x, b1, c[i][1]);
        }
    }
    if (last) {
        __m512 z = _mm512_setzero_ps();
#pragma clang loop unroll(full)
        for (int j = 0; j < 2; j++) {
            if (j >= panels) continue;
            __m512 b = bias ? _mm512_loadu_ps(bias + j * NR) : z;
            int relu = j == 0 ? relu0 : relu1;
#pragma clang loop unroll(full)
            for (int i = 0; i < MR; i++) {
                __m512 v = _mm512_add_ps(c[i][j], b);
                c[i][j] = relu ? _mm512_max_ps(z, v) : v; /* max(0, NaN) is NaN, as in PyTorch */
            }
        }
    }
#pragma clang loop unroll(full)
    for (int i = 0; i < MR; i++) {
#pragma clang loop unroll(full)
        for (int j = 0; j < 2; j++) {
            if (j < panels) _mm512_storeu_ps(out + (size_t)i * ldo + j * NR, c[i][j]);
        }
    }
}

__attribute__((target("avx512f")))
static void tile512(int kc, const float *a, int lda, const void *bp0, const void *bp1, float *out, int ldo, int accumulate, int last,
                    const float *bias, int relu0, int relu1, int bf16, int panels) {
    if (panels == 2) {
        if (bf16) tile512_body(kc, a, lda, bp0, bp1, out, ldo, accumulate, last, bias, relu0, relu1, 1, 2);
        else tile512_body(kc, a, lda, bp0, bp1, out, ldo, accumulate, last, bias, relu0, relu1, 0, 2);
    } else {
        if (bf16) tile512_body(kc, a, lda, bp0, bp0, out, ldo, accumulate, last, bias, relu0, relu0, 1, 1);
        else tile512_body(kc, a, lda, bp0, bp0, out, ldo, accumulate, last, bias, relu0, relu0, 0, 1);
    }
}

/* R rows (1 to 6, a compile-time constant after inlining) x four adjacent full panels (64
 * columns): 24 zmm accumulators, four panel loads and R broadcasts per step of k. */
static inline __attribute__((always_inline, target("avx512f")))
void tile6x64_body(int rows, int kc, const float *a, int lda, const void *bp, size_t panel_stride, float *out, int ldo, int accumulate,
                   int last, const float *bias, const unsigned char *relu, int bf16) {
    __m512 c[6][4];
#pragma clang loop unroll(full)
    for (int i = 0; i < 6; i++) {
#pragma clang loop unroll(full)
        for (int j = 0; j < 4; j++) {
            if (i < rows) c[i][j] = accumulate ? _mm512_loadu_ps(out + (size_t)i * ldo + j * NR) : _mm512_setzero_ps();
        }
    }
    const unsigned char *b = (const unsigned char *)bp;
    size_t step = panel_stride * (bf16 ? 2 : 4);
    for (int kk = 0; kk < kc; kk++) {
        __m512 w0 = load_b16(b, (size_t)kk * NR, bf16);
        __m512 w1 = load_b16(b + step, (size_t)kk * NR, bf16);
        __m512 w2 = load_b16(b + 2 * step, (size_t)kk * NR, bf16);
        __m512 w3 = load_b16(b + 3 * step, (size_t)kk * NR, bf16);
#pragma clang loop unroll(full)
        for (int i = 0; i < 6; i++) {
            if (i >= rows) continue;
            __m512 x = _mm512_set1_ps(a[(size_t)i * lda + kk]);
            c[i][0] = _mm512_fmadd_ps(x, w0, c[i][0]);
            c[i][1] = _mm512_fmadd_ps(x, w1, c[i][1]);
            c[i][2] = _mm512_fmadd_ps(x, w2, c[i][2]);
            c[i][3] = _mm512_fmadd_ps(x, w3, c[i][3]);
        }
    }
    if (last) {
        __m512 z = _mm512_setzero_ps();
#pragma clang loop unroll(full)
        for (int j = 0; j < 4; j++) {
            __m512 bj = bias ? _mm512_loadu_ps(bias + j * NR) : z;
            int r = relu ? relu[j] : 0;
#pragma clang loop unroll(full)
            for (int i = 0; i < 6; i++) {
                if (i >= rows) continue;
                __m512 v = _mm512_add_ps(c[i][j], bj);
                c[i][j] = r ? _mm512_max_ps(z, v) : v; /* max(0, NaN) is NaN, as in PyTorch */
            }
        }
    }
#pragma clang loop unroll(full)
    for (int i = 0; i < 6; i++) {
#pragma clang loop unroll(full)
        for (int j = 0; j < 4; j++) {
            if (i < rows) _mm512_storeu_ps(out + (size_t)i * ldo + j * NR, c[i][j]);
        }
    }
}

/* Rows [0, m) x panels [p, p + 4) (all four full): 6-row tiles, then the 1-5 rows left. */
__attribute__((target("avx512f")))
static void panels4(int m, int kc, const float *a, int lda, const void *bp, size_t panel_stride, float *c, int ldc, int accumulate, int last,
                    const float *bias, const unsigned char *relu, int bf16) {
    int r = 0;
    for (; r + 6 <= m; r += 6) {
        const float *ap = a + (size_t)r * lda;
        float *cp = c + (size_t)r * ldc;
        if (bf16) tile6x64_body(6, kc, ap, lda, bp, panel_stride, cp, ldc, accumulate, last, bias, relu, 1);
        else tile6x64_body(6, kc, ap, lda, bp, panel_stride, cp, ldc, accumulate, last, bias, relu, 0);
    }
    const float *ap = a + (size_t)r * lda;
    float *cp = c + (size_t)r * ldc;
    switch (m - r) {
#define REST(R)                                                                                                                  \
    case R:                                                                                                                      \
        if (bf16) tile6x64_body(R, kc, ap, lda, bp, panel_stride, cp, ldc, accumulate, last, bias, relu, 1);                     \
        else tile6x64_body(R, kc, ap, lda, bp, panel_stride, cp, ldc, accumulate, last, bias, relu, 0);                          \
        break;
        REST(1) REST(2) REST(3) REST(4) REST(5)
#undef REST
    default: break;
    }
}

/* One row (batch-1 GEMV) over one panel: four accumulators hide the FMA latency. */
static inline __attribute__((always_inline, target("avx512f")))
void row512_body(int kc, const float *a, const void *bp, float *out, int accumulate, int last, const float *bias, int relu, int valid, int bf16) {
    __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps(), c2 = _mm512_setzero_ps(), c3 = _mm512_setzero_ps();
    int kk = 0;
    for (; kk + 3 < kc; kk += 4) {
        c0 = _mm512_fmadd_ps(_mm512_set1_ps(a[kk]), load_b16(bp, (size_t)kk * NR, bf16), c0);
        c1 = _mm512_fmadd_ps(_mm512_set1_ps(a[kk + 1]), load_b16(bp, (size_t)(kk + 1) * NR, bf16), c1);
        c2 = _mm512_fmadd_ps(_mm512_set1_ps(a[kk + 2]), load_b16(bp, (size_t)(kk + 2) * NR, bf16), c2);
        c3 = _mm512_fmadd_ps(_mm512_set1_ps(a[kk + 3]), load_b16(bp, (size_t)(kk + 3) * NR, bf16), c3);
    }
    for (; kk < kc; kk++) c0 = _mm512_fmadd_ps(_mm512_set1_ps(a[kk]), load_b16(bp, (size_t)kk * NR, bf16), c0);
    __m512 sum = _mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3));
    __mmask16 mask = (__mmask16)(valid >= 16 ? 0xFFFF : ((1u << valid) - 1));
    if (accumulate) sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask, out));
    if (last) {
        if (bias) sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask, bias));
        if (relu) sum = _mm512_max_ps(_mm512_setzero_ps(), sum);
    }
    _mm512_mask_storeu_ps(out, mask, sum);
}

__attribute__((target("avx512f")))
static void row512(int kc, const float *a, const void *bp, float *out, int accumulate, int last, const float *bias, int relu, int valid, int bf16) {
    if (bf16) row512_body(kc, a, bp, out, accumulate, last, bias, relu, valid, 1);
    else row512_body(kc, a, bp, out, accumulate, last, bias, relu, valid, 0);
}

void mmoe_gemm_packed_panels_avx512(int m, int n, int k, const float *a, int lda, const void *packed, int bf16,
                                    const float *bias, const unsigned char *relus, float *c, int ldc, int panel_begin, int panel_end) {
    size_t element = bf16 ? 2 : 4;
    float abuf[MR * KC];
    float cbuf[MR * 2 * NR];
    float biasbuf[2 * NR];
    if (m > MC) {
        for (int r0 = 0; r0 < m; r0 += MC) {
            int mc = m - r0 < MC ? m - r0 : MC;
            mmoe_gemm_packed_panels_avx512(mc, n, k, a + (size_t)r0 * lda, lda, packed, bf16, bias, relus, c + (size_t)r0 * ldc, ldc,
                                           panel_begin, panel_end);
        }
        return;
    }
    for (int k0 = 0; k0 < k; k0 += KC) {
        int kc = k - k0 < KC ? k - k0 : KC;
        int accumulate = k0 > 0;
        int last = k0 + kc >= k;
        if (m < 4) {
            /* Batch 1 to 3: one row at a time over every panel. */
            for (int p = panel_begin; p < panel_end; p++) {
                const void *bp = (const unsigned char *)packed + ((size_t)p * NR * k + (size_t)k0 * NR) * element;
                int col = p * NR;
                int valid = n - col < NR ? n - col : NR;
                for (int r = 0; r < m; r++)
                    row512(kc, a + (size_t)r * lda + k0, bp, c + (size_t)r * ldc + col, accumulate, last, bias ? bias + col : NULL,
                           relus ? relus[p] : 0, valid, bf16);
            }
            continue;
        }
        int p = panel_begin;
        /* Groups of four full panels on the 6 x 64 tile (fewer broadcasts per multiply-add
         * than the 12 x 32 tile; Docs/PERFORMANCE.md), unless MMOE_AVX512_TILE=12x32. */
        if (wide_tiles()) {
            for (; p + 4 <= panel_end && (p + 4) * NR <= n; p += 4) {
                const void *bp = (const unsigned char *)packed + ((size_t)p * NR * k + (size_t)k0 * NR) * element;
                panels4(m, kc, a + k0, lda, bp, (size_t)NR * k, c + p * NR, ldc, accumulate, last, bias ? bias + p * NR : NULL,
                        relus ? relus + p : NULL, bf16);
            }
        }
        for (; p < panel_end; p += 2) {
            int panels = p + 1 < panel_end ? 2 : 1;
            const void *bp0 = (const unsigned char *)packed + ((size_t)p * NR * k + (size_t)k0 * NR) * element;
            const void *bp1 = (const unsigned char *)packed + ((size_t)(p + panels - 1) * NR * k + (size_t)k0 * NR) * element;
            int col = p * NR;
            int width = panels * NR;
            int valid = n - col < width ? n - col : width;
            int relu0 = relus ? relus[p] : 0;
            int relu1 = relus ? relus[p + panels - 1] : 0;
            const float *pbias = NULL;
            if (bias) {
                if (valid == width) {
                    pbias = bias + col;
                } else {
                    memset(biasbuf, 0, sizeof biasbuf);
                    memcpy(biasbuf, bias + col, (size_t)valid * sizeof(float));
                    pbias = biasbuf;
                }
            }
            int r = 0;
            for (; r + MR <= m; r += MR) {
                const float *ap = a + (size_t)r * lda + k0;
                float *cp = c + (size_t)r * ldc + col;
                if (valid == width) {
                    tile512(kc, ap, lda, bp0, bp1, cp, ldc, accumulate, last, pbias, relu0, relu1, bf16, panels);
                } else {
                    for (int i = 0; i < MR; i++)
                        for (int j = 0; j < width; j++) cbuf[i * width + j] = (accumulate && j < valid) ? cp[(size_t)i * ldc + j] : 0.0f;
                    tile512(kc, ap, lda, bp0, bp1, cbuf, width, accumulate, last, pbias, relu0, relu1, bf16, panels);
                    for (int i = 0; i < MR; i++) memcpy(cp + (size_t)i * ldc, cbuf + i * width, (size_t)valid * sizeof(float));
                }
            }
            if (r < m) {
                int rest = m - r;
                memset(abuf, 0, sizeof(float) * MR * (size_t)kc);
                for (int i = 0; i < rest; i++) memcpy(abuf + i * kc, a + (size_t)(r + i) * lda + k0, (size_t)kc * sizeof(float));
                float *cp = c + (size_t)r * ldc + col;
                for (int i = 0; i < MR; i++)
                    for (int j = 0; j < width; j++) cbuf[i * width + j] = (accumulate && i < rest && j < valid) ? cp[(size_t)i * ldc + j] : 0.0f;
                tile512(kc, abuf, kc, bp0, bp1, cbuf, width, accumulate, last, pbias, relu0, relu1, bf16, panels);
                for (int i = 0; i < rest; i++) memcpy(cp + (size_t)i * ldc, cbuf + i * width, (size_t)valid * sizeof(float));
            }
        }
    }
}

#else

int mmoe_avx512_supported(void) { return 0; }

void mmoe_gemm_packed_panels_avx512(int m, int n, int k, const float *a, int lda, const void *packed, int bf16,
                                    const float *bias, const unsigned char *relus, float *c, int ldc, int panel_begin, int panel_end) {
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)packed; (void)bf16; (void)bias; (void)relus; (void)c; (void)ldc;
    (void)panel_begin; (void)panel_end;
}
#endif
