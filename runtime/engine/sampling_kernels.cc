// Sampling loops over the vocabulary (see sampling_kernels.h). GCC vector types: 8 floats per
// operation, two SSE halves on a baseline x86-64 build, one AVX register in the v3/v4 clones.
// This file is compiled with -ffp-contract=off, so every clone rounds every step the same way
// (clones: SEQBOAT_SIMD_CLONES; none under sanitizers).
#include "runtime/engine/sampling_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "runtime/util/simd_clones.h"

namespace seqboat {
namespace {

// GCC notes an ABI change where 32-byte vectors would cross functions in the baseline clone;
// the helpers are always inlined, so none does. The note comes at the end of the file: the
// whole file ignores it.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float F8 __attribute__((vector_size(32)));
typedef int32_t I8 __attribute__((vector_size(32)));
typedef float F4 __attribute__((vector_size(16)));
typedef double D4 __attribute__((vector_size(32)));

__attribute__((always_inline)) inline F8 Load8(const float* p) {
  F8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
__attribute__((always_inline)) inline void Store8(float* p, F8 v) { std::memcpy(p, &v, sizeof(v)); }
__attribute__((always_inline)) inline F8 Splat(float x) { return F8{} + x; }

// exp(x) for x <= 0. x = n ln2 + r with n = round(x / ln2) and |r| <= ln2 / 2 (ln2 split in
// a short high part, exact when multiplied by n, and a low part); exp(r) by its Taylor
// polynomial of degree 7 (remainder below 5e-9 relative); 2^n put in the exponent bits.
// x below -87 (where exp nears the smallest normal float) gives 0, and so do -inf and NaN.
__attribute__((always_inline)) inline F8 ExpNonPositive(F8 x) {
  const I8 keep = x >= Splat(-87.0f);  // false for NaN
  x = keep ? x : Splat(0.0f);
  const F8 shifter = Splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const F8 t = x * Splat(1.44269504088896341f) + shifter;  // x / ln2 + shifter
  const F8 n = t - shifter;
  const I8 exponent = (I8)t - (I8)shifter;  // n, -126..0
  F8 r = x - n * Splat(0.693359375f);       // ln2's high part: 9 significant bits
  r = r - n * Splat(-2.12194440e-4f);       // ln2's low part
  F8 p = Splat(1.0f / 5040.0f);
  p = p * r + Splat(1.0f / 720.0f);
  p = p * r + Splat(1.0f / 120.0f);
  p = p * r + Splat(1.0f / 24.0f);
  p = p * r + Splat(1.0f / 6.0f);
  p = p * r + Splat(0.5f);
  p = p * r + Splat(1.0f);
  p = p * r + Splat(1.0f);
  const I8 bits = (exponent + 127) << 23;
  const F8 scale = (F8)bits;
  return keep ? p * scale : Splat(0.0f);
}

// The sum of p[0, n) in double, only of the p >= threshold when kMasked: two 4-lane
// accumulators over consecutive groups of 8, their lanes added in order, then the tail.
template <bool kMasked>
__attribute__((always_inline)) inline double SumInDouble(const float* p, int64_t n,
                                                         float threshold) {
  const F4 t = F4{} + threshold;
  D4 low{}, high{};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    F4 a, c;
    std::memcpy(&a, p + i, sizeof(a));
    std::memcpy(&c, p + i + 4, sizeof(c));
    if constexpr (kMasked) {
      a = a >= t ? a : F4{};
      c = c >= t ? c : F4{};
    }
    low += __builtin_convertvector(a, D4);
    high += __builtin_convertvector(c, D4);
  }
  const D4 both = low + high;
  double sum = ((both[0] + both[1]) + both[2]) + both[3];
  for (; i < n; ++i) sum += !kMasked || p[i] >= threshold ? p[i] : 0.0f;
  return sum;
}

}  // namespace

SEQBOAT_SIMD_CLONES
float RowMax(const float* x, int64_t n, int64_t skip) {
  const float lowest = -std::numeric_limits<float>::infinity();
  F8 best = Splat(lowest);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    F8 v = Load8(x + i);
    if (skip >= i && skip < i + 8) v[skip - i] = lowest;
    best = v > best ? v : best;  // NaN lanes lose
  }
  float m = lowest;
  for (int j = 0; j < 8; ++j) m = best[j] > m ? best[j] : m;
  for (; i < n; ++i) {
    if (i != skip && x[i] > m) m = x[i];
  }
  return m;
}

SEQBOAT_SIMD_CLONES
int64_t FirstIndexOf(const float* x, int64_t n, float value, int64_t skip) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const I8 equal = Load8(x + i) == Splat(value);
    int any = 0;
    for (int j = 0; j < 8; ++j) any |= equal[j];
    if (any == 0) continue;
    for (int j = 0; j < 8; ++j) {
      if (equal[j] != 0 && i + j != skip) return i + j;
    }
  }
  for (; i < n; ++i) {
    if (x[i] == value && i != skip) return i;
  }
  return -1;
}

SEQBOAT_SIMD_CLONES
void ExpShifted(const float* x, int64_t n, float shift, float temperature, float* out) {
  const F8 shift8 = Splat(shift), temperature8 = Splat(temperature);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    Store8(out + i, ExpNonPositive((Load8(x + i) - shift8) / temperature8));
  if (i < n) {  // the tail through a padded vector, so that it rounds as the rest
    float tail[8];
    for (int j = 0; j < 8; ++j) tail[j] = i + j < n ? x[i + j] : shift;
    const F8 e = ExpNonPositive((Load8(tail) - shift8) / temperature8);
    for (int j = 0; i + j < n; ++j) out[i + j] = e[j];
  }
}

SEQBOAT_SIMD_CLONES
double BlockSums(const float* p, int64_t n, std::vector<double>* block_sums) {
  const int64_t blocks = (n + kDrawBlock - 1) / kDrawBlock;
  block_sums->resize(blocks);
  double total = 0.0;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kDrawBlock, end = std::min(n, begin + kDrawBlock);
    const double sum = SumInDouble<false>(p + begin, end - begin, 0.0f);
    (*block_sums)[b] = sum;
    total += sum;
  }
  return total;
}

SEQBOAT_SIMD_CLONES
double MassAtLeast(const float* p, int64_t n, float threshold) {
  return SumInDouble<true>(p, n, threshold);
}

void MostLikelyIds(const float* score, int64_t n, int64_t m, std::vector<int32_t>* ids) {
  auto more_likely = [score](int32_t a, int32_t b) {
    return score[a] != score[b] ? score[a] > score[b] : a < b;
  };
  ids->clear();
  if (m * 8 < n) {
    // One pass keeping the best m in a heap whose front is the least likely kept: most ids
    // lose one comparison with it, and a later id never wins a tie.
    for (int32_t id = 0; id < n; ++id) {
      if (static_cast<int64_t>(ids->size()) < m) {
        ids->push_back(id);
        std::push_heap(ids->begin(), ids->end(), more_likely);
      } else if (score[id] > score[ids->front()]) {
        std::pop_heap(ids->begin(), ids->end(), more_likely);
        ids->back() = id;
        std::push_heap(ids->begin(), ids->end(), more_likely);
      }
    }
  } else {
    ids->resize(n);
    std::iota(ids->begin(), ids->end(), 0);
    if (m < n) std::nth_element(ids->begin(), ids->begin() + m, ids->end(), more_likely);
    ids->resize(m);
  }
  std::sort(ids->begin(), ids->end(), more_likely);
}

int64_t DrawFromBlocks(const float* p, int64_t n, const std::vector<double>& block_sums,
                       double target) {
  const int64_t blocks = static_cast<int64_t>(block_sums.size());
  double prefix = 0.0;
  for (int64_t b = 0; b < blocks; ++b) {
    const double next = prefix + block_sums[b];
    if (target < next) {
      // target >= prefix here, so the scan cannot stop on an id with p == 0.
      const int64_t begin = b * kDrawBlock, end = std::min(n, begin + kDrawBlock);
      double cumulative = prefix;
      int64_t last = -1;
      for (int64_t i = begin; i < end; ++i) {
        if (p[i] <= 0.0f) continue;
        last = i;
        cumulative += p[i];
        if (target < cumulative) return i;
      }
      if (last >= 0) return last;  // the in-block sum rounded below the block sum
    }
    prefix = next;
  }
  for (int64_t i = n - 1; i >= 0; --i) {  // rounding at the very end of the mass
    if (p[i] > 0.0f) return i;
  }
  return 0;
}

}  // namespace seqboat
