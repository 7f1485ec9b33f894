// The CUDA backend: the whole forward pass on one GPU (cuBLAS products, kernels/ for the rest)
// behind runtime/backend.h, agreeing with the CPU backend (the reference) to tolerance.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/backend.h"
#include "runtime/model/model.h"

namespace seqboat {

// The dtype of the matrices on the device (and of the FIFO keys/values, and of the activations
// that feed the matrix products). Accumulation is always fp32; EMA state is always fp32.
enum class CudaWeightDType {
  kAsStored,  // the dtype of the model file (embed_tokens.weight)
  kF32,
  kF16,
  kBF16,
};

struct CudaBackendOptions {
  int num_slots = 1;
  EmaHorizon ema_horizon = EmaHorizon::kExact;
  // FIFO slots per layer, as CpuBackendOptions::fifo_capacity: 0 takes the model's w; required
  // (> 0) for SeqBoat-full models.
  int fifo_capacity = 0;
  CudaWeightDType weight_dtype = CudaWeightDType::kAsStored;
  int device = 0;  // CUDA device ordinal
  // Device bytes the state slots may take (num_slots x state_bytes_per_slot()); 0 = any that
  // fits in free device memory. Slots are allocated once, at creation.
  size_t state_memory_budget_bytes = 0;
  // Replay decode steps (one token per chunk) from CUDA graphs captured per batch shape.
  bool use_cuda_graphs = true;
};

// Fails with FAILED_PRECONDITION when no CUDA device (or no driver) is present,
// RESOURCE_EXHAUSTED when the slots exceed the budget or the device memory, INVALID_ARGUMENT
// for options the model cannot take. `model` must outlive the backend.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const Model& model,
                                                           const CudaBackendOptions& options);

// OK when device `device` exists and a context can be made on it; else why not.
absl::Status CudaDeviceAvailable(int device = 0);

// Parses "as_stored" | "f32" | "f16" | "bf16" (flag values).
absl::StatusOr<CudaWeightDType> ParseCudaWeightDType(const std::string& name);

}  // namespace seqboat
