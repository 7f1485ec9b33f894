// MD-EMA scan (see ema_scan.h). A thread owns one channel d and keeps its N states (N padded
// to kMaxN, a compile-time bound, so they stay in registers) for one time segment of one
// chunk; m sums the N outputs in order, as the CPU reference does. With K > 1 segments, pass 1
// scans each segment from zero (end state h, total decay P = q^len), each segment's initial
// state is then composed from the earlier ones (s <- P*s + h), and pass 2 re-scans each
// segment from its true initial state writing outputs. The trained horizon's ring is only read
// during the passes and written after a barrier.
#include <algorithm>

#include "kernels/device_math.cuh"
#include "kernels/ema_scan.h"

namespace seqboat::cuda {
namespace {

constexpr int kMaxSegments = 64;
constexpr int kMinSegmentLength = 16;  // shorter chunks are scanned by fewer segments

template <int kMaxN>
__host__ __device__ constexpr int ScanThreads() {
  // States and coefficients take ~4 kMaxN registers per thread: smaller blocks for large N keep
  // several blocks per multiprocessor. Carries: 2 x threads x kMaxN floats of shared memory.
  return kMaxN >= 16 ? 128 : 256;
}

template <typename T, int kMaxN>
__global__ void __launch_bounds__(ScanThreads<kMaxN>())
    EmaScanKernel(EmaScanParams<T> p, int segments) {
  constexpr int kThreads = ScanThreads<kMaxN>();
  __shared__ float carry_h[kMaxN * kThreads];  // [n, thread]
  __shared__ float carry_p[kMaxN * kThreads];
  const int channels = kThreads / segments;
  const int segment = threadIdx.x / channels;
  const int c = blockIdx.x;  // chunks on x: up to 2^31 - 1 of them
  const int d = blockIdx.y * channels + threadIdx.x % channels;
  const bool channel = d < p.dim;
  const int D = p.dim, N = p.n_dim;
  const int64_t slot = p.chunk_slot[c];
  const bool trained = p.input_ring != nullptr;
  const float* __restrict__ input = p.input;
  const float2* __restrict__ stats = p.norm_stats;
  const int64_t* __restrict__ positions = p.positions;
  T* __restrict__ out = p.out;
  float* ring = trained ? p.input_ring + slot * p.ring_slot_stride : nullptr;
  // State and coefficients are stored [N, D] (n-major) so that neighbouring threads (channels)
  // read neighbouring addresses.
  float* state = p.ema_state + slot * p.state_slot_stride + d;

  // Coefficients of the channel; padding states get zeros and contribute nothing.
  float s[kMaxN], decay[kMaxN], gain[kMaxN], out_scale[kMaxN];
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) {
    const bool active = channel && n < N;
    const int64_t coef = static_cast<int64_t>(n) * D + d;
    s[n] = active ? state[coef - d] : 0.0f;
    decay[n] = active ? p.decay[coef] : 0.0f;
    out_scale[n] = active ? p.out_scale[coef] : 0.0f;
    // Exact: gain = p*beta multiplies u. Trained: gain = q^T multiplies u_{t-T}.
    gain[n] = active ? (trained ? p.decay_pow_t[coef] : p.input_scale[coef]) : 0.0f;
  }
  const float omega = channel ? p.omega[d] : 0.0f;
  // The pre-norm's per-channel parameters, in registers.
  const DeviceNorm norm_kind = stats != nullptr ? p.norm.kind : DeviceNorm::kNone;
  float norm_weight = 1.0f, norm_bias = 0.0f;
  const bool norm_affine = p.norm.weight != nullptr;
  if (channel && norm_kind != DeviceNorm::kNone && norm_affine) {
    norm_weight = p.norm.weight[norm_kind == DeviceNorm::kScaleNorm ? 0 : d];
    if (norm_kind == DeviceNorm::kLayerNorm) norm_bias = p.norm.bias[d];
  }
  auto u_of = [&](int64_t r) -> float {
    if (!channel) return 0.0f;
    const float x = input[r * D + d];
    if (norm_kind == DeviceNorm::kNone) return x;
    const float2 st = stats[r];
    float v = (x - st.x) * st.y;  // as ApplyNorm / the CPU: then the affine part
    if (norm_affine)
      v = norm_kind == DeviceNorm::kLayerNorm ? v * norm_weight + norm_bias : v * norm_weight;
    return v;
  };
  const int64_t begin = p.chunk_row_begin[c], end = p.chunk_row_begin[c + 1];
  const int64_t length = end - begin;
  const int64_t chunk_position = positions[begin];
  // u_{t-T} for row r at position t: from this chunk when it is in it, else from the ring as it
  // was before this call, else 0 (before the first T tokens).
  auto old_of = [&](int64_t r) -> float {
    const int64_t t = chunk_position + (r - begin);
    if (!channel || t < p.truncation) return 0.0f;
    if (t - p.truncation >= chunk_position) return u_of(r - p.truncation);
    return ring[(t % p.truncation) * D + d];
  };

  const int64_t seg_length = (length + segments - 1) / segments;
  const int64_t seg_begin = min(end, begin + segment * seg_length);
  const int64_t seg_end = min(end, seg_begin + seg_length);
  if (segments > 1) {
    float h[kMaxN], total_decay[kMaxN];
#pragma unroll
    for (int n = 0; n < kMaxN; ++n) h[n] = 0.0f, total_decay[n] = 1.0f;
#pragma unroll 2
    for (int64_t r = seg_begin; r < seg_end; ++r) {
      const float u = u_of(r);
      const float old = trained ? old_of(r) : 0.0f;
#pragma unroll
      for (int n = 0; n < kMaxN; ++n) {
        h[n] = trained ? decay[n] * h[n] + u - gain[n] * old : gain[n] * u + decay[n] * h[n];
        total_decay[n] *= decay[n];
      }
    }
#pragma unroll
    for (int n = 0; n < kMaxN; ++n) {
      carry_h[n * kThreads + threadIdx.x] = h[n];
      carry_p[n * kThreads + threadIdx.x] = total_decay[n];
    }
    __syncthreads();
    for (int k = 0; k < segment; ++k) {
      const int index = k * channels + threadIdx.x % channels;
#pragma unroll
      for (int n = 0; n < kMaxN; ++n)
        s[n] = carry_p[n * kThreads + index] * s[n] + carry_h[n * kThreads + index];
    }
  }
#pragma unroll 2
  for (int64_t r = seg_begin; r < seg_end; ++r) {
    const float u = u_of(r);
    const float old = trained ? old_of(r) : 0.0f;
    float m = 0.0f;
#pragma unroll
    for (int n = 0; n < kMaxN; ++n) {
      s[n] = trained ? decay[n] * s[n] + u - gain[n] * old : gain[n] * u + decay[n] * s[n];
      m += s[n] * out_scale[n];
    }
    if (channel) out[r * D + d] = FromFloat<T>(Silu(m + omega * u));
  }
  // The segment holding the chunk's last token leaves the state.
  if (channel && seg_begin < seg_end && seg_end == end) {
#pragma unroll
    for (int n = 0; n < kMaxN; ++n)
      if (n < N) state[static_cast<int64_t>(n) * D] = s[n];
  }
  if (trained) {
    __syncthreads();  // every read of the ring above happens before any write below
    const int64_t keep = min(length, static_cast<int64_t>(p.truncation));
    for (int64_t i = segment; i < keep && channel; i += segments) {
      const int64_t r = end - keep + i;
      ring[((chunk_position + (r - begin)) % p.truncation) * D + d] = u_of(r);
    }
  }
}

template <typename T, int kMaxN>
void Launch(const EmaScanParams<T>& p, cudaStream_t stream) {
  constexpr int kThreads = ScanThreads<kMaxN>();
  int segments = 1;
  while (segments * 2 <= kMaxSegments && segments * 2 <= kThreads / 2 &&
         static_cast<int64_t>(segments) * 2 * kMinSegmentLength <= p.longest_chunk) {
    segments *= 2;
  }
  const int channels_per_block = kThreads / segments;
  const dim3 grid(p.chunks, (p.dim + channels_per_block - 1) / channels_per_block);
  EmaScanKernel<T, kMaxN><<<grid, kThreads, 0, stream>>>(p, segments);
}

}  // namespace

template <typename T>
void LaunchEmaScan(const EmaScanParams<T>& p, cudaStream_t stream) {
  if (p.chunks == 0) return;
  if (p.n_dim <= 1) return Launch<T, 1>(p, stream);
  if (p.n_dim <= 2) return Launch<T, 2>(p, stream);
  if (p.n_dim <= 4) return Launch<T, 4>(p, stream);
  if (p.n_dim <= 8) return Launch<T, 8>(p, stream);
  if (p.n_dim <= 16) return Launch<T, 16>(p, stream);
  return Launch<T, 32>(p, stream);
}

template void LaunchEmaScan<float>(const EmaScanParams<float>&, cudaStream_t);
template void LaunchEmaScan<__half>(const EmaScanParams<__half>&, cudaStream_t);
template void LaunchEmaScan<__nv_bfloat16>(const EmaScanParams<__nv_bfloat16>&, cudaStream_t);

}  // namespace seqboat::cuda
