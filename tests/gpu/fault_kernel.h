// A deliberate device fault for the device-loss test: a kernel that writes through an address
// that is never mapped, which leaves the sticky error a lost device does.
#pragma once

#include <cuda_runtime.h>

namespace seqboat::gpu_testing {

// Launches the faulting kernel on the default stream and waits: returns the error (expected
// cudaErrorIllegalAddress). The process's CUDA context is unusable afterwards.
cudaError_t LaunchIllegalWrite();

}  // namespace seqboat::gpu_testing
