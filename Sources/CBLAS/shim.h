#ifndef MMOE_CBLAS_SHIM_H
#define MMOE_CBLAS_SHIM_H
#include <cblas.h>

/// Row-major C = A * B (+ beta * C), with B stored row-major [k, n]. One entry point so the
/// Swift side never touches CBLAS enums.
static inline void mmoe_sgemm_rowmajor(int m, int n, int k, const float *a, int lda,
                                       const float *b, int ldb, float beta, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}

/// y = x · B for one row x of length k, B row-major [k, n] (a GEMV on the transposed view:
/// no packing of B, which is what batch-1 latency needs).
static inline void mmoe_sgemv_row(int n, int k, const float *x, const float *b, int ldb, float *y) {
    cblas_sgemv(CblasRowMajor, CblasTrans, k, n, 1.0f, b, ldb, x, 1, 0.0f, y, 1);
}
#endif
