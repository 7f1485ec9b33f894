// cuBLAS wrapper (see gemm.h). cuBLAS is column-major: the row-major product
// Y[rows, out] = X[rows, in] W[out, in]^T is the column-major Y^T = W^T X^T, i.e. op(A) = W
// read transposed (A is W's row-major memory seen as an in x out matrix), B = X^T.
#include "kernels/gemm.h"

#include "kernels/cuda_status.h"

namespace seqboat::cuda {

absl::Status Linear(cublasHandle_t handle, const LinearParams& p) {
  if (p.rows == 0 || p.out == 0) return absl::OkStatus();
  const float alpha = 1.0f, beta = 0.0f;
  SEQBOAT_CUBLAS_RETURN_IF_ERROR(
      cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(p.out),
                   static_cast<int>(p.rows), static_cast<int>(p.in), &alpha, p.w, p.dtype,
                   static_cast<int>(p.in), p.x, p.dtype, static_cast<int>(p.in), &beta, p.y,
                   CUDA_R_32F, static_cast<int>(p.out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

}  // namespace seqboat::cuda
