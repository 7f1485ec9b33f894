// Router and compaction (see router.h).
#include <algorithm>

#include "kernels/device_math.cuh"
#include "kernels/router.h"

namespace seqboat::cuda {
namespace {

constexpr int kRouterThreads = 1024;

__global__ void RouterKernel(RouterParams p) {
  __shared__ int warp_totals[32];
  __shared__ int carry;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (threadIdx.x == 0) carry = 0;
  __syncthreads();
  for (int64_t base = 0; base < p.rows; base += blockDim.x) {
    const int64_t r = base + threadIdx.x;
    int active = 0;
    if (r < p.rows) {
      // Same arithmetic as the CPU reference: logits in float (product + bias), the chunk's
      // activation bias added in double, softmax in double.
      const float* logits = p.hx + r * p.row_stride;
      const double b0 =
          p.activation_bias[static_cast<int64_t>(p.row_chunk[r]) * p.layers + p.layer];
      const double g0 = (static_cast<double>(logits[0] + p.hx_bias[0]) + b0) * p.inv_temperature;
      const double g1 = static_cast<double>(logits[1] + p.hx_bias[1]) * p.inv_temperature;
      const double top = fmax(g0, g1);
      const double e0 = exp(g0 - top), e1 = exp(g1 - top);
      const double p0 = e0 / (e0 + e1), p1 = e1 / (e0 + e1);
      active = p1 > p0 ? 1 : 0;  // ties go to "not activated"
      const float conf = static_cast<float>(fmax(p0, p1));
      p.confidence[r] = conf;
      if (p.activations_out != nullptr) p.activations_out[r * p.layers + p.layer] = active;
      if (p.confidences_out != nullptr) p.confidences_out[r * p.layers + p.layer] = conf;
    }
    // Block-wide exclusive scan of the decisions.
    int inclusive = active;
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      const int other = __shfl_up_sync(0xffffffffu, inclusive, offset);
      if (lane >= offset) inclusive += other;
    }
    if (lane == 31) warp_totals[warp] = inclusive;
    __syncthreads();
    if (warp == 0) {
      const int warps = blockDim.x >> 5;
      int total = lane < warps ? warp_totals[lane] : 0;
#pragma unroll
      for (int offset = 1; offset < 32; offset <<= 1) {
        const int other = __shfl_up_sync(0xffffffffu, total, offset);
        if (lane >= offset) total += other;
      }
      if (lane < warps) warp_totals[lane] = total;  // now inclusive over warps
    }
    __syncthreads();
    const int before_warp = warp > 0 ? warp_totals[warp - 1] : 0;
    const int index = carry + before_warp + inclusive - active;
    if (r < p.rows) {
      p.row_active_index[r] = active ? index : -1;
      if (active) p.activated_rows[index] = static_cast<int32_t>(r);
      const int32_t c = p.row_chunk[r];
      if (p.chunk_row_begin[c] == r) p.chunk_active_begin[c] = index;
    }
    const int block_total = warp_totals[(blockDim.x >> 5) - 1];
    __syncthreads();
    if (threadIdx.x == 0) carry += block_total;
    __syncthreads();
  }
  if (threadIdx.x == 0) p.chunk_active_begin[p.chunks] = carry;
}

}  // namespace

void LaunchRouter(const RouterParams& p, cudaStream_t stream) {
  if (p.chunks == 0) return;
  // As many threads as rows (a decode step of a few sequences needs one warp), at most 1024.
  const int threads = static_cast<int>(std::min<int64_t>(kRouterThreads, (p.rows + 31) / 32 * 32));
  RouterKernel<<<1, threads, 0, stream>>>(p);
}

}  // namespace seqboat::cuda
