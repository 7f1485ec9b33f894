// See fault_kernel.h.
#include <cstdint>

#include "tests/gpu/fault_kernel.h"

namespace seqboat::gpu_testing {
namespace {

__global__ void WriteThrough(int* address) { *address = 1; }

}  // namespace

cudaError_t LaunchIllegalWrite() {
  // Address 256: inside the first page, which no allocation ever maps.
  WriteThrough<<<1, 1>>>(reinterpret_cast<int*>(uintptr_t{256}));
  const cudaError_t launched = cudaGetLastError();
  if (launched != cudaSuccess) return launched;
  return cudaDeviceSynchronize();
}

}  // namespace seqboat::gpu_testing
