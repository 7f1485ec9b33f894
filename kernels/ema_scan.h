// The MD-EMA of one layer over a batch of chunks, fused with the unit's pre-norm (applied on
// the fly from per-row statistics) and SiLU. A chunk is scanned in time order; long chunks are
// split into segments scanned in parallel (each from zero, then re-scanned from the carried-in
// state), so a 2048-token prompt costs two passes of 2048/segments steps, not 2048.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/kernel_types.h"

namespace seqboat::cuda {

inline constexpr int kMaxEmaDim = 32;  // N per channel the scan supports (states live in registers)

template <typename T>
struct EmaScanParams {
  const float* input = nullptr;              // [rows, D] the unit's input x (before its norm)
  const float2* norm_stats = nullptr;        // [rows] RowNormStats of x; null = no pre-norm (u = x)
  DeviceNormWeights norm;                    // the unit's pre-norm (used with norm_stats)
  const int64_t* positions = nullptr;        // [rows] token positions (trained horizon ring index)
  const int32_t* chunk_row_begin = nullptr;  // [chunks + 1]
  const int32_t* chunk_slot = nullptr;       // [chunks]
  float* ema_state =
      nullptr;  // this layer's [N, D] (n-major) of slot 0; slot s at + s*state_slot_stride
  int64_t state_slot_stride = 0;       // floats
  float* input_ring = nullptr;         // this layer's [T, D] of slot 0 (trained horizon), else null
  int64_t ring_slot_stride = 0;        // floats
  const float* decay = nullptr;        // [N, D] q = 1 - p*a (n-major, as every [N, D] here)
  const float* input_scale = nullptr;  // [N, D] p*beta (exact horizon)
  const float* out_scale = nullptr;    // [N, D] gamma*sqrt(1/N) (exact) or p*beta*gamma*sqrt(1/N)
  const float* decay_pow_t = nullptr;  // [N, D] q^T (trained horizon)
  const float* omega = nullptr;        // [D]
  T* out = nullptr;                    // [rows, D] SiLU(m)
  int chunks = 0;
  int dim = 0;
  int n_dim = 0;          // N <= kMaxEmaDim
  int truncation = 0;     // T (trained horizon), else 0
  int longest_chunk = 1;  // host-known; decides the number of time segments
};

// Exact:   s <- p*beta*u + q*s;             m = sum_n s*gamma*sqrt(1/N) + omega*u
// Trained: S <- q*S + u - q^T*u_{t-T};      m = sum_n p*beta*gamma*sqrt(1/N)*S + omega*u
// and the ring row t % T receives u_t (after every read of u_{t-T} from it).
template <typename T>
void LaunchEmaScan(const EmaScanParams<T>& p, cudaStream_t stream);

}  // namespace seqboat::cuda
