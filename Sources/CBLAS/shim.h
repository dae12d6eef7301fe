#ifndef MMOE_CBLAS_SHIM_H
#define MMOE_CBLAS_SHIM_H
#include <cblas.h>

/// Row-major C = A * W^T with W stored [n, k] (PyTorch's [out, in] linear weight).
static inline void mmoe_sgemm_rowmajor_bt(int m, int n, int k, const float *a, int lda,
                                          const float *w, int ldw, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, lda, w, ldw, 0.0f, c, ldc);
}

/// y = W x for one row x of length k, W row-major [n, k]: a GEMV, no packing, which is what
/// batch-1 latency needs.
static inline void mmoe_sgemv_row(int n, int k, const float *x, const float *w, int ldw, float *y) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w, ldw, x, 1, 0.0f, y, 1);
}
#endif
