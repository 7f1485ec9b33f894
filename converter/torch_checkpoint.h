// A torch.save file opened in place: the zip archive, its unpickled data.pkl, and checked
// access to the storages behind tensors (offsets, strides, byte order, shared storages).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "converter/mapped_file.h"
#include "converter/pickle_value.h"
#include "converter/unpickler.h"
#include "converter/zip_archive.h"

namespace seqboat::convert {

// A tensor's elements, contiguous row-major and little-endian: either a view into the
// mapped checkpoint (contiguous tensors) or an owned copy (strided or byte-swapped ones).
struct TensorBytes {
  TensorBytes() = default;
  TensorBytes(TensorBytes&&) = default;  // moving keeps `owned`'s buffer, so `bytes` stays valid
  TensorBytes& operator=(TensorBytes&&) = default;
  TensorBytes(const TensorBytes&) = delete;
  TensorBytes& operator=(const TensorBytes&) = delete;

  TorchDType dtype = TorchDType::kFloat32;
  std::vector<int64_t> shape;
  int64_t numel = 0;
  absl::Span<const uint8_t> bytes;
  std::vector<uint8_t> owned;  // backs `bytes` when a copy was needed
  bool copied() const { return !owned.empty(); }
};

class TorchCheckpoint {
 public:
  static absl::StatusOr<std::unique_ptr<TorchCheckpoint>> Open(const std::string& path,
                                                               const UnpicklerLimits& limits = {});
  // Over bytes the caller keeps alive (tests, fuzzing). `label` names it in messages.
  static absl::StatusOr<std::unique_ptr<TorchCheckpoint>> FromBytes(
      absl::Span<const uint8_t> bytes, std::string label, const UnpicklerLimits& limits = {});

  const std::string& label() const { return label_; }
  const ZipArchive& archive() const { return *archive_; }
  const std::string& archive_name() const { return archive_name_; }  // "archive", ...
  bool big_endian() const { return big_endian_; }
  const Pickle& pickle() const { return *pickle_; }
  const Value& root() const { return pickle_->root(); }
  uint64_t file_size() const { return bytes_.size(); }

  // Checks that `tensor` (named `name` in messages) lies inside its storage and that the
  // storage entry exists and holds it (CRC included), then returns its elements.
  absl::StatusOr<TensorBytes> ReadTensor(const TensorInfo& tensor, absl::string_view name) const;
  // True when two tensors read the same bytes (a tied embedding saved twice).
  static bool SameView(const TensorInfo& a, const TensorInfo& b);

 private:
  TorchCheckpoint() = default;
  absl::Status Parse(const UnpicklerLimits& limits);
  absl::StatusOr<absl::Span<const uint8_t>> StorageEntry(const StorageInfo& storage,
                                                         absl::string_view tensor_name) const;

  std::unique_ptr<MappedFile> file_;  // null for FromBytes
  absl::Span<const uint8_t> bytes_;
  std::string label_;
  std::unique_ptr<ZipArchive> archive_;
  std::string archive_name_;
  bool big_endian_ = false;
  std::unique_ptr<Pickle> pickle_;
  mutable absl::flat_hash_set<std::string> crc_checked_;  // storage keys already verified
};

}  // namespace seqboat::convert
