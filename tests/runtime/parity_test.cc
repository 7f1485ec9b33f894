// The CPU backend against the PyTorch reference's logits, decisions and confidences, in
// step and prefill mode, in batches, across slot copies, for both EMA horizons, and under the
// router activation biases the reference wrote fixtures for.
#include <algorithm>
#include <cmath>
#include <memory>
#include <ostream>

#include "gtest/gtest.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/model/model.h"
#include "tests/runtime/biased_batch_check.h"
#include "tests/runtime/fixture_util.h"

namespace seqboat {
namespace {

using testing::Expected;

constexpr float kLogitTolerance = 1e-4f;  // fp32 weights, MODEL.md parity target
constexpr float kConfidenceTolerance = 1e-4f;

struct Case {
  std::string model;
  std::string horizon;  // "exact" or "trained"
  // >= 0: the reference's activation bias j (exact horizon), applied to every chunk.
  int bias = -1;
  std::vector<float> activation_bias = {};  // [L] when bias >= 0

  // The middle of the fixture files' names: "exact", "trained", "exact.bias1".
  std::string files() const {
    return bias < 0 ? horizon : horizon + ".bias" + std::to_string(bias);
  }
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.model << " " << c.files(); }

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return info.param.model + "_" + info.param.horizon +
         (info.param.bias < 0 ? "" : "_bias" + std::to_string(info.param.bias));
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (const std::string& model : testing::FixtureModels()) {
    cases.push_back({model, "exact"});
    cases.push_back({model, "trained"});
    const std::vector<std::vector<float>> biases = testing::FixtureActivationBiases(model);
    for (size_t j = 0; j < biases.size(); ++j)
      cases.push_back({model, "exact", static_cast<int>(j), biases[j]});
  }
  return cases;
}

class ParityTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    auto model =
        Model::Load(testing::FixturesDir() + "/" + GetParam().model + "/model.safetensors");
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    num_sequences_ = testing::CountSequences(GetParam().model);
    ASSERT_GT(num_sequences_, 0);
    for (int k = 0; k < num_sequences_; ++k)
      expected_.push_back(testing::LoadExpected(GetParam().model, k, GetParam().files()));
    bias_ = GetParam().activation_bias;
    if (GetParam().bias >= 0) {
      ASSERT_EQ(static_cast<int>(bias_.size()), L());
    }
  }

  std::unique_ptr<CpuBackend> MakeBackend(int slots) {
    CpuBackendOptions options;
    options.num_slots = slots;
    options.ema_horizon =
        GetParam().horizon == "trained" ? EmaHorizon::kTrained : EmaHorizon::kExact;
    auto backend = CpuBackend::Create(*model_, options);
    EXPECT_TRUE(backend.ok()) << backend.status();
    return backend.ok() ? std::move(*backend) : nullptr;
  }

  int V() const { return model_->config().vocab_size; }
  int L() const { return model_->config().layers; }

  // Checks logits rows [t_begin, t_begin + rows) of sequence k.
  void ExpectLogits(int k, int64_t t, const float* logits, int64_t rows, const std::string& what) {
    const Expected& e = expected_[k];
    float worst = 0.0f;
    int64_t worst_at = -1;
    for (int64_t i = 0; i < rows * V(); ++i) {
      const float diff = std::fabs(logits[i] - e.logits[t * V() + i]);
      if (!(diff <= worst)) {
        worst = diff;
        worst_at = i;
      }
    }
    EXPECT_LE(worst, kLogitTolerance) << what << ": sequence " << k << " position "
                                      << t + worst_at / V() << " vocab " << worst_at % V();
  }

  // Checks decisions/confidences of tokens [t, t + n) of sequence k given [n, L] outputs.
  void ExpectRouting(int k, int64_t t, const uint8_t* activations, const float* confidences,
                     int64_t n, const std::string& what) {
    const Expected& e = expected_[k];
    const int64_t T = e.tokens.size();
    int mismatches = 0;
    float worst = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      for (int l = 0; l < L(); ++l) {
        if (activations[i * L() + l] != e.activations[l * T + t + i]) ++mismatches;
        worst = std::max(worst, std::fabs(confidences[i * L() + l] - e.confidences[l * T + t + i]));
      }
    }
    EXPECT_EQ(mismatches, 0) << what << ": activation decisions differ, sequence " << k;
    EXPECT_LE(worst, kConfidenceTolerance) << what << ": confidences, sequence " << k;
  }

  // Runs sequence k through `slot` in chunks of `chunk` tokens (1 = step mode), checking
  // everything.
  void RunChunked(Backend& backend, int k, int64_t chunk, SlotId slot, const std::string& what) {
    const Expected& e = expected_[k];
    const int64_t T = e.tokens.size();
    for (int64_t t = 0; t < T; t += chunk) {
      const int64_t n = std::min(chunk, T - t);
      std::vector<float> logits(n * V());
      std::vector<uint8_t> activations(n * L());
      std::vector<float> confidences(n * L());
      SequenceChunk c{slot, absl::MakeConstSpan(e.tokens.data() + t, n), true, bias_};
      ASSERT_TRUE(backend
                      .Forward({&c, 1}, {absl::MakeSpan(logits), absl::MakeSpan(activations),
                                         absl::MakeSpan(confidences)})
                      .ok());
      ExpectLogits(k, t, logits.data(), n, what);
      ExpectRouting(k, t, activations.data(), confidences.data(), n, what);
    }
  }

  std::unique_ptr<Model> model_;
  int num_sequences_ = 0;
  std::vector<Expected> expected_;
  std::vector<float> bias_;  // every chunk's activation bias (empty: none)
};

TEST_P(ParityTest, StepModeMatchesReference) {
  auto backend = MakeBackend(1);
  for (int k = 0; k < num_sequences_; ++k) {
    ASSERT_TRUE(backend->ResetSlot(0).ok());
    RunChunked(*backend, k, 1, 0, "step mode");
  }
}

TEST_P(ParityTest, PrefillChunksMatchReference) {
  auto backend = MakeBackend(1);
  for (int64_t chunk : {64, 7, 1000}) {
    for (int k = 0; k < num_sequences_; ++k) {
      ASSERT_TRUE(backend->ResetSlot(0).ok());
      RunChunked(*backend, k, chunk, 0, "prefill chunk " + std::to_string(chunk));
    }
  }
}

TEST_P(ParityTest, PrefillThenStepsEqualsSteps) {
  auto backend = MakeBackend(1);
  const Expected& e = expected_[0];
  const int64_t T = e.tokens.size();
  for (int64_t n : {int64_t{1}, T / 3, T - 1}) {
    ASSERT_TRUE(backend->ResetSlot(0).ok());
    std::vector<float> logits(V());
    SequenceChunk prompt{0, absl::MakeConstSpan(e.tokens.data(), n), false, bias_};
    ASSERT_TRUE(backend->Forward({&prompt, 1}, {absl::MakeSpan(logits), {}, {}}).ok());
    ExpectLogits(0, n - 1, logits.data(), 1, "last logits of a prefill of " + std::to_string(n));
    for (int64_t t = n; t < T; ++t) {
      SequenceChunk step{0, absl::MakeConstSpan(e.tokens.data() + t, 1), false, bias_};
      ASSERT_TRUE(backend->Forward({&step, 1}, {absl::MakeSpan(logits), {}, {}}).ok());
      ExpectLogits(0, t, logits.data(), 1, "step after a prefill of " + std::to_string(n));
    }
  }
}

// Different sequences in one batch, mixing prefill chunks and single steps, equal each alone.
TEST_P(ParityTest, MixedBatchEqualsEachAlone) {
  const int S = num_sequences_;
  auto backend = MakeBackend(S + 1);
  std::vector<int64_t> done(S, 0);
  const SlotId first_slot = 1;  // leave slot 0 unused so slot ids differ from sequence ids
  for (int iteration = 0;; ++iteration) {
    std::vector<SequenceChunk> batch;
    std::vector<int> which;
    for (int k = 0; k < S; ++k) {
      const int64_t T = expected_[k].tokens.size();
      if (done[k] >= T) continue;
      // Sequence k alternates between chunks of (5 + 3k) tokens and single steps.
      const int64_t want = (iteration + k) % 2 == 0 ? 5 + 3 * k : 1;
      const int64_t n = std::min(want, T - done[k]);
      batch.push_back({first_slot + k, absl::MakeConstSpan(expected_[k].tokens.data() + done[k], n),
                       true, bias_});
      which.push_back(k);
    }
    if (batch.empty()) break;
    const int64_t tokens = TotalTokens(batch);
    std::vector<float> logits(LogitRows(batch) * V());
    std::vector<uint8_t> activations(tokens * L());
    std::vector<float> confidences(tokens * L());
    ASSERT_TRUE(backend
                    ->Forward(batch, {absl::MakeSpan(logits), absl::MakeSpan(activations),
                                      absl::MakeSpan(confidences)})
                    .ok());
    int64_t row = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      const int k = which[i];
      const int64_t n = batch[i].tokens.size();
      ExpectLogits(k, done[k], logits.data() + row * V(), n, "mixed batch");
      ExpectRouting(k, done[k], activations.data() + row * L(), confidences.data() + row * L(), n,
                    "mixed batch");
      row += n;
      done[k] += n;
    }
  }
}

TEST_P(ParityTest, CopiedSlotContinuesIdentically) {
  auto backend = MakeBackend(3);
  const Expected& e = expected_[0];
  const int64_t T = e.tokens.size();
  const int64_t n = T / 2;
  std::vector<float> logits(V());
  SequenceChunk prompt{0, absl::MakeConstSpan(e.tokens.data(), n), false, bias_};
  ASSERT_TRUE(backend->Forward({&prompt, 1}, {absl::MakeSpan(logits), {}, {}}).ok());
  ASSERT_TRUE(backend->CopySlot(0, 2).ok());
  // Dirty slot 0 with another sequence's tokens; the copy must not care.
  ASSERT_TRUE(backend->ResetSlot(0).ok());
  SequenceChunk other{0, absl::MakeConstSpan(expected_.back().tokens), false};
  ASSERT_TRUE(backend->Forward({&other, 1}, {absl::MakeSpan(logits), {}, {}}).ok());
  std::vector<float> rest((T - n) * V());
  SequenceChunk tail{2, absl::MakeConstSpan(e.tokens.data() + n, T - n), true, bias_};
  ASSERT_TRUE(backend->Forward({&tail, 1}, {absl::MakeSpan(rest), {}, {}}).ok());
  ExpectLogits(0, n, rest.data(), T - n, "continuation of a copied slot");
  SlotStats stats;
  ASSERT_TRUE(backend->Stats(2, &stats).ok());
  EXPECT_EQ(stats.tokens, T);
}

TEST_P(ParityTest, StatsCountActivations) {
  auto backend = MakeBackend(1);
  const Expected& e = expected_[0];
  const int64_t T = e.tokens.size();
  std::vector<float> logits(V());
  SequenceChunk all{0, absl::MakeConstSpan(e.tokens), false, bias_};
  ASSERT_TRUE(backend->Forward({&all, 1}, {absl::MakeSpan(logits), {}, {}}).ok());
  SlotStats stats;
  ASSERT_TRUE(backend->Stats(0, &stats).ok());
  ASSERT_EQ(stats.activated.size(), static_cast<size_t>(L()));
  const int w = model_->config().window;
  for (int l = 0; l < L(); ++l) {
    int64_t expected_on = 0;
    for (int64_t t = 0; t < T; ++t) expected_on += e.activations[l * T + t];
    EXPECT_EQ(stats.activated[l], expected_on) << "layer " << l;
    EXPECT_EQ(stats.fifo_entries[l], std::min<int64_t>(expected_on, w)) << "layer " << l;
  }
}

// Rows under different biases batch together, each following its own.
TEST(BiasedParity, DifferentBiasesInOneBatch) {
  testing::ExpectBiasedBatchesMatchTheReference(
      [](const Model& model, int slots) -> std::unique_ptr<Backend> {
        CpuBackendOptions options;
        options.num_slots = slots;
        auto backend = CpuBackend::Create(model, options);
        EXPECT_TRUE(backend.ok()) << backend.status();
        return backend.ok() ? std::move(*backend) : nullptr;
      },
      kLogitTolerance);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ParityTest, ::testing::ValuesIn(AllCases()), CaseName);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ParityTest);

// The forced-router fixtures really are what their names say (so the parity runs above
// cover zero and full activation), and the normal fixtures route a real share of tokens.
TEST(FixtureCoverage, ForcedRoutersAndWrappedFifos) {
  const std::vector<std::string> models = testing::FixtureModels();
  ASSERT_FALSE(models.empty()) << "no fixtures under " << testing::FixturesDir();
  bool saw_all_on = false, saw_all_off = false;
  for (const std::string& model : models) {
    for (const char* horizon : {"exact", "trained"}) {
      const Expected e = testing::LoadExpected(model, 0, horizon);
      const int64_t on = std::count(e.activations.begin(), e.activations.end(), 1);
      const int64_t total = e.activations.size();
      if (model.find("all_on") != std::string::npos) {
        EXPECT_EQ(on, total) << model;
        saw_all_on = true;
      } else if (model.find("all_off") != std::string::npos) {
        EXPECT_EQ(on, 0) << model;
        saw_all_off = true;
      } else {
        EXPECT_GT(on, total / 10) << model;
        EXPECT_LT(on, total * 9 / 10) << model;
      }
    }
  }
  EXPECT_TRUE(saw_all_on);
  EXPECT_TRUE(saw_all_off);
}

}  // namespace
}  // namespace seqboat
