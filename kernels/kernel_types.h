// Plain types shared by the CUDA kernels and the host code that launches them (no CUDA
// headers needed here, so both nvcc and g++ translation units include it).
#pragma once

#include <cstdint>

namespace seqboat::cuda {

// Mirrors of the model's enums, kept free of the runtime's headers so .cu files stay small.
enum class DeviceNorm : int32_t {
  kNone = 0,   // copy (and convert) the row unchanged
  kLayerNorm,  // (x - mean) / sqrt(var + eps) [* weight + bias]
  kScaleNorm,  // x * scalar / sqrt(mean(x^2) + eps)
  kRmsNorm,    // x * weight / sqrt(mean(x^2) + eps)
};

enum class DeviceAttention : int32_t { kSoftmax = 0, kRelu2, kLaplace };

// Bookkeeping of one (slot, layer) FIFO ring, kept on the device: the router's decisions
// never travel to the host, so neither do the counts they change.
struct FifoMeta {
  int32_t head;       // physical index of the oldest entry
  int32_t count;      // entries held, <= capacity
  int64_t activated;  // tokens that activated this layer since the slot's reset
};
static_assert(sizeof(FifoMeta) == 16, "FifoMeta is copied as raw bytes");

// Weights of one norm on the device (fp32); weight == nullptr means non-affine.
struct DeviceNormWeights {
  DeviceNorm kind = DeviceNorm::kNone;
  const float* weight = nullptr;  // [D]; [1] for scalenorm
  const float* bias = nullptr;    // [D] layernorm only
};

}  // namespace seqboat::cuda
