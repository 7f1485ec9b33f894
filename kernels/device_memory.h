// Owning handles for device and pinned host allocations, and a carver that lays out many
// arrays in one allocation (first pass measures, second pass hands out pointers).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/statusor.h"
#include "kernels/cuda_status.h"

namespace seqboat::cuda {

class DeviceMemory {
 public:
  DeviceMemory() = default;
  ~DeviceMemory() { Reset(); }
  DeviceMemory(DeviceMemory&& other) noexcept { *this = std::move(other); }
  DeviceMemory& operator=(DeviceMemory&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
    return *this;
  }

  absl::Status Allocate(size_t bytes, const char* what) {
    Reset();
    if (bytes == 0) return absl::OkStatus();
    const cudaError_t error = cudaMalloc(&data_, bytes);
    if (error != cudaSuccess) {
      data_ = nullptr;
      (void)cudaGetLastError();  // an allocation failure is not sticky; clear it
      return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes,
                                                       " bytes of device memory for ", what, ": ",
                                                       cudaGetErrorString(error)));
    }
    bytes_ = bytes;
    return absl::OkStatus();
  }
  void Reset() {
    if (data_ != nullptr) (void)cudaFree(data_);
    data_ = nullptr;
    bytes_ = 0;
  }
  uint8_t* data() const { return static_cast<uint8_t*>(data_); }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

class PinnedMemory {
 public:
  PinnedMemory() = default;
  ~PinnedMemory() { Reset(); }
  PinnedMemory(const PinnedMemory&) = delete;
  PinnedMemory& operator=(const PinnedMemory&) = delete;

  absl::Status Allocate(size_t bytes, const char* what) {
    Reset();
    if (bytes == 0) return absl::OkStatus();
    const cudaError_t error = cudaMallocHost(&data_, bytes);
    if (error != cudaSuccess) {
      data_ = nullptr;
      (void)cudaGetLastError();
      return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes,
                                                       " bytes of pinned host memory for ", what,
                                                       ": ", cudaGetErrorString(error)));
    }
    bytes_ = bytes;
    return absl::OkStatus();
  }
  void Reset() {
    if (data_ != nullptr) (void)cudaFreeHost(data_);
    data_ = nullptr;
    bytes_ = 0;
  }
  uint8_t* data() const { return static_cast<uint8_t*>(data_); }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Lays out arrays one after another, each aligned to 256 bytes. With a null base it only
// measures (pointers come back null).
class Carver {
 public:
  explicit Carver(uint8_t* base) : base_(base) {}
  template <typename X>
  X* Take(int64_t count) {
    offset_ = (offset_ + 255) & ~size_t{255};
    X* result = base_ != nullptr ? reinterpret_cast<X*>(base_ + offset_) : nullptr;
    offset_ += static_cast<size_t>(count) * sizeof(X);
    return result;
  }
  // The offset (from the base) that Take<X>(count) would return a pointer to.
  template <typename X>
  size_t TakeOffset(int64_t count) {
    offset_ = (offset_ + 255) & ~size_t{255};
    const size_t result = offset_;
    offset_ += static_cast<size_t>(count) * sizeof(X);
    return result;
  }
  size_t bytes() const { return (offset_ + 255) & ~size_t{255}; }

 private:
  uint8_t* base_;
  size_t offset_ = 0;
};

}  // namespace seqboat::cuda
