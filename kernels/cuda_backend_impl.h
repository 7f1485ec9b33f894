// The CUDA backend's class, shared by its two translation units: cuda_backend.cc (creation,
// state slots, the host side of Forward and the CUDA graphs) and cuda_forward.cc (the
// forward pass enqueued on the stream: embedding, every layer's kernels and products, logits).
// Instantiated for T = float, __half and __nv_bfloat16 (the weight dtype). Internal to kernels/.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <tuple>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/cuda_backend.h"
#include "kernels/device_memory.h"
#include "kernels/device_weights.h"
#include "kernels/fifo_attention.h"
#include "runtime/backend.h"
#include "runtime/model/model.h"

namespace seqboat {
namespace cuda {

template <typename T>
constexpr cudaDataType_t kGemmType = CUDA_R_32F;
template <>
constexpr cudaDataType_t kGemmType<__half> = CUDA_R_16F;
template <>
constexpr cudaDataType_t kGemmType<__nv_bfloat16> = CUDA_R_16BF;

// The sizes one forward pass is enqueued for; decode shapes (one token per chunk) are
// captured as graphs keyed by this.
struct Shape {
  int64_t rows = 0;
  int64_t chunks = 0;
  int64_t logit_rows = 0;
  int64_t longest_chunk = 1;
  int splits = 1;
  int split_len = 0;
  int tile_splits = 1;
  bool want_activations = false;
  bool want_confidences = false;
  auto Key() const {
    return std::tuple(rows, chunks, logit_rows, want_activations, want_confidences);
  }
};

// Where the uploaded bookkeeping sits (byte offsets), packed for one copy.
struct InputLayout {
  size_t positions, tokens, row_chunk, chunk_slot, chunk_row_begin, logit_rows, activation_bias,
      bytes;
};
inline InputLayout LayoutInputs(int64_t rows, int64_t chunks, int64_t logit_rows, int64_t layers) {
  Carver carver(nullptr);
  InputLayout layout;
  layout.positions = carver.TakeOffset<int64_t>(rows);
  layout.tokens = carver.TakeOffset<int32_t>(rows);
  layout.row_chunk = carver.TakeOffset<int32_t>(rows);
  layout.chunk_slot = carver.TakeOffset<int32_t>(chunks);
  layout.chunk_row_begin = carver.TakeOffset<int32_t>(chunks + 1);
  layout.logit_rows = carver.TakeOffset<int32_t>(logit_rows);
  layout.activation_bias = carver.TakeOffset<float>(chunks * layers);  // [chunks, L]
  layout.bytes = carver.bytes();
  return layout;
}

struct Capacity {
  int64_t rows = 0, chunks = 0, logit_rows = 0, partial_rows = 0;
  bool Holds(const Capacity& need) const {
    return need.rows <= rows && need.chunks <= chunks && need.logit_rows <= logit_rows &&
           need.partial_rows <= partial_rows;
  }
};

// The backends' spelling of T ("f32", "f16", "bf16").
template <typename T>
constexpr const char* DeviceDTypeName() {
  if constexpr (std::is_same_v<T, float>) return "f32";
  if constexpr (std::is_same_v<T, __half>) return "f16";
  return "bf16";
}

template <typename T>
class CudaBackend final : public Backend {
 public:
  CudaBackend(const Model& model, const CudaBackendOptions& options, const SlotLayout& layout)
      : model_(model),
        config_(model.config()),
        options_(options),
        layout_(layout),
        capacity_(layout.fifo_capacity),
        truncation_(layout.truncation) {}
  ~CudaBackend() override;

  absl::Status Init();

  int num_slots() const override { return options_.num_slots; }
  const char* name() const override { return "cuda"; }
  size_t state_bytes_per_slot() const override { return StateBytesPerSlot(); }
  const char* weight_dtype() const override { return DeviceDTypeName<T>(); }
  const char* fifo_dtype() const override { return DeviceDTypeName<T>(); }

  absl::Status Forward(absl::Span<const SequenceChunk> batch, const ForwardOutputs& out) override;
  absl::Status ResetSlot(SlotId slot) override;
  absl::Status CopySlot(SlotId from, SlotId to) override;
  absl::Status Stats(SlotId slot, SlotStats* stats) const override;
  absl::Status CheckHealth() override;

  // FIFO keys and values in the weights' dtype, and each layer's FIFO bookkeeping.
  size_t StateBytesPerSlot() const {
    return seqboat::StateBytesPerSlot(config_, layout_, sizeof(T), sizeof(FifoMeta));
  }

 private:
  // Per-call arrays (rows = tokens of the call, R = its activated rows, R <= rows).
  struct Scratch {
    uint8_t* inputs;              // the uploaded bookkeeping (InputLayout)
    float* x;                     // [rows, D] residual stream
    float2* norm_stats;           // [rows] statistics of x for the next pre-norm
    T* mx;                        // [rows, D] SiLU(MD-EMA output)
    float* hx;                    // [rows, 2 + D]
    float* projected;             // [rows, Z + 2H] mx_proj of every row (see EnqueueLayer)
    float* queries;               // [rows, Z]
    T* keys;                      // [rows, Z]
    T* values;                    // [rows, H]
    float* gates;                 // [rows, H]
    float* partial_h;             // [partial_rows, H]
    float* partial_max;           // [partial_rows]
    float* partial_sum;           // [partial_rows]
    int32_t* row_counters;        // [rows] split-attention merge counters (kept zero)
    T* attended;                  // [rows, H] h * r
    float* gau_out;               // [rows, D]
    float* confidence;            // [rows]
    int32_t* row_active_index;    // [rows]
    int32_t* activated_rows;      // [rows]
    int32_t* chunk_active_begin;  // [L, chunks + 1]
    float* rotary_cos;            // [rows, Z/2]
    float* rotary_sin;            // [rows, Z/2]
    T* ffn_in;                    // [rows, D]
    float* ffn_hidden;            // [rows, F]
    T* ffn_act;                   // [rows, F]
    float* ffn_out;               // [rows, D]
    T* final_rows;                // [logit_rows, D]
    float* logits;                // [logit_rows, V]
    uint8_t* activations;         // [rows, L]
    float* confidences;           // [rows, L]
  };
  // Pinned host mirrors of what travels.
  struct HostStaging {
    uint8_t* inputs;
    float* logits;
    uint8_t* activations;
    float* confidences;
  };
  struct DeviceInputs {
    const int64_t* positions;
    const int32_t* tokens;
    const int32_t* row_chunk;
    const int32_t* chunk_slot;
    const int32_t* chunk_row_begin;
    const int32_t* logit_rows;
    const float* activation_bias;  // [chunks, L]
  };

  void CarveScratch(Carver& carver, const Capacity& c, Scratch* s) const;
  void CarveStaging(Carver& carver, const Capacity& c, HostStaging* h) const;
  absl::Status EnsureCapacity(const Capacity& need);
  absl::Status CheckSlot(SlotId slot, const char* what) const;
  // Everything from the upload to the downloads, on stream_; no host synchronisation.
  absl::Status Enqueue(const Shape& shape);
  absl::Status EnqueueLayer(int l, const Shape& shape, const DeviceInputs& in);
  absl::Status RunGraph(const Shape& shape);
  void ClearGraphs();

  const Model& model_;
  const ModelConfig config_;
  const CudaBackendOptions options_;
  const SlotLayout layout_;
  const int capacity_;    // FIFO entries per layer
  const int truncation_;  // T in the trained horizon, else 0
  int multiprocessors_ = 1;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  DeviceMemory cublas_workspace_;
  DeviceMemory probe_memory_;  // CheckHealth's own bytes

  DeviceMemory weight_memory_;
  DeviceModelWeights<T> weights_;

  // State slots: [slots, L, ...] per array, allocated once.
  DeviceMemory ema_memory_, ring_memory_, keys_memory_, values_memory_, positions_memory_,
      meta_memory_;
  // [slots, L, N, D]: n-major, where the CPU keeps [D, N]. A kernel's threads run over the
  // channels d, so that consecutive threads read consecutive floats for each n (coalesced);
  // the CPU walks one channel's N values at a time. ResetSlot/CopySlot see only bytes.
  float* ema_state_ = nullptr;
  float* input_ring_ = nullptr;         // [slots, L, T, D] (trained horizon)
  T* fifo_keys_ = nullptr;              // [slots, L, cap, Z]
  T* fifo_values_ = nullptr;            // [slots, L, cap, H]
  int64_t* fifo_positions_ = nullptr;   // [slots, L, cap]
  FifoMeta* fifo_meta_ = nullptr;       // [slots, L]
  std::vector<int64_t> slot_position_;  // tokens consumed per slot (host knows these)

  Capacity scratch_capacity_;
  DeviceMemory scratch_memory_;
  PinnedMemory staging_memory_;
  Scratch scratch_{};
  HostStaging staging_{};
  std::map<std::tuple<int64_t, int64_t, int64_t, bool, bool>, cudaGraphExec_t> graphs_;
  std::set<std::tuple<int64_t, int64_t, int64_t, bool, bool>>
      graph_candidates_;  // shapes seen once
};

extern template class CudaBackend<float>;
extern template class CudaBackend<__half>;
extern template class CudaBackend<__nv_bfloat16>;

}  // namespace cuda
}  // namespace seqboat
