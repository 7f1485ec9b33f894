// CUDA and cuBLAS error codes as absl::Status, and early-return macros for host code.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace seqboat::cuda {

inline absl::Status CudaStatus(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  const std::string message = absl::StrCat("CUDA error in ", what, ": ", cudaGetErrorName(error),
                                           " (", cudaGetErrorString(error), ")");
  if (error == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

inline absl::Status CublasStatus(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string message =
      absl::StrCat("cuBLAS error in ", what, ": ", cublasGetStatusName(status), " (",
                   cublasGetStatusString(status), ")");
  if (status == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

}  // namespace seqboat::cuda

#define SEQBOAT_CUDA_RETURN_IF_ERROR(expr)                                                  \
  do {                                                                                      \
    const ::absl::Status seqboat_cuda_status_ = ::seqboat::cuda::CudaStatus((expr), #expr); \
    if (!seqboat_cuda_status_.ok()) return seqboat_cuda_status_;                            \
  } while (0)

#define SEQBOAT_CUBLAS_RETURN_IF_ERROR(expr)                                                    \
  do {                                                                                          \
    const ::absl::Status seqboat_cublas_status_ = ::seqboat::cuda::CublasStatus((expr), #expr); \
    if (!seqboat_cublas_status_.ok()) return seqboat_cublas_status_;                            \
  } while (0)
