// Row-major linear layers on cuBLAS: y[rows, out] = x[rows, in] . w[out, in]^T, with x and w
// in the weight dtype, y in fp32, fp32 accumulation (no TF32 for fp32 weights).
#pragma once

#include <cublas_v2.h>

#include <cstdint>

#include "absl/status/status.h"

namespace seqboat::cuda {

struct LinearParams {
  const void* x = nullptr;  // [rows, in] (row stride `in`)
  const void* w = nullptr;  // [out, in]
  float* y = nullptr;       // [rows, out]
  int64_t rows = 0;
  int64_t in = 0;
  int64_t out = 0;
  cudaDataType_t dtype = CUDA_R_32F;  // of x and w
};

// Enqueues on the handle's stream; never synchronises or allocates (the handle has a fixed
// workspace). rows == 0 is a no-op.
absl::Status Linear(cublasHandle_t handle, const LinearParams& p);

}  // namespace seqboat::cuda
