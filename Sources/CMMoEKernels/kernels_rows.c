#include "mmoe_kernels.h"
#include <string.h>

/* Row-wise work around the multiplies: the gate-weighted sum of expert outputs and the
 * widening of bfloat16 embedding rows. One portable body compiled three times (AVX-512,
 * AVX2+FMA, baseline) and chosen once at run time. The sums keep the portable code's order
 * (expert 0 first, one multiply-add per expert), so every path gives the same NaN behaviour:
 * a NaN gate weight or expert value reaches the output. */

#define MIX_BODY                                                                                      \
    for (int r = 0; r < rows; r++) {                                                                  \
        float *o = out + (size_t)r * out_ld;                                                          \
        const float *g = gate + (size_t)r * gate_ld;                                                  \
        for (int c = 0; c < width; c++) o[c] = 0.0f;                                                  \
        for (int e = 0; e < experts; e++) {                                                           \
            const float w = g[e];                                                                     \
            const float *s = sources[e] + (size_t)r * source_lds[e];                                  \
            for (int c = 0; c < width; c++) o[c] += w * s[c];                                         \
        }                                                                                             \
    }

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx512f"))) static void mix_avx512(int rows, int width, const float *gate, int gate_ld, int experts,
                                                          const float *const *sources, const long *source_lds, float *out,
                                                          int out_ld) {
    MIX_BODY
}

__attribute__((target("avx2,fma"))) static void mix_avx2(int rows, int width, const float *gate, int gate_ld, int experts,
                                                         const float *const *sources, const long *source_lds, float *out,
                                                         int out_ld) {
    MIX_BODY
}
#endif

static void mix_base(int rows, int width, const float *gate, int gate_ld, int experts, const float *const *sources,
                     const long *source_lds, float *out, int out_ld) {
    MIX_BODY
}

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
    mix_base(rows, width, gate, gate_ld, experts, sources, source_lds, out, out_ld);
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
