#include "mmoe_kernels.h"
#include <string.h>

/* Row-wise work around the multiplies: the gate-weighted sum of expert outputs and the
 * widening of bfloat16 embedding rows, chosen once at run time (AVX-512, AVX2+FMA, baseline).
 * The sums keep one order (expert 0 first, one multiply-add per expert, fused where the CPU
 * has FMA), so every path gives the same NaN behaviour: a NaN gate weight or expert value
 * reaches the output. */

/* Columns [first, width) of every row: the baseline path's whole rows, the vector paths'
 * columns past their last full strip (compiled once per target). */
#define MIX_TAIL_BODY                                                                                 \
    for (int r = 0; r < rows; r++) {                                                                  \
        float *o = out + (size_t)r * out_ld;                                                          \
        const float *g = gate + (size_t)r * gate_ld;                                                  \
        for (int c = first; c < width; c++) o[c] = 0.0f;                                              \
        for (int e = 0; e < experts; e++) {                                                           \
            const float w = g[e];                                                                     \
            const float *s = sources[e] + (size_t)r * source_lds[e];                                  \
            for (int c = first; c < width; c++) o[c] += w * s[c];                                     \
        }                                                                                             \
    }
#define MIX_TAIL_ARGS                                                                                                  \
    int rows, int width, int first, const float *gate, int gate_ld, int experts, const float *const *sources, \
        const long *source_lds, float *out, int out_ld

static void mix_tail(MIX_TAIL_ARGS) { MIX_TAIL_BODY }

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

__attribute__((target("avx512f"))) static void mix_tail_avx512(MIX_TAIL_ARGS) { MIX_TAIL_BODY }
__attribute__((target("avx2,fma"))) static void mix_tail_avx2(MIX_TAIL_ARGS) { MIX_TAIL_BODY }

/* The vector paths keep a strip of the output row in registers over all experts (written once
 * per strip, not once per expert; same sums in the same order), then the portable body takes
 * the columns past the last full strip. */
__attribute__((target("avx512f"))) static void mix_avx512(int rows, int width, const float *gate, int gate_ld, int experts,
                                                          const float *const *sources, const long *source_lds, float *out,
                                                          int out_ld) {
    int strips = width / 64 * 64;
    for (int r = 0; r < rows; r++) {
        float *o = out + (size_t)r * out_ld;
        const float *g = gate + (size_t)r * gate_ld;
        for (int c0 = 0; c0 < strips; c0 += 64) {
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
            for (int e = 0; e < experts; e++) {
                __m512 w = _mm512_set1_ps(g[e]);
                const float *s = sources[e] + (size_t)r * source_lds[e] + c0;
                a0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(s), a0);
                a1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(s + 16), a1);
                a2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(s + 32), a2);
                a3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(s + 48), a3);
            }
            _mm512_storeu_ps(o + c0, a0);
            _mm512_storeu_ps(o + c0 + 16, a1);
            _mm512_storeu_ps(o + c0 + 32, a2);
            _mm512_storeu_ps(o + c0 + 48, a3);
        }
    }
    if (strips < width) mix_tail_avx512(rows, width, strips, gate, gate_ld, experts, sources, source_lds, out, out_ld);
}

__attribute__((target("avx2,fma"))) static void mix_avx2(int rows, int width, const float *gate, int gate_ld, int experts,
                                                         const float *const *sources, const long *source_lds, float *out,
                                                         int out_ld) {
    int strips = width / 32 * 32;
    for (int r = 0; r < rows; r++) {
        float *o = out + (size_t)r * out_ld;
        const float *g = gate + (size_t)r * gate_ld;
        for (int c0 = 0; c0 < strips; c0 += 32) {
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
            for (int e = 0; e < experts; e++) {
                __m256 w = _mm256_set1_ps(g[e]);
                const float *s = sources[e] + (size_t)r * source_lds[e] + c0;
                a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s), a0);
                a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 8), a1);
                a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 16), a2);
                a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 24), a3);
            }
            _mm256_storeu_ps(o + c0, a0);
            _mm256_storeu_ps(o + c0 + 8, a1);
            _mm256_storeu_ps(o + c0 + 16, a2);
            _mm256_storeu_ps(o + c0 + 24, a3);
        }
    }
    if (strips < width) mix_tail_avx2(rows, width, strips, gate, gate_ld, experts, sources, source_lds, out, out_ld);
}
#endif

/* 2: AVX-512F, 1: AVX2+FMA, 0: neither (the packed kernels' own probes, decided once). */
static int row_level(void) {
    static int level = -1;
    int seen = __atomic_load_n(&level, __ATOMIC_ACQUIRE);
    if (seen >= 0) return seen;
    int found = mmoe_avx512_supported() ? 2 : mmoe_kernels_available() ? 1 : 0;
    __atomic_store_n(&level, found, __ATOMIC_RELEASE);
    return found;
}

void mmoe_mix_rows(int rows, int width, const float *gate, int gate_ld, int experts, const float *const *sources,
                   const long *source_lds, float *out, int out_ld) {
    if (rows <= 0 || width <= 0) return;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    switch (row_level()) {
    case 2: mix_avx512(rows, width, gate, gate_ld, experts, sources, source_lds, out, out_ld); return;
    case 1: mix_avx2(rows, width, gate, gate_ld, experts, sources, source_lds, out, out_ld); return;
    default: break;
    }
#endif
    mix_tail(rows, width, 0, gate, gate_ld, experts, sources, source_lds, out, out_ld);
}

void mmoe_widen_bf16_row(const void *source, int dim, float *destination, int accumulate) {
    const unsigned char *bytes = (const unsigned char *)source;
    if (accumulate) {
        for (int c = 0; c < dim; c++) {
            unsigned int bits = ((unsigned int)bytes[2 * c] | ((unsigned int)bytes[2 * c + 1] << 8)) << 16;
            float value;
            memcpy(&value, &bits, 4);
            destination[c] += value;
        }
    } else {
        for (int c = 0; c < dim; c++) {
            unsigned int bits = ((unsigned int)bytes[2 * c] | ((unsigned int)bytes[2 * c + 1] << 8)) << 16;
            memcpy(destination + c, &bits, 4);
        }
    }
}
