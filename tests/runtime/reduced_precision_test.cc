// The CPU backend with bf16 and int8 matrices on every fixture model: teacher-forced logits near
// the PyTorch reference's (fp32) logits, and 256 greedy steps that pick fp32's token wherever
// fp32's top two logits are further apart than the dtype's logit tolerance.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/model/model.h"
#include "tests/runtime/fixture_util.h"

namespace seqboat {
namespace {

struct DTypeCase {
  WeightDType dtype;
  const char* name;
  // The largest logit error allowed against fp32, and the tolerance of the greedy comparison:
  // bf16 keeps 8 mantissa bits (relative error 2^-9 a weight), int8 about 7 (half a step of
  // max|w| / 127 in each group of 32).
  double logit_tolerance;
};

constexpr DTypeCase kCases[] = {
    {WeightDType::kBF16, "bf16", 0.05},
    {WeightDType::kInt8, "int8", 0.1},
};

std::unique_ptr<CpuBackend> MakeBackend(const Model& model, WeightDType dtype) {
  CpuBackendOptions options;
  options.num_slots = 1;
  options.weight_dtype = dtype;
  options.num_threads = 2;
  auto backend = CpuBackend::Create(model, options);
  EXPECT_TRUE(backend.ok()) << backend.status();
  return backend.ok() ? std::move(*backend) : nullptr;
}

int Argmax(const float* logits, int n) {
  return static_cast<int>(std::max_element(logits, logits + n) - logits);
}

// The gap between the largest logit and the second.
double TopTwoGap(const float* logits, int n) {
  std::vector<float> sorted(logits, logits + n);
  std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
  return static_cast<double>(sorted[0]) - sorted[1];
}

class ReducedPrecision : public ::testing::TestWithParam<std::string> {};

TEST_P(ReducedPrecision, TeacherForcedLogitsStayNearTheReference) {
  const std::string name = GetParam();
  auto model = Model::Load(testing::FixturesDir() + "/" + name + "/model.safetensors");
  ASSERT_TRUE(model.ok()) << model.status();
  const int V = (*model)->config().vocab_size;
  for (const DTypeCase& c : kCases) {
    std::unique_ptr<CpuBackend> backend = MakeBackend(**model, c.dtype);
    ASSERT_NE(backend, nullptr);
    EXPECT_STREQ(backend->weight_dtype(), c.name);
    for (int seq = 0; seq < testing::CountSequences(name); ++seq) {
      const testing::Expected expected = testing::LoadExpected(name, seq, "exact");
      ASSERT_FALSE(expected.tokens.empty());
      ASSERT_TRUE(backend->ResetSlot(0).ok());
      std::vector<float> logits(expected.tokens.size() * V);
      SequenceChunk chunk;
      chunk.tokens = expected.tokens;
      chunk.all_logits = true;
      ASSERT_TRUE(backend->Forward({chunk}, {absl::MakeSpan(logits), {}, {}}).ok());
      double worst = 0.0;
      for (size_t i = 0; i < logits.size(); ++i)
        worst = std::max(worst, std::fabs(static_cast<double>(logits[i]) - expected.logits[i]));
      printf("%s %s seq %d: max |logit - reference| %.4f\n", name.c_str(), c.name, seq, worst);
      EXPECT_LE(worst, c.logit_tolerance) << name << " " << c.name << " seq " << seq;
    }
  }
}

TEST_P(ReducedPrecision, GreedyStepsPickFp32sTokenUnlessItsTopTwoAreWithinTolerance) {
  const std::string name = GetParam();
  auto model = Model::Load(testing::FixturesDir() + "/" + name + "/model.safetensors");
  ASSERT_TRUE(model.ok()) << model.status();
  const int V = (*model)->config().vocab_size;
  const testing::Expected prompt = testing::LoadExpected(name, 0, "exact");
  ASSERT_GE(prompt.tokens.size(), 8u);
  const std::vector<int32_t> start(prompt.tokens.begin(), prompt.tokens.begin() + 8);
  std::unique_ptr<CpuBackend> exact = MakeBackend(**model, WeightDType::kF32);
  ASSERT_NE(exact, nullptr);
  for (const DTypeCase& c : kCases) {
    std::unique_ptr<CpuBackend> reduced = MakeBackend(**model, c.dtype);
    ASSERT_NE(reduced, nullptr);
    ASSERT_TRUE(exact->ResetSlot(0).ok());
    std::vector<float> exact_logits(V), reduced_logits(V);
    std::vector<int32_t> next = start;
    int differing = 0, near_ties = 0;
    for (int step = 0; step < 256; ++step) {
      SequenceChunk chunk;
      chunk.tokens = next;
      ASSERT_TRUE(exact->Forward({chunk}, {absl::MakeSpan(exact_logits), {}, {}}).ok());
      ASSERT_TRUE(reduced->Forward({chunk}, {absl::MakeSpan(reduced_logits), {}, {}}).ok());
      const int token = Argmax(exact_logits.data(), V);
      const double gap = TopTwoGap(exact_logits.data(), V);
      if (gap <= c.logit_tolerance) ++near_ties;
      if (Argmax(reduced_logits.data(), V) != token) {
        ++differing;
        EXPECT_LE(gap, c.logit_tolerance) << name << " " << c.name << " step " << step
                                          << ": fp32 picks " << token << " by a margin of " << gap;
      }
      next = {token};  // both go on with fp32's token, so every step is compared
    }
    printf("%s %s: %d of 256 greedy tokens differ from fp32's (%d steps within tolerance)\n",
           name.c_str(), c.name, differing, near_ties);
  }
}

INSTANTIATE_TEST_SUITE_P(FixtureModels, ReducedPrecision,
                         ::testing::ValuesIn(testing::FixtureModels()));

TEST(ReducedPrecisionOptions, F16IsTheCudaBackendsAndNamedSo) {
  auto model = Model::Load(testing::FixturesDir() + "/enwik8_tiny/model.safetensors");
  ASSERT_TRUE(model.ok()) << model.status();
  CpuBackendOptions options;
  options.weight_dtype = WeightDType::kF16;
  const absl::Status status = CpuBackend::Create(**model, options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(status.message()).find("f32 (as_stored), bf16 or int8"), std::string::npos)
      << status.message();
  EXPECT_FALSE(CpuBackend::StateBytesPerSlot((*model)->config(), options).ok());
}

}  // namespace
}  // namespace seqboat
