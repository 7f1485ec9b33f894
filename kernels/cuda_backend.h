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

// weight_dtype: the matrices, FIFO keys/values and the activations that feed the products,
// on the device.
struct CudaBackendOptions : BackendOptions {
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

// What one slot of such a backend takes on the device, without building one.
absl::StatusOr<size_t> CudaStateBytesPerSlot(const Model& model, const CudaBackendOptions& options);

}  // namespace seqboat
