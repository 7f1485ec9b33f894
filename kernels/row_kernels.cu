// Row-wise kernels (see row_kernels.h). One block per row; rows are staged in shared memory
// so a norm can follow the element-wise part without another pass over global memory.
#include "kernels/device_math.cuh"
#include "kernels/row_kernels.h"

namespace seqboat::cuda {
namespace {

constexpr int kRowThreads = 256;

template <typename T>
__global__ void EmbeddingKernel(EmbeddingParams<T> p) {
  extern __shared__ float row[];  // [dim]
  __shared__ double scratch[32];
  const int64_t r = blockIdx.x;
  const T* src = p.table + static_cast<int64_t>(p.tokens[r]) * p.dim;
  for (int d = threadIdx.x; d < p.dim; d += blockDim.x) row[d] = ToFloat(src[d]) * p.scale;
  __syncthreads();
  NormRowInPlace(p.embed_norm, row, p.dim, scratch);
  float* dst = p.out + r * p.dim;
  for (int d = threadIdx.x; d < p.dim; d += blockDim.x) dst[d] = row[d];
  if (p.stats != nullptr) {
    const float2 stats = RowNormStats(p.stats_kind, row, p.dim, scratch);
    if (threadIdx.x == 0) p.stats[r] = stats;
  }
}

template <typename TOut>
__global__ void NormRowsKernel(NormRowsParams<TOut> p) {
  extern __shared__ float row[];  // [dim]
  __shared__ double scratch[32];
  const int64_t r = blockIdx.x;
  const int64_t source = p.row_index != nullptr ? p.row_index[r] : r;
  const float* in = p.in + source * p.dim;
  for (int d = threadIdx.x; d < p.dim; d += blockDim.x) row[d] = in[d];
  __syncthreads();
  NormRowInPlace(p.norm, row, p.dim, scratch);
  TOut* out = p.out + r * p.dim;
  for (int d = threadIdx.x; d < p.dim; d += blockDim.x) out[d] = FromFloat<TOut>(row[d]);
}

__global__ void ResidualKernel(ResidualParams p) {
  extern __shared__ float row[];  // [dim]
  __shared__ double scratch[32];
  const int64_t r = blockIdx.x;
  float* x = p.x + r * p.dim;
  if (p.ffn_out != nullptr) {
    const float* f = p.ffn_out + r * p.dim;
    for (int d = threadIdx.x; d < p.dim; d += blockDim.x) row[d] = x[d] + (f[d] + p.ffn_bias[d]);
  } else {
    const float* skip = p.hx + r * (2 + p.dim) + 2;
    const float* skip_bias = p.hx_bias + 2;
    const int32_t a = p.row_active_index[r];
    const float conf = a >= 0 ? p.confidence[r] : 0.0f;
    const float* y = a >= 0 ? p.gau_out + static_cast<int64_t>(a) * p.dim : nullptr;
    for (int d = threadIdx.x; d < p.dim; d += blockDim.x) {
      const float gau = y != nullptr ? conf * (y[d] + p.gau_bias[d]) : 0.0f;
      row[d] = Silu((skip[d] + skip_bias[d]) + gau + x[d]);
    }
  }
  __syncthreads();
  NormRowInPlace(p.post_norm, row, p.dim, scratch);
  for (int d = threadIdx.x; d < p.dim; d += blockDim.x) x[d] = row[d];
  if (p.next_stats != nullptr) {
    const float2 stats = RowNormStats(p.stats_kind, row, p.dim, scratch);
    if (threadIdx.x == 0) p.next_stats[r] = stats;
  }
}

}  // namespace

template <typename T>
void LaunchEmbedding(const EmbeddingParams<T>& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  EmbeddingKernel<T>
      <<<static_cast<unsigned>(p.rows), kRowThreads, p.dim * sizeof(float), stream>>>(p);
}

template <typename TOut>
void LaunchNormRows(const NormRowsParams<TOut>& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  NormRowsKernel<TOut>
      <<<static_cast<unsigned>(p.rows), kRowThreads, p.dim * sizeof(float), stream>>>(p);
}

void LaunchResidual(const ResidualParams& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  ResidualKernel<<<static_cast<unsigned>(p.rows), kRowThreads, p.dim * sizeof(float), stream>>>(p);
}

template void LaunchEmbedding<float>(const EmbeddingParams<float>&, cudaStream_t);
template void LaunchEmbedding<__half>(const EmbeddingParams<__half>&, cudaStream_t);
template void LaunchEmbedding<__nv_bfloat16>(const EmbeddingParams<__nv_bfloat16>&, cudaStream_t);
template void LaunchNormRows<float>(const NormRowsParams<float>&, cudaStream_t);
template void LaunchNormRows<__half>(const NormRowsParams<__half>&, cudaStream_t);
template void LaunchNormRows<__nv_bfloat16>(const NormRowsParams<__nv_bfloat16>&, cudaStream_t);

}  // namespace seqboat::cuda
