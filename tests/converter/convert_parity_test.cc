// Every reference fixture's checkpoint.pt (tests/fixtures/<model>, written by the PyTorch
// reference) converts to exactly the reference's model.safetensors tensors, and the converted
// file's logits through the CPU backend match the reference's to 1e-4 (fp32). fp16/bf16
// conversions load and stay close.
#include <algorithm>
#include <cmath>
#include <filesystem>

#include "absl/strings/match.h"
#include "converter/convert.h"
#include "gtest/gtest.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/model/model.h"
#include "runtime/model/safetensors.h"
#include "tests/converter/converter_test_util.h"
#include "tests/runtime/fixture_util.h"

namespace seqboat::convert {
namespace {

constexpr float kLogitTolerance = 1e-4f;  // MODEL.md parity target for fp32 weights

std::vector<std::string> ReferenceModels() {
  std::vector<std::string> models;
  for (const std::string& model : seqboat::testing::FixtureModels()) {
    if (std::filesystem::exists(seqboat::testing::FixturesDir() + "/" + model + "/checkpoint.pt")) {
      models.push_back(model);
    }
  }
  return models;
}

class ReferenceCheckpoint : public ::testing::TestWithParam<std::string> {
 protected:
  std::string Dir() const { return seqboat::testing::FixturesDir() + "/" + GetParam(); }

  std::string Convert(DType dtype) {
    ConvertOptions options;
    options.checkpoint_path = Dir() + "/checkpoint.pt";
    options.dict_path = Dir() + "/dict.txt";
    options.out_path = scratch_ / (std::string("model_") + DTypeName(dtype) + ".safetensors");
    options.dtype = dtype;
    auto report = ConvertCheckpoint(options);
    EXPECT_TRUE(report.ok()) << report.status();
    return options.out_path;
  }

  // Max |logit - reference| over every position of every sequence, step mode.
  float WorstLogitError(const Model& model, const std::string& horizon) {
    CpuBackendOptions options;
    options.ema_horizon = horizon == "trained" ? EmaHorizon::kTrained : EmaHorizon::kExact;
    auto backend = CpuBackend::Create(model, options);
    EXPECT_TRUE(backend.ok()) << backend.status();
    if (!backend.ok()) return INFINITY;
    const int V = model.config().vocab_size;
    float worst = 0.0f;
    for (int k = 0; k < seqboat::testing::CountSequences(GetParam()); ++k) {
      const auto expected = seqboat::testing::LoadExpected(GetParam(), k, horizon);
      EXPECT_TRUE((*backend)->ResetSlot(0).ok());
      std::vector<float> logits(expected.tokens.size() * V);
      SequenceChunk chunk{0, absl::MakeConstSpan(expected.tokens), true};
      EXPECT_TRUE((*backend)->Forward({&chunk, 1}, {absl::MakeSpan(logits), {}, {}}).ok());
      for (size_t i = 0; i < logits.size(); ++i) {
        const float diff = std::fabs(logits[i] - expected.logits[i]);
        if (!(diff <= worst)) worst = diff;  // NaN counts as the worst
      }
    }
    return worst;
  }

  seqboat::convert::testing::ScratchDir scratch_;
};

TEST_P(ReferenceCheckpoint, TensorsAndMetadataEqualTheReference) {
  const std::string out = Convert(DType::kF32);
  auto actual = SafetensorsFile::Open(out);
  auto expected = SafetensorsFile::Open(Dir() + "/model.safetensors");
  ASSERT_TRUE(actual.ok()) << actual.status();
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_EQ((*actual)->tensors().size(), (*expected)->tensors().size());
  for (const TensorView& e : (*expected)->tensors()) {
    const TensorView* a = (*actual)->Find(e.name);
    ASSERT_NE(a, nullptr) << e.name;
    EXPECT_EQ(a->dtype, e.dtype);
    EXPECT_EQ(a->shape, e.shape) << e.name;
    ASSERT_EQ(a->nbytes, e.nbytes);
    EXPECT_EQ(std::memcmp(a->data, e.data, e.nbytes), 0) << e.name << " differs";
  }
  for (const char* key : {"format", "format_version", "config", "tokenizer", "source_sha256"}) {
    EXPECT_EQ((*actual)->metadata().at(key), (*expected)->metadata().at(key)) << key;
  }
}

TEST_P(ReferenceCheckpoint, LogitsMatchTheReference) {
  auto model = Model::Load(Convert(DType::kF32));
  ASSERT_TRUE(model.ok()) << model.status();
  for (const char* horizon : {"exact", "trained"}) {
    EXPECT_LE(WorstLogitError(**model, horizon), kLogitTolerance) << horizon;
  }
}

TEST_P(ReferenceCheckpoint, HalfPrecisionConversionsRun) {
  // Rounding the weights moves logits by about the weights' relative precision times their
  // magnitude; the bounds only catch gross errors (a wrong tensor or byte order).
  for (auto [dtype, bound] : {std::pair{DType::kF16, 0.05f}, std::pair{DType::kBF16, 0.5f}}) {
    auto model = Model::Load(Convert(dtype));
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ((*model)->stored_dtype(), dtype);
    EXPECT_LE(WorstLogitError(**model, "exact"), bound) << DTypeName(dtype);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ReferenceCheckpoint, ::testing::ValuesIn(ReferenceModels()));
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ReferenceCheckpoint);

}  // namespace
}  // namespace seqboat::convert
