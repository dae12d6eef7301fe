#ifndef MMOE_CBLAS_SHIM_H
#define MMOE_CBLAS_SHIM_H
#include <cblas.h>

/// Row-major C = A * B (+ beta * C), with B stored row-major [k, n]. One entry point so the
/// Swift side never touches CBLAS enums.
static inline void mmoe_sgemm_rowmajor(int m, int n, int k, const float *a, int lda,
                                       const float *b, int ldb, float beta, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}
#endif
