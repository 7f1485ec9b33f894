// The CPU backend: exact to MODEL.md (or with bf16 / int8 matrices on request), our own kernels
// and BLAS for products, threads over channels and rows.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/backend.h"
#include "runtime/cpu/cpu_ops.h"
#include "runtime/model/model.h"
#include "runtime/util/thread_pool.h"

namespace seqboat {

struct CpuBackendOptions : BackendOptions {
  int num_threads = 0;  // 0 = all hardware threads
  // weight_dtype: as_stored and f32 compute in f32 from any stored dtype (exact to MODEL.md);
  // bf16 and int8 convert the matrices (hx_proj, mx_proj, h_proj, fc1, fc2 and the output
  // projection) at load, and every product still takes fp32 inputs and accumulates in fp32.
  // The embedding, norms, EMA parameters and biases stay fp32. f16 is the CUDA backend's.
  // fifo_dtype: as_stored and f32 keep the FIFO keys and values in fp32; bf16 rounds every key
  // and value to bf16 as the GAU computes it (so a token attends to the same numbers however
  // its prompt was chunked) and stores it in 2 bytes, widened to fp32 as attention reads it.
};

class CpuBackend final : public Backend {
 public:
  // `model` must outlive the backend.
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(const Model& model,
                                                            const CpuBackendOptions& options);
  // What one slot of such a backend takes, without building one.
  static absl::StatusOr<size_t> StateBytesPerSlot(const ModelConfig& config,
                                                  const CpuBackendOptions& options);

  int num_slots() const override { return static_cast<int>(slots_.size()); }
  const char* name() const override { return "cpu"; }
  size_t state_bytes_per_slot() const override {
    return seqboat::StateBytesPerSlot(config_, layout_, FifoElementBytes(fifo_bf16_));
  }
  const char* weight_dtype() const override { return cpu::MatrixDTypeName(matrix_dtype_); }
  const char* fifo_dtype() const override { return fifo_bf16_ ? "bf16" : "f32"; }
  // Bytes of the weight matrices as the products read them (the matrices' dtype).
  size_t matrix_bytes() const;
  int fifo_capacity() const { return fifo_capacity_; }

  // Not thread-safe: one caller (the engine thread) drives the backend.
  absl::Status Forward(absl::Span<const SequenceChunk> batch, const ForwardOutputs& out) override;
  absl::Status ResetSlot(SlotId slot) override;
  absl::Status CopySlot(SlotId from, SlotId to) override;
  absl::Status Stats(SlotId slot, SlotStats* stats) const override;

 private:
  struct LayerState {
    float* ema_state;            // [D, N] (the CUDA backend keeps [N, D]: see its ema_state_)
    float* fifo_keys;            // [cap, Z] rotated keys, ring (null with a bf16 FIFO)
    float* fifo_values;          // [cap, H] ring (null with a bf16 FIFO)
    uint16_t* fifo_keys_bf16;    // the same in bf16 (null with an fp32 FIFO)
    uint16_t* fifo_values_bf16;  // the same in bf16 (null with an fp32 FIFO)
    int64_t* fifo_positions;     // [cap]
    float* input_ring;           // [T, D] normalised inputs, trained horizon only (else null)
    int32_t fifo_head = 0;       // physical index of the oldest entry
    int32_t fifo_count = 0;
    int64_t activated = 0;
  };
  struct Slot {
    std::unique_ptr<float[]> floats;        // every float array of every layer, one allocation
    std::unique_ptr<int64_t[]> positions;   // every layer's fifo_positions
    std::unique_ptr<uint16_t[]> fifo_bf16;  // every layer's bf16 FIFO keys and values, or null
    std::vector<LayerState> layers;
    int64_t position = 0;  // tokens consumed
  };

  // The matrices of one layer in the backend's dtype (fc1/fc2 empty without an FFN).
  struct LayerMatrices {
    cpu::Matrix hx_proj, mx_proj, h_proj, fc1, fc2;
  };

  // The checks of the options, and what follows from them.
  static absl::StatusOr<SlotLayout> Layout(const ModelConfig& config,
                                           const CpuBackendOptions& options);
  static absl::StatusOr<cpu::MatrixDType> MatrixDTypeOf(WeightDType dtype);
  static absl::StatusOr<bool> FifoIsBf16(WeightDType dtype);
  CpuBackend(const Model& model, const CpuBackendOptions& options, const SlotLayout& layout,
             cpu::MatrixDType matrix_dtype, bool fifo_bf16);
  static size_t FifoElementBytes(bool bf16) { return bf16 ? sizeof(uint16_t) : sizeof(float); }
  absl::Status AllocateSlots(int count);
  absl::Status CheckSlot(SlotId slot, const char* what) const;
  void RunLayer(int layer, absl::Span<const SequenceChunk> batch, const ForwardOutputs& out);
  void RunEma(int layer, absl::Span<const SequenceChunk> batch);
  void RunGau(int layer, absl::Span<const SequenceChunk> batch);
  void RunFfn(int layer);

  const Model& model_;
  const ModelConfig config_;
  const SlotLayout layout_;
  const bool trained_horizon_;
  const int truncation_;  // T when the trained horizon is on, else 0
  const int fifo_capacity_;
  size_t state_floats_per_slot_ = 0;  // the EMA states, fp32 FIFO keys and values, input rings
  const cpu::MatrixDType matrix_dtype_;
  const bool fifo_bf16_;
  std::vector<LayerMatrices> matrices_;  // [L]
  cpu::Matrix output_;                   // [V, D]
  std::vector<EmaCoefficients> ema_;     // [L]
  cpu::AttentionSpec attention_;
  std::vector<Slot> slots_;
  ThreadPool pool_;

  // Per-call scratch, sized for the current batch; rows = tokens of the batch.
  std::vector<int64_t> row_position_;  // [rows]
  std::vector<int32_t> row_chunk_;     // [rows]
  std::vector<int64_t> chunk_begin_;   // [chunks + 1] first row of each chunk
  std::vector<float> x_;               // [rows, D] residual stream
  std::vector<float> u_;               // [rows, D] normalised input of the unit
  std::vector<float> mx_;              // [rows, D] SiLU(MD-EMA output)
  std::vector<float> hx_;              // [rows, 2 + D] router logits + skip projection
  std::vector<float> gau_;             // [rows, D] gated attention output (0 where inactive)
  std::vector<float> rotary_cos_, rotary_sin_;  // [rows, Z/2]
  std::vector<float> router_confidence_;        // [rows]
  std::vector<int32_t> activated_rows_;         // [R] rows whose GAU runs, in row order
  std::vector<int64_t> chunk_activated_begin_;  // [chunks + 1] into activated_rows_
  std::vector<float> compact_;                  // [R, D] compressed rows
  std::vector<float> projected_;                // [R, Z + 2H] SiLU(mx_proj) = [z, r, v]
  std::vector<float> queries_, keys_;           // [R, Z]
  std::vector<int64_t> activated_positions_;    // [R]
  std::vector<float> attended_;                 // [R, H]  h (then h * r)
  std::vector<float> gau_out_;                  // [R, D]
  std::vector<float> ffn_hidden_;               // [rows, F]
  std::vector<float> ffn_in_;                   // [rows, D]
};

}  // namespace seqboat
