// Device helpers shared by the .cu files: element conversions, SiLU, block reductions and
// the row norm every norm-bearing kernel applies to a row staged in shared memory.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/kernel_types.h"

namespace seqboat::cuda {

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Same formula as the CPU reference (cpu::Silu), full-precision expf.
__device__ __forceinline__ float Silu(float x) { return x / (1.0f + expf(-x)); }

template <typename A>
__device__ __forceinline__ A WarpSum(A value) {
  for (int offset = 16; offset > 0; offset >>= 1)
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

__device__ __forceinline__ float WarpMax(float value) {
  for (int offset = 16; offset > 0; offset >>= 1)
    value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  return value;
}

// Sum over the block; every thread gets the result. `scratch` holds >= 32 values and may be
// reused after the call returns (it ends with a barrier).
template <typename A>
__device__ A BlockSum(A value, A* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  value = WarpSum(value);
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  A total = 0;
  for (int w = 0; w < warps; ++w) total += scratch[w];
  __syncthreads();
  return total;
}

__device__ inline float BlockMax(float value, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  value = WarpMax(value);
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  float best = -INFINITY;
  for (int w = 0; w < warps; ++w) best = fmaxf(best, scratch[w]);
  __syncthreads();
  return best;
}

// Row statistics of the CPU reference's norms, in double: layernorm (mean, 1/sqrt(var + eps));
// scalenorm and rmsnorm (0, 1/sqrt(mean(x^2) + eps)). `row` is visible to the whole block.
__device__ inline float2 RowNormStats(DeviceNorm kind, const float* row, int dim, double* scratch) {
  constexpr double kEps = 1e-5;
  if (kind == DeviceNorm::kLayerNorm) {
    double sum = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) sum += row[i];
    const double mean = BlockSum(sum, scratch) / dim;
    double sq = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
      const double centred = row[i] - mean;
      sq += centred * centred;
    }
    const double var = BlockSum(sq, scratch) / dim;
    return make_float2(static_cast<float>(mean), static_cast<float>(1.0 / sqrt(var + kEps)));
  }
  double sq = 0.0;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) sq += static_cast<double>(row[i]) * row[i];
  const double mean_sq = BlockSum(sq, scratch) / dim;
  return make_float2(0.0f, static_cast<float>(1.0 / sqrt(mean_sq + kEps)));
}

// The per-element transform, in float as the CPU does: (x - mean) * inv, then the affine part.
// (For scalenorm/rmsnorm mean is 0 and x - 0 is exactly x.)
__device__ __forceinline__ float ApplyNorm(const DeviceNormWeights& norm, float2 stats, float x,
                                           int d) {
  float v = (x - stats.x) * stats.y;
  if (norm.weight != nullptr) {
    if (norm.kind == DeviceNorm::kLayerNorm) {
      v = v * norm.weight[d] + norm.bias[d];
    } else {
      v *= norm.kind == DeviceNorm::kScaleNorm ? norm.weight[0] : norm.weight[d];
    }
  }
  return v;
}

// Normalises `row` [dim] (shared memory, the whole block participates) in place.
__device__ inline void NormRowInPlace(const DeviceNormWeights& norm, float* row, int dim,
                                      double* scratch) {
  if (norm.kind == DeviceNorm::kNone) return;
  const float2 stats = RowNormStats(norm.kind, row, dim, scratch);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) row[i] = ApplyNorm(norm, stats, row[i], i);
  __syncthreads();
}

}  // namespace seqboat::cuda
