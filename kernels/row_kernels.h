// Row-wise kernels: embedding lookup, norms (with optional row gather and dtype conversion),
// and the residual updates that close a unit or an FFN (optionally followed by the post-norm).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/kernel_types.h"

namespace seqboat::cuda {

template <typename T>
struct EmbeddingParams {
  const T* table = nullptr;         // [V, D]
  const int32_t* tokens = nullptr;  // [rows]
  float* out = nullptr;             // [rows, D]
  int64_t rows = 0;
  int dim = 0;
  float scale = 1.0f;            // sqrt(D) unless no_scale_embedding
  DeviceNormWeights embed_norm;  // kNone unless normalize_embedding
  float2* stats = nullptr;       // [rows] norm statistics of out for the first unit; null = skip
  DeviceNorm stats_kind = DeviceNorm::kNone;
};
// out[r] = embed_norm(table[tokens[r]] * scale), and its norm statistics (RowNormStats) for the
// first layer's pre-norm, which the EMA scan applies on the fly.
template <typename T>
void LaunchEmbedding(const EmbeddingParams<T>& p, cudaStream_t stream);

template <typename TOut>
struct NormRowsParams {
  DeviceNormWeights norm;              // kind kNone copies (converting to TOut)
  const float* in = nullptr;           // [*, D]
  const int32_t* row_index = nullptr;  // [rows] source row of each output row; null = identity
  TOut* out = nullptr;                 // [rows, D]; may alias `in` when row_index is null
  int64_t rows = 0;
  int dim = 0;
};
template <typename TOut>
void LaunchNormRows(const NormRowsParams<TOut>& p, cudaStream_t stream);

// Closes a unit:  x = SiLU(hx[:, 2:] + hx_bias[2:] + gau + x), gau = conf * (y + y_bias) on
// activated rows, 0 elsewhere; then x = norm(x) when post_norm.kind != kNone.
// Closes an FFN (ffn_out != null): x = x + ffn_out + ffn_bias; then the post-norm.
struct ResidualParams {
  float* x = nullptr;  // [rows, D] residual stream, updated in place
  int64_t rows = 0;
  int dim = 0;
  // Unit form.
  const float* hx = nullptr;                  // [rows, 2 + D] raw hx_proj product (bias not added)
  const float* hx_bias = nullptr;             // [2 + D]
  const float* gau_out = nullptr;             // [R, D] raw h_proj product of the activated rows
  const float* gau_bias = nullptr;            // [D]
  const int32_t* row_active_index = nullptr;  // [rows] index among activated rows, or -1
  const float* confidence = nullptr;          // [rows]
  // FFN form.
  const float* ffn_out = nullptr;   // [rows, D] raw fc2 product
  const float* ffn_bias = nullptr;  // [D]
  DeviceNormWeights post_norm;      // kNone = pre-norm model
  float2* next_stats = nullptr;  // [rows] norm statistics of the new x (next pre-norm); null = skip
  DeviceNorm stats_kind = DeviceNorm::kNone;
};
void LaunchResidual(const ResidualParams& p, cudaStream_t stream);

}  // namespace seqboat::cuda
