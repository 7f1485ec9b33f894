// Fixed-width float vectors (GCC vector extensions) for the CPU kernels: the compiler maps them
// to whatever the function's target has (one AVX-512 register, two AVX2 ones, four SSE ones).
// Helpers are always inlined, so a by-value vector never crosses a call and the ABI notes GCC
// gives for the narrower targets do not apply.
#pragma once

#include <cstdint>
#include <cstring>

namespace seqboat::cpu::vec {

typedef float Vec8 __attribute__((vector_size(32)));
typedef float Vec16 __attribute__((vector_size(64)));
typedef int32_t Vec16i __attribute__((vector_size(64)));

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

// exp(x) lane by lane, within 2 ulp of the exact value (cpu_ops_test measures it): x = n ln2 + r
// with n the nearest integer to x / ln2 and |r| <= ln2 / 2 (ln2 in two parts, so that n ln2 is
// exact), e^r by its Taylor series to r^7 (truncation below 1e-8 relative), then 2^n by the
// exponent bits, in two factors so that n = 128 and n = -126 stay normal. Below ln(FLT_MIN)
// (-87.34) the result is 0, above ln(FLT_MAX) +inf; NaN stays NaN.
__attribute__((always_inline)) inline Vec16 Exp(const Vec16& x) {
  constexpr float kMin = -87.3365448f, kMax = 88.7228394f;
  constexpr float kLog2e = 1.44269504f, kLn2High = 0.693359375f, kLn2Low = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const Vec16 clamped = x >= kMin ? (x <= kMax ? x : kMax) : kMin;  // NaN: kMin
  const Vec16 n = (clamped * kLog2e + kRound) - kRound;
  Vec16 r = clamped - n * kLn2High;
  r = r - n * kLn2Low;
  Vec16 p = r * (1.0f / 5040.0f) + (1.0f / 720.0f);
  p = p * r + (1.0f / 120.0f);
  p = p * r + (1.0f / 24.0f);
  p = p * r + (1.0f / 6.0f);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const Vec16i whole = __builtin_convertvector(n, Vec16i);
  const Vec16i half = whole >> 1;
  Vec16 scale_a, scale_b;
  const Vec16i bits_a = (half + 127) << 23, bits_b = (whole - half + 127) << 23;
  std::memcpy(&scale_a, &bits_a, sizeof(scale_a));
  std::memcpy(&scale_b, &bits_b, sizeof(scale_b));
  const Vec16 e = p * scale_a * scale_b;
  return x >= kMin ? (x <= kMax ? e : __builtin_inff()) : (x < kMin ? 0.0f : x);
}

// x * sigmoid(x) = x / (1 + e^-x) lane by lane.
__attribute__((always_inline)) inline Vec16 Silu(const Vec16& x) { return x / (1.0f + Exp(-x)); }

}  // namespace seqboat::cpu::vec
