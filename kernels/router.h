// The router (tempered two-way softmax: decision and confidence) with on-device compaction
// of the activated rows: the list, its count and each chunk's share never leave the device.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace seqboat::cuda {

struct RouterParams {
  const float* hx = nullptr;                 // [rows, 2 + D] raw hx_proj product; columns 0-1 route
  const float* hx_bias = nullptr;            // [2 + D]
  int64_t row_stride = 0;                    // 2 + D
  double inv_temperature = 1.0;              // exp(-q_router.temp)
  const float* activation_bias = nullptr;    // [chunks, layers] added to logit 0 before the
                                             // temperature (SequenceChunk::activation_bias)
  const int32_t* row_chunk = nullptr;        // [rows]
  const int32_t* chunk_row_begin = nullptr;  // [chunks + 1]
  int64_t rows = 0;
  int chunks = 0;
  // Outputs.
  float* confidence = nullptr;            // [rows] max(p0, p1)
  int32_t* row_active_index = nullptr;    // [rows] index among activated rows, or -1
  int32_t* activated_rows = nullptr;      // [rows] activated row ids in row order (first R used)
  int32_t* chunk_active_begin = nullptr;  // [chunks + 1] first activated index of each chunk;
                                          // [chunks] holds R, the number of activated rows
  uint8_t* activations_out = nullptr;     // [rows, layers] column `layer` written (null = skip)
  float* confidences_out = nullptr;       // [rows, layers] column `layer` written (null = skip)
  int layers = 0;
  int layer = 0;
};
// One block: a chunked block-wide scan keeps the compaction deterministic and in row order.
void LaunchRouter(const RouterParams& p, cudaStream_t stream);

}  // namespace seqboat::cuda
