// The vectorised sampling loops against direct scalar computations: exp accuracy over its
// whole range and at its edges, maxima and first indices with skips and tails, block sums, and
// draws that follow the running sum (never an id of zero probability).
#include "runtime/engine/sampling_kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace seqboat {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(SamplingKernels, ExpIsAccurateOverItsRangeAndZeroBelowIt) {
  std::vector<float> x;
  for (int i = 0; i <= 1000000; ++i) x.push_back(-87.0f * static_cast<float>(i) / 1e6f);
  for (float v :
       {0.0f, -0.0f, -1e-30f, -1e-7f, -0.34657359f, -0.34657362f, -0.6931472f, -86.9999f, -87.0f})
    x.push_back(v);
  std::vector<float> out(x.size());
  ExpShifted(x.data(), x.size(), 0.0f, 1.0f, out.data());
  double worst = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double expected = std::exp(static_cast<double>(x[i]));
    if (expected < std::ldexp(1.0, -126)) continue;  // the subnormal end: checked below
    worst = std::max(worst, std::fabs(out[i] - expected) / expected);
  }
  EXPECT_LT(worst, 3e-7);
  EXPECT_EQ(out[1000001], 1.0f);  // exp(0) is exactly 1: the row maximum's weight
  EXPECT_EQ(out[1000002], 1.0f);

  const std::vector<float> edges = {-87.01f, -100.0f, -1e30f, -kInf, std::nanf(""), -87.0f};
  std::vector<float> edge_out(edges.size(), -1.0f);
  ExpShifted(edges.data(), edges.size(), 0.0f, 1.0f, edge_out.data());
  for (size_t i = 0; i + 1 < edges.size(); ++i) EXPECT_EQ(edge_out[i], 0.0f) << edges[i];
  EXPECT_GT(edge_out.back(), 0.0f);
  EXPECT_LT(edge_out.back(), 2e-38f);
}

TEST(SamplingKernels, ExpShiftedDividesByTheTemperatureInPlace) {
  std::vector<float> x = {3.0f, 1.0f, -2.0f, 3.0f, 0.5f, -40.0f,
                          2.0f, 1.5f, -7.0f, 2.9f, 3.0f};  // a tail
  const std::vector<float> original = x;
  ExpShifted(x.data(), x.size(), 3.0f, 0.7f, x.data());
  for (size_t i = 0; i < x.size(); ++i) {
    const double expected = std::exp((static_cast<double>(original[i]) - 3.0) / 0.7);
    EXPECT_NEAR(x[i], expected, 3e-7 * expected + 1e-30) << i;
  }
}

TEST(SamplingKernels, RowMaxAndFirstIndexSkipAndSeeTheTail) {
  for (int n : {0, 1, 5, 8, 9, 16, 37}) {
    std::vector<float> x(n);
    for (int i = 0; i < n; ++i) x[i] = static_cast<float>((i * 7) % 11) - 5.0f;
    for (int skip : {-1, 0, n / 2, n - 1}) {
      float expected = -kInf;
      for (int i = 0; i < n; ++i) {
        if (i != skip) expected = std::max(expected, x[i]);
      }
      EXPECT_EQ(RowMax(x.data(), n, skip), expected) << n << " " << skip;
      int64_t first = -1;
      for (int i = 0; i < n && first < 0; ++i) {
        if (i != skip && x[i] == expected) first = i;
      }
      EXPECT_EQ(FirstIndexOf(x.data(), n, expected, skip), first) << n << " " << skip;
    }
  }
  std::vector<float> with_nan = {1.0f, std::nanf(""), 3.0f, 2.0f, std::nanf(""),
                                 0.0f, 0.0f,          0.0f, 2.5f};
  EXPECT_EQ(RowMax(with_nan.data(), with_nan.size(), 2), 2.5f);
  EXPECT_EQ(FirstIndexOf(with_nan.data(), with_nan.size(), 7.0f, -1), -1);
}

TEST(SamplingKernels, BlockSumsAndDrawsFollowTheRunningSum) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  const int64_t n = 3 * kDrawBlock + 77;
  std::vector<float> p(n);
  for (int64_t i = 0; i < n; ++i) p[i] = uniform(rng) < 0.3f ? 0.0f : uniform(rng);
  // Zeros around the block boundaries, and a block of zeros.
  for (int64_t i = kDrawBlock - 5; i < kDrawBlock + 5; ++i) p[i] = 0.0f;
  for (int64_t i = 2 * kDrawBlock; i < 3 * kDrawBlock; ++i) p[i] = 0.0f;
  std::vector<double> sums;
  const double total = BlockSums(p.data(), n, &sums);
  ASSERT_EQ(sums.size(), 4u);
  EXPECT_EQ(sums[2], 0.0);
  double direct = 0.0;
  std::vector<double> before(n);  // running sum before each id
  for (int64_t i = 0; i < n; ++i) {
    before[i] = direct;
    direct += p[i];
  }
  EXPECT_NEAR(total, direct, 1e-9 * direct);
  for (int k = 0; k < 20000; ++k) {
    const double target = total * k / 20000.0;
    const int64_t i = DrawFromBlocks(p.data(), n, sums, target);
    ASSERT_GE(i, 0);
    ASSERT_LT(i, n);
    ASSERT_GT(p[i], 0.0f) << "drew id " << i << " of zero probability at target " << target;
    EXPECT_LE(before[i], target + 1e-9 * total) << i;
    EXPECT_GT(before[i] + p[i], target - 1e-9 * total) << i;
  }
  // The very end of the mass and exact block boundaries.
  EXPECT_GT(p[DrawFromBlocks(p.data(), n, sums, std::nextafter(total, 0.0))], 0.0f);
  EXPECT_GT(p[DrawFromBlocks(p.data(), n, sums, total)], 0.0f);
  EXPECT_GT(p[DrawFromBlocks(p.data(), n, sums, sums[0])], 0.0f);
  EXPECT_GE(DrawFromBlocks(p.data(), n, sums, sums[0] + sums[1]), 3 * kDrawBlock);
}

TEST(SamplingKernels, MostLikelyIdsAreTheSortedPrefixWithTiesById) {
  std::mt19937 rng(5);
  std::vector<float> score(3000);
  for (float& x : score) x = static_cast<float>(rng() % 200);  // many ties
  std::vector<int32_t> order(score.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return score[a] > score[b]; });
  std::vector<int32_t> ids = {99, 98};  // replaced, not appended to
  for (int64_t m :
       {1, 20, 374, 375, 1000, 2999, 3000}) {  // the heap pass below n / 8, sorting above
    MostLikelyIds(score.data(), score.size(), m, &ids);
    ASSERT_EQ(static_cast<int64_t>(ids.size()), m);
    EXPECT_TRUE(std::equal(ids.begin(), ids.end(), order.begin())) << m;
  }
}

}  // namespace
}  // namespace seqboat
