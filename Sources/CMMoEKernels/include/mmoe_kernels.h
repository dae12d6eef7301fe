#ifndef MMOE_KERNELS_H
#define MMOE_KERNELS_H
#include <stddef.h>

/* Dense matrix multiply with weights packed once at load time, bias and ReLU fused into the
 * store. x86-64 with AVX2+FMA (and an AVX-512 path over the same panels), checked at run time;
 * elsewhere mmoe_kernels_available() is 0 and the runtime uses BLAS. */

/// 1 when the packed kernel can run on this CPU.
int mmoe_kernels_available(void);

/* The CPU the calling thread runs on (sched_getcpu), or -1 where unknown. */
int mmoe_current_cpu(void);

/* A pause for spin-wait loops. */
static inline void mmoe_spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/// Floats needed to pack a row-major [k, n] matrix.
size_t mmoe_packed_size(int k, int n);

/// Packs w[n, k] (little-endian float32, row-major, leading dimension k: PyTorch's [out, in]
/// linear weight; any alignment) into 16-column panels of the product's [k, n] right-hand
/// side, zero padded, multiplying row r by scale[r] when scale is not NULL (a folded batch
/// norm). Every float of the ceil(n/16) panels is written. Returns -1, or the index of the
/// first infinite or NaN value of w.
long long mmoe_pack_bt(const void *w, int k, int n, const float *scale, float *packed);

/// Packs w[n, k] (little-endian bfloat16, row-major, any alignment) into the same 16-column
/// panels of bfloat16 values (2 bytes each), zero padded. Returns -1, or the index of the first
/// infinite or NaN value of w.
long long mmoe_pack_bt_bf16(const void *w, int k, int n, unsigned short *packed);

/// c[m, n] (leading dimension ldc) = a[m, k] (leading dimension lda) x packed (+ bias[n]),
/// then max(., 0) on the 16-column panels p where relu[p] is non-zero. bias and relu may be NULL.
/// packed holds float32 panels, or bfloat16 panels when bf16 is non-zero (widened exactly as
/// they are read; the arithmetic is float32).
void mmoe_gemm_packed(int m, int n, int k, const float *a, int lda, const void *packed, int bf16,
                      const float *bias, const unsigned char *relu, float *c, int ldc);

/// The same for the 16-column panels [panel_begin, panel_end) only (to split one product's
/// columns over threads).
void mmoe_gemm_packed_panels(int m, int n, int k, const float *a, int lda, const void *packed, int bf16,
                             const float *bias, const unsigned char *relu, float *c, int ldc, int panel_begin, int panel_end);

/// 1 when the CPU (and the OS) support AVX-512F.
int mmoe_avx512_supported(void);

/// The AVX-512 path of mmoe_gemm_packed_panels over the same panels (12 x 32 tiles, a 1 x 16
/// row kernel for batches below 4). Call only when mmoe_avx512_supported() is 1.
void mmoe_gemm_packed_panels_avx512(int m, int n, int k, const float *a, int lda, const void *packed, int bf16,
                                    const float *bias, const unsigned char *relu, float *c, int ldc, int panel_begin, int panel_end);

/// Bit 0: the CPU has AVX512-BF16 (bfloat16 products, VDPBF16PS); bit 1: AMX-BF16 tiles too,
/// granted by the kernel (MMOE_NO_AMX in the environment clears bit 1).
int mmoe_bf16_compute_support(void);

/// bfloat16 values needed to pack a [k, n] right-hand side in pairs along k (k padded to 32).
size_t mmoe_vnni_size(int k, int n);

/// Packs w[n, k] (float32 rounded to nearest even, or bfloat16 when w_bf16 is non-zero;
/// row-major, any alignment) into 16-column panels holding, for each pair of k, the 16
/// columns' two values side by side; zero padded. Returns -1, or the index of the first
/// infinite or NaN value of w.
long long mmoe_pack_vnni(const void *w, int w_bf16, int k, int n, unsigned short *packed);

/// c[m, n] = bf16(a[m, k]) x packed (+ bias[n]), ReLU on the panels where relu[p] is non-zero,
/// for the 16-column panels [panel_begin, panel_end): bfloat16 products, float32 accumulation
/// (AMX tiles for 16 rows and more where available, AVX512-BF16 otherwise). Call only when
/// mmoe_bf16_compute_support() has bit 0.
///
/// Activations already in bfloat16: when a16 is not NULL, a is ignored and row r of the input
/// is a16 + r * lda16 (any alignment; read in place when k is a multiple of 32 and no padding
/// row is needed, else copied with zero padding first). Outputs in bfloat16: where out16 is
/// not NULL and out16[p] is non-zero, panel p's columns are rounded to bfloat16 (nearest even,
/// as the next layer would round them) and stored as bfloat16 at ((unsigned short *)c) +
/// r * 2 * ldc + column: in the first half of the bytes of the row's float32 columns.
void mmoe_gemm_vnni(int m, int n, int k, const float *a, int lda, const unsigned short *a16, int lda16,
                    const unsigned short *packed, const float *bias, const unsigned char *relu, const unsigned char *out16,
                    float *c, int ldc, int panel_begin, int panel_end);

/// Continues a CRC-32C (Castagnoli) over `count` bytes. `state` is the running register (start
/// with 0xFFFFFFFF, finish by XOR with 0xFFFFFFFF). Uses the SSE4.2 crc32 instruction when the
/// CPU has it, a table otherwise.
unsigned int mmoe_crc32c_update(unsigned int state, const void *bytes, size_t count);

/// out[r, c] = sum over e of gate[r, e] * sources[e][r, c] for rows [0, rows), columns
/// [0, width) (the MMoE gate's mixture of expert outputs; row r of gate at gate + r * gate_ld,
/// of expert e at sources[e] + r * source_lds[e]). AVX-512, AVX2 or portable code, chosen at
/// run time.
void mmoe_mix_rows(int rows, int width, const float *gate, int gate_ld, int experts, const float *const *sources,
                   const long *source_lds, float *out, int out_ld);

/// Widens `dim` little-endian bfloat16 values (any alignment) to float32 into destination, or
/// adds them to it when accumulate is non-zero.
void mmoe_widen_bf16_row(const void *source, int dim, float *destination, int accumulate);

/// Asks the CPU to bring the cache line holding `address` closer (no effect on results; any
/// address, even an invalid one, is safe).
static inline void mmoe_prefetch(const void *address) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(address, 0, 3);
#else
    (void)address;
#endif
}
#endif
