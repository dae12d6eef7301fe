#include "mmoe_kernels.h"
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* bfloat16 products with float32 accumulation for weights stored as bfloat16: activations are
 * rounded to bfloat16 (nearest even) block by block, weights are packed once in pairs along k
 * ("VNNI" order: for each 16-column panel and each pair of k, the 16 columns' two values side
 * by side, k padded to a multiple of 32). Batches of 16 rows and more run on AMX tiles
 * (TDPBF16PS, 32 x 32 output blocks) where the CPU and the kernel allow them; everything else
 * on AVX512-BF16 (VDPBF16PS). Chosen at run time only. A layer whose only readers are such
 * products may write its output as bfloat16 and the next layer read it as it is (half the
 * bytes through the caches, no rounding pass in between; the same values either way). */

#define NR 16
#define KP 32 /* k padding: one AMX tile row of bfloat16 */

size_t mmoe_vnni_size(int k, int n) {
    size_t kpad = ((size_t)k + KP - 1) / KP * KP;
    size_t panels = ((size_t)n + NR - 1) / NR;
    return panels * NR * kpad;
}

static inline unsigned short to_bf16(float value) {
    unsigned int bits;
    memcpy(&bits, &value, 4);
    bits += 0x7FFFu + ((bits >> 16) & 1u); /* round to nearest even (finite values only) */
    return (unsigned short)(bits >> 16);
}

long long mmoe_pack_vnni(const void *w, int w_bf16, int k, int n, unsigned short *packed) {
    size_t kpad = ((size_t)k + KP - 1) / KP * KP;
    size_t pairs = kpad / 2;
    int panels = (n + NR - 1) / NR;
    const unsigned char *bytes = (const unsigned char *)w;
    for (int p = 0; p < panels; p++) {
        unsigned short *panel = packed + (size_t)p * NR * kpad;
        for (size_t kp = 0; kp < pairs; kp++) {
            for (int col = 0; col < NR; col++) {
                for (int half = 0; half < 2; half++) {
                    size_t kk = kp * 2 + (size_t)half;
                    int out = p * NR + col;
                    unsigned short value = 0;
                    if (out < n && kk < (size_t)k) {
                        size_t index = (size_t)out * (size_t)k + kk;
                        if (w_bf16) {
                            unsigned short raw;
                            memcpy(&raw, bytes + index * 2, 2);
                            if ((raw & 0x7F80u) == 0x7F80u) return (long long)index;
                            value = raw;
                        } else {
                            float f;
                            memcpy(&f, bytes + index * 4, 4);
                            unsigned int bits;
                            memcpy(&bits, &f, 4);
                            if ((bits & 0x7F800000u) == 0x7F800000u) return (long long)index;
                            value = to_bf16(f);
                        }
                    }
                    panel[(kp * NR + (size_t)col) * 2 + (size_t)half] = value;
                }
            }
        }
    }
    return -1;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

static int support_state = -1;

int mmoe_bf16_compute_support(void) {
    int state = __atomic_load_n(&support_state, __ATOMIC_ACQUIRE);
    if (state >= 0) return state;
    int result = 0;
    unsigned int a, b, c, d;
    if (mmoe_avx512_supported() && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5))) {
        result |= 1; /* AVX512_BF16 */
        if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 22)) && (d & (1u << 24))) {
            /* AMX-BF16 and AMX-TILE: Linux hands out tile state only on request
             * (ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA). */
            if (syscall(SYS_arch_prctl, 0x1023, 18) == 0) result |= 2;
        }
    }
    /* MMOE_NO_AMX, or MMOE_KERNEL=bf16 (bfloat16 products on AVX512-BF16 only), turn AMX off. */
    const char *kernel = getenv("MMOE_KERNEL");
    if (getenv("MMOE_NO_AMX") != NULL || (kernel != NULL && strcasecmp(kernel, "bf16") == 0)) result &= ~2;
    __atomic_store_n(&support_state, result, __ATOMIC_RELEASE);
    return result;
}

/* Rows [0, rows) of a (leading dimension lda) to bfloat16, k padded with zeros to kpad, rows
 * padded with zero rows up to total. */
__attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl")))
static void convert_rows(const float *a, int lda, int rows, int total, int k, int kpad, unsigned short *out) {
    for (int r = 0; r < total; r++) {
        unsigned short *dst = out + (size_t)r * kpad;
        if (r >= rows) {
            memset(dst, 0, (size_t)kpad * 2);
            continue;
        }
        const float *src = a + (size_t)r * lda;
        int kk = 0;
        /* 32 values per instruction (VCVTNE2PS2BF16 puts its second operand in the low half). */
        for (; kk + 32 <= k; kk += 32) {
            __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + kk + 16), _mm512_loadu_ps(src + kk));
            _mm512_storeu_si512((void *)(dst + kk), (__m512i)v);
        }
        for (; kk + 16 <= k; kk += 16) {
            __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + kk));
            _mm256_storeu_si256((__m256i *)(void *)(dst + kk), (__m256i)v);
        }
        if (kk < k) {
            __mmask16 mask = (__mmask16)((1u << (k - kk)) - 1);
            __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, src + kk));
            _mm256_mask_storeu_epi16(dst + kk, mask, (__m256i)v);
            kk = k;
        }
        memset(dst + k, 0, (size_t)(kpad - k) * 2);
    }
}

/* Rows [0, rows) of bfloat16 activations into the scratch layout: k padded with zeros to kpad,
 * rows padded with zero rows up to total (blocks the kernels read whole). */
static void copy_rows16(const unsigned short *a16, int lda16, int rows, int total, int k, int kpad, unsigned short *out) {
    for (int r = 0; r < total; r++) {
        unsigned short *dst = out + (size_t)r * kpad;
        int copied = r < rows ? k : 0;
        if (copied) memcpy(dst, a16 + (size_t)r * lda16, (size_t)k * 2);
        memset(dst + copied, 0, (size_t)(kpad - copied) * 2);
    }
}

/* Thread-local scratch for the converted activations (grown, never shrunk). */
static __thread unsigned short *scratch = NULL;
static __thread size_t scratch_count = 0;

static unsigned short *scratch_for(size_t count) {
    if (count > scratch_count) {
        free(scratch);
        scratch = (unsigned short *)aligned_alloc(64, (count * 2 + 63) / 64 * 64);
        scratch_count = scratch ? count : 0;
    }
    return scratch;
}

/* Sixteen outputs of row `row` (the row's first float32 column at `c`, rows ldc floats apart)
 * at column `col`: as float32, or rounded to bfloat16 (nearest even, NaN stays NaN) at the
 * same column of the row counted in bfloat16 values. */
static inline __attribute__((always_inline, target("avx512f,avx512bf16,avx512bw,avx512vl"))) void
store16(__m512 v, __mmask16 mask, int half, float *c, size_t ldc, size_t row, int col) {
    if (half) {
        _mm256_mask_storeu_epi16((unsigned short *)c + row * 2 * ldc + col, mask, (__m256i)_mm512_cvtneps_pbh(v));
    } else {
        _mm512_mask_storeu_ps(c + row * ldc + col, mask, v);
    }
}

/* Rows of a float tile plus bias, ReLU (max(0, NaN) stays NaN, as in PyTorch), masked to the
 * valid columns, to column col of rows [0, rows) of c. */
static inline __attribute__((always_inline, target("avx512f,avx512bf16,avx512bw,avx512vl"))) void
store_tile(const float *tile, int ldt, int rows, int valid, const float *bias, int relu, int half, float *c, int ldc, int col) {
    __mmask16 mask = (__mmask16)(valid >= 16 ? 0xFFFF : ((1u << valid) - 1));
    __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias) : _mm512_setzero_ps();
    __m512 z = _mm512_setzero_ps();
    for (int i = 0; i < rows; i++) {
        __m512 v = _mm512_add_ps(_mm512_loadu_ps(tile + (size_t)i * ldt), b);
        if (relu) v = _mm512_max_ps(z, v);
        store16(v, mask, half, c, (size_t)ldc, (size_t)i, col);
    }
}

/* AVX512-BF16: 8 rows x two panels (16 accumulators, one broadcast pair of a per row and
 * pair of k); the activations (rows lda_ab apart) hold `rows` rounded up to 8 with zero rows. */
#define MRB 8
__attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl")))
static void block_dp(int rows, int n, int kpad, const unsigned short *ab, size_t lda_ab, const unsigned short *packed,
                     const float *bias, const unsigned char *relus, const unsigned char *out16, float *c, int ldc, int panel_begin,
                     int panel_end) {
    size_t pairs = (size_t)kpad / 2;
    float tile[MRB * 2 * NR];
    for (int p = panel_begin; p < panel_end; p += 2) {
        int two = p + 1 < panel_end;
        const unsigned short *b0 = packed + (size_t)p * NR * kpad;
        const unsigned short *b1 = two ? b0 + (size_t)NR * kpad : b0;
        for (int r = 0; r < rows; r += MRB) {
            __m512 acc[MRB][2];
#pragma clang loop unroll(full)
            for (int i = 0; i < MRB; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
            const unsigned short *ar = ab + (size_t)r * lda_ab;
            for (size_t kp = 0; kp < pairs; kp++) {
                __m512bh w0 = (__m512bh)_mm512_loadu_si512((const void *)(b0 + kp * 2 * NR));
                __m512bh w1 = (__m512bh)_mm512_loadu_si512((const void *)(b1 + kp * 2 * NR));
#pragma clang loop unroll(full)
                for (int i = 0; i < MRB; i++) {
                    int pair;
                    memcpy(&pair, ar + (size_t)i * lda_ab + kp * 2, 4);
                    __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
                    acc[i][0] = _mm512_dpbf16_ps(acc[i][0], x, w0);
                    acc[i][1] = _mm512_dpbf16_ps(acc[i][1], x, w1);
                }
            }
            int count = rows - r < MRB ? rows - r : MRB;
#pragma clang loop unroll(full)
            for (int i = 0; i < MRB; i++) {
                _mm512_storeu_ps(tile + i * 2 * NR, acc[i][0]);
                _mm512_storeu_ps(tile + i * 2 * NR + NR, acc[i][1]);
            }
            for (int j = 0; j < (two ? 2 : 1); j++) {
                int col = (p + j) * NR;
                int valid = n - col < NR ? n - col : NR;
                store_tile(tile + j * NR, 2 * NR, count, valid, bias ? bias + col : NULL, relus ? relus[p + j] : 0,
                           out16 ? out16[p + j] : 0, c + (size_t)r * ldc, ldc, col);
            }
        }
    }
}

/* Batch 1: one row, one panel at a time, four accumulators over the pairs of k. */
__attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl")))
static void row_dp(int n, int kpad, const unsigned short *ab, const unsigned short *packed, const float *bias,
                   const unsigned char *relus, const unsigned char *out16, float *c, int panel_begin, int panel_end) {
    size_t pairs = (size_t)kpad / 2; /* a multiple of 16 */
    for (int p = panel_begin; p < panel_end; p++) {
        const unsigned short *b = packed + (size_t)p * NR * kpad;
        __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps(), c2 = _mm512_setzero_ps(), c3 = _mm512_setzero_ps();
        for (size_t kp = 0; kp < pairs; kp += 4) {
            int x0, x1, x2, x3;
            memcpy(&x0, ab + kp * 2, 4);
            memcpy(&x1, ab + kp * 2 + 2, 4);
            memcpy(&x2, ab + kp * 2 + 4, 4);
            memcpy(&x3, ab + kp * 2 + 6, 4);
            c0 = _mm512_dpbf16_ps(c0, (__m512bh)_mm512_set1_epi32(x0), (__m512bh)_mm512_loadu_si512((const void *)(b + kp * 2 * NR)));
            c1 = _mm512_dpbf16_ps(c1, (__m512bh)_mm512_set1_epi32(x1), (__m512bh)_mm512_loadu_si512((const void *)(b + (kp + 1) * 2 * NR)));
            c2 = _mm512_dpbf16_ps(c2, (__m512bh)_mm512_set1_epi32(x2), (__m512bh)_mm512_loadu_si512((const void *)(b + (kp + 2) * 2 * NR)));
            c3 = _mm512_dpbf16_ps(c3, (__m512bh)_mm512_set1_epi32(x3), (__m512bh)_mm512_loadu_si512((const void *)(b + (kp + 3) * 2 * NR)));
        }
        __m512 sum = _mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3));
        int col = p * NR;
        int valid = n - col < NR ? n - col : NR;
        __mmask16 mask = (__mmask16)(valid >= 16 ? 0xFFFF : ((1u << valid) - 1));
        if (bias) sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask, bias + col));
        if (relus && relus[p]) sum = _mm512_max_ps(_mm512_setzero_ps(), sum);
        store16(sum, mask, out16 ? out16[p] : 0, c, 0, 0, col);
    }
}

/* The AMX tile configuration: tiles 0-3 accumulate a 32 x 32 float block, 4-5 hold 16 rows x 32
 * bfloat16 of activations, 6-7 16 pairs of k x 16 columns of weights. */
struct tile_config {
    unsigned char palette;
    unsigned char start_row;
    unsigned char reserved[14];
    unsigned short colsb[16];
    unsigned char rows[16];
};

/* A finished 32 x 32 block waiting in the ring: its ReLU and its store to c (as float32 or
 * bfloat16 per panel) are done after the next block's tile stores (reading tile stores back at
 * once stalls the core). */
struct parked {
    const float *block; /* 32 rows of 32 floats */
    float *c;           /* row 0 of the block, column 0 of the output */
    int col, panels, relu0, relu1, half0, half1;
};

static inline __attribute__((always_inline, target("avx512f,avx512bf16,avx512bw,avx512vl"))) void unpark(const struct parked *w,
                                                                                                          int ldc) {
    __m512 z = _mm512_setzero_ps();
    for (int i = 0; i < 32; i++) {
        __m512 v0 = _mm512_load_ps(w->block + i * 32);
        if (w->relu0) v0 = _mm512_max_ps(z, v0); /* max(0, NaN) is NaN, as in PyTorch */
        store16(v0, 0xFFFF, w->half0, w->c, (size_t)ldc, (size_t)i, w->col);
        if (w->panels == 2) {
            __m512 v1 = _mm512_load_ps(w->block + i * 32 + 16);
            if (w->relu1) v1 = _mm512_max_ps(z, v1);
            store16(v1, 0xFFFF, w->half1, w->c, (size_t)ldc, (size_t)i, w->col + 16);
        }
    }
}

/* Rows [0, rows) (up to AMX_ROWS; the activations, rows lda_ab apart, hold them rounded up to
 * 32 with zero rows) times the panel pairs [panel_begin, panel_end): for each pair, each 32-row
 * block in turn, so the pair's weights are read from memory once and from L1 for the blocks
 * after the first. */
#define AMX_ROWS 64
__attribute__((target("amx-tile,amx-bf16,avx512f,avx512bf16,avx512bw,avx512vl")))
static void block_amx(int rows, int n, int kpad, const unsigned short *ab, size_t lda_ab, const unsigned short *packed,
                      const float *bias, const unsigned char *relus, const unsigned char *out16, float *c, int ldc, int panel_begin,
                      int panel_end) {
    /* Two L1-resident blocks: one being written by tile stores, one waiting for its epilogue.
     * Blocks that need a ReLU or a bfloat16 output pass through them, so c is written once;
     * the others are stored straight to c. */
    _Alignas(64) float ring[2][32 * 32];
    int slot = 0;
    struct parked waiting = {NULL, NULL, 0, 0, 0, 0, 0, 0};
    size_t stride_a = lda_ab * 2;
    size_t stride_c = (size_t)ldc * 4;
    for (int p = panel_begin; p < panel_end; p += 2) {
        int two = p + 1 < panel_end;
        const unsigned short *b0 = packed + (size_t)p * NR * kpad;
        const unsigned short *b1 = two ? b0 + (size_t)NR * kpad : b0;
        int col0 = p * NR, col1 = col0 + NR;
        int relu0 = relus ? relus[p] : 0;
        int relu1 = two && relus ? relus[p + 1] : 0;
        int half0 = out16 ? out16[p] : 0;
        int half1 = two && out16 ? out16[p + 1] : 0;
        for (int r0 = 0; r0 < rows; r0 += 32) {
            int block_rows = rows - r0 < 32 ? rows - r0 : 32;
            const unsigned short *a0 = ab + (size_t)r0 * lda_ab;
            float *cb = c + (size_t)r0 * ldc;
            /* Full blocks start from the bias and leave through the ring or straight to c;
             * partial ones (fewer rows, or columns past n) through the float tile. */
            int full = block_rows == 32 && col0 + (two ? 2 * NR : NR) <= n;
            if (full && bias) {
                _tile_loadd(0, bias + col0, 0);
                _tile_loadd(2, bias + col0, 0);
                _tile_loadd(1, bias + (two ? col1 : col0), 0);
                _tile_loadd(3, bias + (two ? col1 : col0), 0);
            } else {
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
            }
            for (int k0 = 0; k0 < kpad; k0 += KP) {
                _tile_loadd(4, a0 + k0, stride_a);
                _tile_loadd(5, a0 + (size_t)16 * lda_ab + k0, stride_a);
                _tile_loadd(6, b0 + (size_t)k0 * NR, 64);
                _tile_loadd(7, b1 + (size_t)k0 * NR, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
            if (full && !relu0 && !relu1 && !half0 && !half1) {
                _tile_stored(0, cb + col0, stride_c);
                _tile_stored(2, cb + (size_t)16 * ldc + col0, stride_c);
                if (two) {
                    _tile_stored(1, cb + col1, stride_c);
                    _tile_stored(3, cb + (size_t)16 * ldc + col1, stride_c);
                }
                if (waiting.block) unpark(&waiting, ldc);
                waiting.block = NULL;
            } else if (full) {
                float *block = ring[slot];
                slot ^= 1;
                _tile_stored(0, block, 128);
                _tile_stored(1, block + 16, 128);
                _tile_stored(2, block + 16 * 32, 128);
                _tile_stored(3, block + 16 * 32 + 16, 128);
                if (waiting.block) unpark(&waiting, ldc);
                waiting = (struct parked){block, cb, col0, two ? 2 : 1, relu0, relu1, half0, half1};
            } else {
                float tile[32 * 32];
                _tile_stored(0, tile, 128);
                _tile_stored(1, tile + 16, 128);
                _tile_stored(2, tile + 16 * 32, 128);
                _tile_stored(3, tile + 16 * 32 + 16, 128);
                if (waiting.block) unpark(&waiting, ldc);
                waiting.block = NULL;
                for (int j = 0; j < (two ? 2 : 1); j++) {
                    int col = (p + j) * NR;
                    int valid = n - col < NR ? n - col : NR;
                    store_tile(tile + j * NR, 32, block_rows, valid, bias ? bias + col : NULL, j == 0 ? relu0 : relu1,
                               j == 0 ? half0 : half1, cb, ldc, col);
                }
            }
        }
    }
    if (waiting.block) unpark(&waiting, ldc);
}

__attribute__((target("amx-tile")))
static void amx_configure(void) {
    struct tile_config config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int t = 0; t < 8; t++) {
        config.colsb[t] = 64;
        config.rows[t] = 16;
    }
    _tile_loadconfig(&config);
}

__attribute__((target("amx-tile")))
static void amx_release(void) { _tile_release(); }

void mmoe_gemm_vnni(int m, int n, int k, const float *a, int lda, const unsigned short *a16, int lda16,
                    const unsigned short *packed, const float *bias, const unsigned char *relus, const unsigned char *out16,
                    float *c, int ldc, int panel_begin, int panel_end) {
    int support = mmoe_bf16_compute_support();
    if (!(support & 1) || m <= 0) return;
    int kpad = (k + KP - 1) / KP * KP;
    int amx = (support & 2) && m >= 16;
    /* AMX: up to AMX_ROWS rows (32-row blocks); otherwise four 8-row groups. */
    int block = amx ? AMX_ROWS : 32;
    unsigned short *ab = scratch_for((size_t)block * kpad);
    if (!ab) return;
    if (amx) amx_configure();
    for (int r0 = 0; r0 < m; r0 += block) {
        int rows = m - r0 < block ? m - r0 : block;
        int padded = amx ? (rows + 31) / 32 * 32 : rows == 1 ? 1 : (rows + MRB - 1) / MRB * MRB;
        /* bfloat16 inputs are read where they are when the kernel reads no row past `rows` and
         * no column past k (k a multiple of 32: the plan only hands such views over). */
        const unsigned short *rows_in = ab;
        size_t lda_ab = (size_t)kpad;
        if (a16 && padded == rows && kpad == k) {
            rows_in = a16 + (size_t)r0 * lda16;
            lda_ab = (size_t)lda16;
        } else if (a16) {
            copy_rows16(a16 + (size_t)r0 * lda16, lda16, rows, padded, k, kpad, ab);
        } else {
            convert_rows(a + (size_t)r0 * lda, lda, rows, padded, k, kpad, ab);
        }
        float *cb = c + (size_t)r0 * ldc;
        if (amx) {
            block_amx(rows, n, kpad, rows_in, lda_ab, packed, bias, relus, out16, cb, ldc, panel_begin, panel_end);
        } else if (rows == 1) {
            row_dp(n, kpad, rows_in, packed, bias, relus, out16, cb, panel_begin, panel_end);
        } else {
            block_dp(rows, n, kpad, rows_in, lda_ab, packed, bias, relus, out16, cb, ldc, panel_begin, panel_end);
        }
    }
    if (amx) amx_release();
}

#else

int mmoe_bf16_compute_support(void) { return 0; }

void mmoe_gemm_vnni(int m, int n, int k, const float *a, int lda, const unsigned short *a16, int lda16,
                    const unsigned short *packed, const float *bias, const unsigned char *relus, const unsigned char *out16,
                    float *c, int ldc, int panel_begin, int panel_end) {
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)a16; (void)lda16; (void)packed; (void)bias; (void)relus; (void)out16;
    (void)c; (void)ldc; (void)panel_begin; (void)panel_end;
}
#endif
