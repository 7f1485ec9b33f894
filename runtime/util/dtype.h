// Element types of model files and the scalar conversions between them.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace seqboat {

enum class DType { kF32, kF16, kBF16 };

inline size_t DTypeSize(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }
const char* DTypeName(DType dtype);  // safetensors spelling: "F32", "F16", "BF16"
absl::StatusOr<DType> ParseDType(absl::string_view name);

inline float Bf16ToFloat(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, 4);
  return value;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t FloatToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float F16ToFloat(uint16_t bits);
uint16_t FloatToF16(float value);  // round to nearest even, overflow to inf

// Converts `count` elements stored as `dtype` at `src` (any alignment) to float.
void ConvertToFloat(DType dtype, const void* src, size_t count, float* dst);

// dst[i] = FloatToBf16(src[i]) for `count` elements.
inline void FloatsToBf16(const float* src, size_t count, uint16_t* dst) {
  for (size_t i = 0; i < count; ++i) dst[i] = FloatToBf16(src[i]);
}

}  // namespace seqboat
