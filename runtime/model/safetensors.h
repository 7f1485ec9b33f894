// Reader (mmap, fully validated) and writer of the standard .safetensors layout.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "runtime/util/dtype.h"

namespace seqboat {

struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside the mapping; no alignment guarantee
  size_t nbytes = 0;

  int64_t NumElements() const;
};

// An open, validated safetensors file. Header offsets are checked against the file size,
// against each other (no overlap, no gap) and against dtype x shape before any view exists.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }  // in file order
  const TensorView* Find(absl::string_view name) const;
  size_t file_size() const { return size_; }

 private:
  SafetensorsFile() = default;
  absl::Status Parse();

  std::string path_;
  const uint8_t* mapping_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  absl::Span<const uint8_t> bytes;  // exactly numel x dtype size
};

// Writes tensors in the given order, contiguous, header padded to 8 bytes. Atomic: writes
// `path`.tmp and renames it over `path`.
absl::Status WriteSafetensors(const std::string& path,
                              const std::map<std::string, std::string>& metadata,
                              const std::vector<TensorToWrite>& tensors);

}  // namespace seqboat
