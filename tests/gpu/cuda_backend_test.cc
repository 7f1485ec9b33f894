// The CUDA backend against the CPU backend (the reference) on every fixture model and on
// random models sweeping every option, for both EMA horizons: step mode, prefill chunks of
// several sizes, prefill then steps, mixed batches, slot copies, stats, graph replay; and
// against the fixtures' reference logits. fp32 weights: logits and confidences within 1e-4,
// activation decisions identical.
#include "kernels/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/model/model.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/runtime/biased_batch_check.h"
#include "tests/runtime/fixture_util.h"

namespace seqboat {
namespace {

using gpu_testing::MaxAbsDiff;
using gpu_testing::RunResult;

constexpr float kLogitTolerance = 1e-4f;  // fp32 weights
constexpr float kConfidenceTolerance = 1e-4f;

struct Case {
  std::string name;
  std::string fixture;  // fixture model folder, or empty for a random model
  gpu_testing::RandomModelSpec spec;
  int fifo_capacity = 0;  // for SeqBoat-full random models
  int64_t sequence_length = 90;
  EmaHorizon horizon = EmaHorizon::kExact;
};

std::vector<Case> RandomCases() {
  std::vector<Case> cases;
  uint64_t seed = 11;
  int variant = 0;
  for (AttentionKind a :
       {AttentionKind::kSoftmax, AttentionKind::kRelu2, AttentionKind::kLaplace}) {
    for (PositionKind p : {PositionKind::kRotary, PositionKind::kSimple}) {
      for (NormKind n : {NormKind::kLayerNorm, NormKind::kScaleNorm, NormKind::kRmsNorm}) {
        Case c;
        c.spec.config = gpu_testing::SmallConfig();
        ModelConfig& m = c.spec.config;
        m.attention = a;
        m.position = p;
        m.norm = n;
        m.normalize_before = variant % 2 == 0;
        m.ffn_dim = variant % 3 == 0 ? 7 : 0;
        m.final_norm_affine = variant % 4 != 1;
        m.normalize_embedding = variant % 5 == 2;
        m.tied_embeddings = variant % 2 == 1;
        c.spec.seed = seed++;
        c.name = absl::StrCat(AttentionKindName(a), "_", PositionKindName(p), "_", NormKindName(n),
                              m.normalize_before ? "_pre" : "_post", m.ffn_dim ? "_ffn" : "");
        cases.push_back(c);
        ++variant;
      }
    }
  }
  {  // Odd sizes everywhere.
    Case c;
    c.name = "odd_sizes";
    ModelConfig& m = c.spec.config = gpu_testing::SmallConfig();
    m.embed_dim = 37, m.z_dim = 10, m.hidden_dim = 23, m.n_dim = 5, m.layers = 3, m.window = 7;
    m.vocab_size = 41, m.truncation_length = 13, m.ffn_dim = 9;
    c.spec.seed = 101;
    c.sequence_length = 120;
    cases.push_back(c);
  }
  {  // The paper's w = 1024 with N = 16; the FIFO fills and wraps, the trained ring wraps.
    Case c;
    c.name = "w1024";
    ModelConfig& m = c.spec.config = gpu_testing::SmallConfig();
    m.embed_dim = 32, m.z_dim = 16, m.hidden_dim = 24, m.n_dim = 16, m.window = 1024;
    m.vocab_size = 50, m.truncation_length = 300, m.max_positions = 4096;
    c.spec.seed = 202;
    c.sequence_length = 2600;
    cases.push_back(c);
  }
  {  // N at the scan's limit.
    Case c;
    c.name = "n32";
    ModelConfig& m = c.spec.config = gpu_testing::SmallConfig();
    m.n_dim = 32;
    c.spec.seed = 303;
    cases.push_back(c);
  }
  {  // N = 1.
    Case c;
    c.name = "n1";
    ModelConfig& m = c.spec.config = gpu_testing::SmallConfig();
    m.n_dim = 1;
    c.spec.seed = 304;
    cases.push_back(c);
  }
  for (auto routing : {gpu_testing::Routing::kAllOn, gpu_testing::Routing::kAllOff}) {
    Case c;
    c.name = routing == gpu_testing::Routing::kAllOn ? "random_all_on" : "random_all_off";
    c.spec.config = gpu_testing::SmallConfig();
    c.spec.routing = routing;
    c.spec.seed = 404;
    cases.push_back(c);
  }
  {  // SeqBoat-full, bounded explicitly.
    Case c;
    c.name = "seqboat_full";
    c.spec.config = gpu_testing::SmallConfig();
    c.spec.config.window = 0;
    c.fifo_capacity = 6;
    c.spec.seed = 505;
    cases.push_back(c);
  }
  return cases;
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (const std::string& model : testing::FixtureModels()) {
    Case c;
    c.name = model;
    c.fixture = model;
    cases.push_back(c);
  }
  for (const Case& c : RandomCases()) cases.push_back(c);
  std::vector<Case> both;
  for (Case c : cases) {
    c.horizon = EmaHorizon::kExact;
    both.push_back(c);
    c.horizon = EmaHorizon::kTrained;
    c.name += "_trained";
    both.push_back(c);
  }
  return both;
}

class CudaVsCpuTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const Case& c = GetParam();
    if (!c.fixture.empty()) {
      path_ = testing::FixturesDir() + "/" + c.fixture + "/model.safetensors";
    } else {
      path_ = gpu_testing::TempPath(c.name + ".safetensors");
      ASSERT_TRUE(gpu_testing::WriteRandomModel(c.spec, path_).ok());
      owned_path_ = true;
    }
    auto model = Model::Load(path_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    if (!c.fixture.empty() && testing::CountSequences(c.fixture) > 0) {
      tokens_ = testing::LoadExpected(c.fixture, 0, "exact").tokens;
    } else {
      tokens_ = gpu_testing::RandomTokens(c.sequence_length, V(), c.spec.seed * 7 + 3);
    }
    CpuBackendOptions cpu_options;
    cpu_options.num_slots = 4;
    cpu_options.ema_horizon = c.horizon;
    cpu_options.fifo_capacity = c.fifo_capacity;
    auto cpu = CpuBackend::Create(*model_, cpu_options);
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    cpu_ = std::move(*cpu);
    auto reference = gpu_testing::RunChunked(*cpu_, 0, tokens_, 1, V(), L());
    ASSERT_TRUE(reference.ok()) << reference.status();
    reference_ = std::move(*reference);
  }
  void TearDown() override {
    if (owned_path_) std::filesystem::remove(path_);
  }

  std::unique_ptr<Backend> MakeGpu(int slots, bool graphs = true) {
    CudaBackendOptions options;
    options.num_slots = slots;
    options.ema_horizon = GetParam().horizon;
    options.fifo_capacity = GetParam().fifo_capacity;
    options.use_cuda_graphs = graphs;
    auto backend = CreateCudaBackend(*model_, options);
    EXPECT_TRUE(backend.ok()) << backend.status();
    return backend.ok() ? std::move(*backend) : nullptr;
  }

  int V() const { return model_->config().vocab_size; }
  int L() const { return model_->config().layers; }
  int64_t T() const { return static_cast<int64_t>(tokens_.size()); }

  // Rows [t, t + n) of the reference against `logits` [n, V] (and routing when given).
  void ExpectRows(int64_t t, int64_t n, const float* logits, const uint8_t* activations,
                  const float* confidences, const RunResult& reference, const std::string& what) {
    float worst = 0.0f;
    int64_t worst_at = 0;
    for (int64_t i = 0; i < n * V(); ++i) {
      const float diff = std::fabs(logits[i] - reference.logits[t * V() + i]);
      if (!(diff <= worst)) worst = diff, worst_at = i;
    }
    EXPECT_LE(worst, kLogitTolerance) << what << ": logits at position " << t + worst_at / V();
    if (activations != nullptr) {
      int64_t mismatches = 0;
      float worst_confidence = 0.0f;
      for (int64_t i = 0; i < n * L(); ++i) {
        mismatches += activations[i] != reference.activations[t * L() + i];
        worst_confidence = std::max(worst_confidence,
                                    std::fabs(confidences[i] - reference.confidences[t * L() + i]));
      }
      EXPECT_EQ(mismatches, 0) << what << ": activation decisions differ";
      EXPECT_LE(worst_confidence, kConfidenceTolerance) << what << ": confidences";
    }
  }
  void ExpectRun(const RunResult& run, const std::string& what) {
    ExpectRows(0, T(), run.logits.data(), run.activations.data(), run.confidences.data(),
               reference_, what);
  }

  std::string path_;
  bool owned_path_ = false;
  std::unique_ptr<Model> model_;
  std::vector<int32_t> tokens_;
  std::unique_ptr<CpuBackend> cpu_;
  RunResult reference_;  // the CPU backend in step mode
};

TEST_P(CudaVsCpuTest, StepsAndPrefillChunksMatchCpu) {
  auto gpu = MakeGpu(2);
  ASSERT_NE(gpu, nullptr);
  for (int64_t chunk : {int64_t{1}, int64_t{7}, int64_t{64}, T()}) {
    auto run = gpu_testing::RunChunked(*gpu, 1, tokens_, chunk, V(), L());
    ASSERT_TRUE(run.ok()) << run.status();
    ExpectRun(*run, absl::StrCat("chunks of ", chunk));
  }
}

TEST_P(CudaVsCpuTest, PrefillThenStepsEqualsSteps) {
  auto gpu = MakeGpu(1);
  ASSERT_NE(gpu, nullptr);
  for (int64_t n : {int64_t{1}, T() / 3, T() - 1}) {
    ASSERT_TRUE(gpu->ResetSlot(0).ok());
    std::vector<float> logits(V());
    SequenceChunk prompt{0, absl::MakeConstSpan(tokens_.data(), n), false};
    ASSERT_TRUE(gpu->Forward({&prompt, 1}, {absl::MakeSpan(logits), {}, {}}).ok());
    ExpectRows(n - 1, 1, logits.data(), nullptr, nullptr, reference_,
               absl::StrCat("prefill of ", n));
    for (int64_t t = n; t < std::min(T(), n + 40); ++t) {
      SequenceChunk step{0, absl::MakeConstSpan(tokens_.data() + t, 1), false};
      ASSERT_TRUE(gpu->Forward({&step, 1}, {absl::MakeSpan(logits), {}, {}}).ok());
      ExpectRows(t, 1, logits.data(), nullptr, nullptr, reference_,
                 absl::StrCat("step after a prefill of ", n));
    }
  }
}

// Three sequences in one backend, alternating prefill chunks and single steps, each with its
// own tokens, against the CPU backend running each alone.
TEST_P(CudaVsCpuTest, MixedBatchEqualsEachAlone) {
  constexpr int kSequences = 3;
  std::vector<std::vector<int32_t>> tokens(kSequences);
  std::vector<RunResult> alone(kSequences);
  const int64_t length = std::min<int64_t>(T(), 300);
  for (int k = 0; k < kSequences; ++k) {
    tokens[k] = k == 0 ? std::vector<int32_t>(tokens_.begin(), tokens_.begin() + length)
                       : gpu_testing::RandomTokens(length - 11 * k, V(), 1000 + k);
    auto run = gpu_testing::RunChunked(*cpu_, 1, tokens[k], 1, V(), L());
    ASSERT_TRUE(run.ok());
    alone[k] = std::move(*run);
  }
  auto gpu = MakeGpu(kSequences + 1);
  ASSERT_NE(gpu, nullptr);
  std::vector<int64_t> done(kSequences, 0);
  for (int iteration = 0;; ++iteration) {
    std::vector<SequenceChunk> batch;
    std::vector<int> which;
    for (int k = 0; k < kSequences; ++k) {
      const int64_t total = tokens[k].size();
      if (done[k] >= total) continue;
      const int64_t want = (iteration + k) % 2 == 0 ? 5 + 3 * k : 1;
      const int64_t n = std::min(want, total - done[k]);
      // Slots in reverse order so that slot ids differ from batch positions.
      batch.push_back({kSequences - k, absl::MakeConstSpan(tokens[k].data() + done[k], n), true});
      which.push_back(k);
    }
    if (batch.empty()) break;
    const int64_t rows = TotalTokens(batch);
    std::vector<float> logits(LogitRows(batch) * V());
    std::vector<uint8_t> activations(rows * L());
    std::vector<float> confidences(rows * L());
    ASSERT_TRUE(gpu->Forward(batch, {absl::MakeSpan(logits), absl::MakeSpan(activations),
                                     absl::MakeSpan(confidences)})
                    .ok());
    int64_t row = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      const int k = which[i];
      const int64_t n = batch[i].tokens.size();
      ExpectRows(done[k], n, logits.data() + row * V(), activations.data() + row * L(),
                 confidences.data() + row * L(), alone[k],
                 absl::StrCat("mixed batch, sequence ", k));
      row += n;
      done[k] += n;
    }
    if (HasFailure()) return;
  }
}

TEST_P(CudaVsCpuTest, CopiedSlotContinuesAndStatsMatchCpu) {
  auto gpu = MakeGpu(3);
  ASSERT_NE(gpu, nullptr);
  const int64_t n = T() / 2;
  std::vector<float> logits(V());
  SequenceChunk prompt{0, absl::MakeConstSpan(tokens_.data(), n), false};
  ASSERT_TRUE(gpu->Forward({&prompt, 1}, {absl::MakeSpan(logits), {}, {}}).ok());
  ASSERT_TRUE(gpu->CopySlot(0, 2).ok());
  ASSERT_TRUE(gpu->ResetSlot(0).ok());  // dirty the source: the copy must not care
  const std::vector<int32_t> other = gpu_testing::RandomTokens(T(), V(), 77);
  SequenceChunk dirty{0, absl::MakeConstSpan(other), false};
  ASSERT_TRUE(gpu->Forward({&dirty, 1}, {absl::MakeSpan(logits), {}, {}}).ok());
  std::vector<float> rest((T() - n) * V());
  SequenceChunk tail{2, absl::MakeConstSpan(tokens_.data() + n, T() - n), true};
  ASSERT_TRUE(gpu->Forward({&tail, 1}, {absl::MakeSpan(rest), {}, {}}).ok());
  ExpectRows(n, T() - n, rest.data(), nullptr, nullptr, reference_,
             "continuation of a copied slot");

  // Stats after the whole sequence equal the CPU backend's.
  ASSERT_TRUE(cpu_->ResetSlot(0).ok());
  SequenceChunk all{0, absl::MakeConstSpan(tokens_), false};
  ASSERT_TRUE(cpu_->Forward({&all, 1}, {absl::MakeSpan(logits), {}, {}}).ok());
  SlotStats expected, actual;
  ASSERT_TRUE(cpu_->Stats(0, &expected).ok());
  ASSERT_TRUE(gpu->Stats(2, &actual).ok());
  EXPECT_EQ(actual.tokens, expected.tokens);
  EXPECT_EQ(actual.activated, expected.activated);
  EXPECT_EQ(actual.fifo_entries, expected.fifo_entries);
}

// Decode steps replayed from CUDA graphs equal the same steps enqueued eagerly, bit for bit.
TEST_P(CudaVsCpuTest, GraphReplayEqualsEager) {
  auto graphs = MakeGpu(3, true);
  auto eager = MakeGpu(3, false);
  ASSERT_NE(graphs, nullptr);
  ASSERT_NE(eager, nullptr);
  const int64_t steps = std::min<int64_t>(T(), 60);
  std::vector<std::vector<int32_t>> tokens = {tokens_, gpu_testing::RandomTokens(steps, V(), 5),
                                              gpu_testing::RandomTokens(steps, V(), 6)};
  for (int64_t t = 0; t < steps; ++t) {
    // Batch sizes vary (1, 2, 3) so several graphs are captured and replayed.
    const int width = 1 + static_cast<int>(t % 3);
    std::vector<SequenceChunk> batch;
    for (int k = 0; k < width; ++k)
      batch.push_back({k, absl::MakeConstSpan(tokens[k].data() + t, 1), false});
    std::vector<float> a(width * V()), b(width * V());
    std::vector<uint8_t> da(width * L()), db(width * L());
    ASSERT_TRUE(graphs->Forward(batch, {absl::MakeSpan(a), absl::MakeSpan(da), {}}).ok());
    ASSERT_TRUE(eager->Forward(batch, {absl::MakeSpan(b), absl::MakeSpan(db), {}}).ok());
    ASSERT_EQ(a, b) << "step " << t;
    ASSERT_EQ(da, db) << "step " << t;
  }
}

// The fixtures' reference logits (the PyTorch model) directly, in step mode.
TEST_P(CudaVsCpuTest, FixtureReferenceLogits) {
  const Case& c = GetParam();
  if (c.fixture.empty()) GTEST_SKIP() << "random model: no PyTorch reference";
  auto gpu = MakeGpu(1);
  ASSERT_NE(gpu, nullptr);
  const std::string horizon = c.horizon == EmaHorizon::kTrained ? "trained" : "exact";
  for (int k = 0; k < testing::CountSequences(c.fixture); ++k) {
    const testing::Expected e = testing::LoadExpected(c.fixture, k, horizon);
    auto run = gpu_testing::RunChunked(*gpu, 0, e.tokens, 1, V(), L());
    ASSERT_TRUE(run.ok());
    EXPECT_LE(MaxAbsDiff(run->logits, e.logits), kLogitTolerance) << "sequence " << k;
    const int64_t n = e.tokens.size();
    int64_t mismatches = 0;
    for (int64_t t = 0; t < n; ++t)
      for (int l = 0; l < L(); ++l)
        mismatches += run->activations[t * L() + l] != e.activations[l * n + t];
    EXPECT_EQ(mismatches, 0) << "sequence " << k;
  }
}

// The reference's activation-bias fixtures, rows under different biases in one batch (its
// single steps replay CUDA graphs).
TEST(CudaActivationBias, DifferentBiasesInOneBatchMatchTheReference) {
  testing::ExpectBiasedBatchesMatchTheReference(
      [](const Model& model, int slots) -> std::unique_ptr<Backend> {
        CudaBackendOptions options;
        options.num_slots = slots;
        auto backend = CreateCudaBackend(model, options);
        EXPECT_TRUE(backend.ok()) << backend.status();
        return backend.ok() ? std::move(*backend) : nullptr;
      },
      kLogitTolerance);
}

INSTANTIATE_TEST_SUITE_P(Models, CudaVsCpuTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace seqboat

int main(int argc, char** argv) { return seqboat::gpu_testing::GpuTestMain(argc, argv); }
