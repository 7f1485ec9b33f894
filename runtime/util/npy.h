// Minimal .npy (NumPy format 1.0/2.0) reading and writing for logits, decisions and token ids.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace seqboat {

struct NpyArray {
  std::string descr;  // "<f4", "|u1", "<i4", "<i8"
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;  // C order

  int64_t NumElements() const;
  // Typed copies; fail when descr does not match.
  absl::StatusOr<std::vector<float>> AsFloat() const;
  absl::StatusOr<std::vector<int32_t>> AsInt32() const;  // from <i4 or <i8
  absl::StatusOr<std::vector<uint8_t>> AsUint8() const;
};

absl::StatusOr<NpyArray> ReadNpy(const std::string& path);
absl::Status WriteNpy(const std::string& path, const std::string& descr,
                      const std::vector<int64_t>& shape, absl::Span<const uint8_t> data);

inline absl::Status WriteNpyFloat(const std::string& path, const std::vector<int64_t>& shape,
                                  absl::Span<const float> values) {
  return WriteNpy(path, "<f4", shape,
                  {reinterpret_cast<const uint8_t*>(values.data()), values.size() * 4});
}
inline absl::Status WriteNpyUint8(const std::string& path, const std::vector<int64_t>& shape,
                                  absl::Span<const uint8_t> values) {
  return WriteNpy(path, "|u1", shape, values);
}

}  // namespace seqboat
