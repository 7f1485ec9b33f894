// Fixed-width float vectors (GCC vector extensions) for the CPU kernels: the compiler maps them
// to whatever the function's target has (one AVX-512 register, two AVX2 ones, four SSE ones).
// Helpers are always inlined, so a by-value vector never crosses a call and the ABI notes GCC
// gives for the narrower targets do not apply.
#pragma once

#include <cstring>

namespace seqboat::cpu::vec {

typedef float Vec8 __attribute__((vector_size(32)));
typedef float Vec16 __attribute__((vector_size(64)));

template <typename V>
__attribute__((always_inline)) inline V Load(const float* p) {  // unaligned
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename V>
__attribute__((always_inline)) inline void Store(float* p, const V& v) {  // unaligned
  std::memcpy(p, &v, sizeof(v));
}

// The eight lanes summed in one fixed order.
__attribute__((always_inline)) inline float Sum8(const Vec8& v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// The high half added to the low half, lane by lane.
__attribute__((always_inline)) inline Vec8 Fold(const Vec16& v) {
  Vec8 low, high;
  std::memcpy(&low, &v, sizeof(Vec8));
  std::memcpy(&high, reinterpret_cast<const char*>(&v) + sizeof(Vec8), sizeof(Vec8));
  return low + high;
}

}  // namespace seqboat::cpu::vec
