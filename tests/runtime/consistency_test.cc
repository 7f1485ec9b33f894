// Path consistency on random models over every option combination: a teacher-forced
// sequence gives the same logits and decisions one step at a time, in prefill chunks of
// any size (per-row and blocked attention), and beside other sequences in a batch.
// (Exactness against the PyTorch reference is parity_test's job; this sweeps the options.)
#include <cmath>
#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/model/model.h"
#include "tests/util/random_model_file.h"

namespace seqboat {
namespace {

struct Options {
  AttentionKind attention;
  PositionKind position;
  NormKind norm;
  bool pre_norm;
  int ffn_dim;
  EmaHorizon horizon;
};

std::string Name(const Options& o) {
  return absl::StrCat(AttentionKindName(o.attention), "_", PositionKindName(o.position), "_",
                      NormKindName(o.norm), o.pre_norm ? "_pre" : "_post", o.ffn_dim ? "_ffn" : "",
                      o.horizon == EmaHorizon::kTrained ? "_trained" : "");
}

// Writes a random model (tests/util) with these options; the flags that are not swept vary
// with the seed.
std::string WriteRandom(const Options& o, uint64_t seed) {
  test_util::RandomModelSpec spec;
  ModelConfig& c = spec.config = test_util::SmallConfig();
  c.attention = o.attention;
  c.position = o.position;
  c.norm = o.norm;
  c.normalize_before = o.pre_norm;
  c.final_norm_affine = seed % 2 == 0;
  c.normalize_embedding = seed % 3 == 0;
  c.tied_embeddings = seed % 2 == 1;
  c.ffn_dim = o.ffn_dim;
  spec.seed = seed;
  const std::string path = test_util::TempPath("consistency_" + Name(o) + ".safetensors");
  EXPECT_TRUE(test_util::WriteRandomModel(spec, path).ok());
  return path;
}

// Returns false (checking nothing) when the router is lopsided for this model.
bool CheckPaths(const Model& model, CpuBackend& backend) {
  const int V = model.config().vocab_size, L = model.config().layers;

  std::mt19937 rng(7);
  const int T = 90;
  std::vector<int32_t> tokens(T);
  for (int32_t& t : tokens) t = 2 + static_cast<int32_t>(rng() % (V - 2));
  auto run = [&](int64_t chunk, std::vector<float>* logits, std::vector<uint8_t>* decisions) {
    EXPECT_TRUE(backend.ResetSlot(0).ok());
    logits->assign(T * V, 0.0f);
    decisions->assign(T * L, 0);
    for (int64_t t = 0; t < T; t += chunk) {
      const int64_t n = std::min<int64_t>(chunk, T - t);
      SequenceChunk c{0, absl::MakeConstSpan(tokens.data() + t, n), true};
      EXPECT_TRUE(backend
                      .Forward({&c, 1}, {absl::MakeSpan(logits->data() + t * V, n * V),
                                         absl::MakeSpan(decisions->data() + t * L, n * L),
                                         {}})
                      .ok());
    }
  };
  std::vector<float> step_logits;
  std::vector<uint8_t> step_decisions;
  run(1, &step_logits, &step_decisions);
  int activated = 0;
  for (uint8_t d : step_decisions) activated += d;
  if (activated < T * L / 20 || activated > T * L * 19 / 20) return false;
  for (int64_t chunk : {2, 5, 13, 64, 90}) {
    std::vector<float> logits;
    std::vector<uint8_t> decisions;
    run(chunk, &logits, &decisions);
    EXPECT_EQ(decisions, step_decisions) << "chunk " << chunk;
    float worst = 0.0f;
    for (size_t i = 0; i < logits.size(); ++i)
      worst = std::max(worst, std::fabs(logits[i] - step_logits[i]));
    EXPECT_LE(worst, 2e-5f) << "chunk " << chunk;
  }
  // Beside two other sequences: slot 2 runs the sequence in chunks of 11 while slot 1 steps.
  EXPECT_TRUE(backend.ResetSlot(1).ok());
  EXPECT_TRUE(backend.ResetSlot(2).ok());
  std::vector<int32_t> other(T);
  for (int32_t& t : other) t = 2 + static_cast<int32_t>(rng() % (V - 2));
  for (int64_t t = 0; t < T; t += 11) {
    const int64_t n = std::min<int64_t>(11, T - t);
    SequenceChunk batch[] = {{1, absl::MakeConstSpan(other.data() + t, 1), false},
                             {2, absl::MakeConstSpan(tokens.data() + t, n), true}};
    std::vector<float> logits((1 + n) * V);
    EXPECT_TRUE(backend.Forward(batch, {absl::MakeSpan(logits), {}, {}}).ok());
    float worst = 0.0f;
    for (int64_t i = 0; i < n * V; ++i)
      worst = std::max(worst, std::fabs(logits[V + i] - step_logits[t * V + i]));
    EXPECT_LE(worst, 2e-5f) << "batched chunk at " << t;
  }
  return true;
}

class ConsistencyTest : public ::testing::TestWithParam<Options> {};

TEST_P(ConsistencyTest, StepsChunksAndBatchesAgree) {
  const Options o = GetParam();
  // Random routers can be lopsided: take the first seed whose router activates between 5%
  // and 95% of the (token, layer) pairs, so that both paths of every layer run.
  for (uint64_t seed = std::hash<std::string>()(Name(o)) % 1000, tries = 0; tries < 20;
       ++seed, ++tries) {
    const std::string path = WriteRandom(o, seed);
    auto model = Model::Load(path);
    ASSERT_TRUE(model.ok()) << model.status();
    CpuBackendOptions options;
    options.num_slots = 3;
    options.ema_horizon = o.horizon;
    auto backend = CpuBackend::Create(**model, options);
    ASSERT_TRUE(backend.ok());
    const bool done = CheckPaths(**model, **backend);
    std::filesystem::remove(path);
    if (done || HasFailure()) return;
  }
  FAIL() << "no seed gave a balanced router";
}
// A decode step of fewer sequences than threads splits each query's value sums over the pool
// by columns; beside a second sequence (as many single queries as threads) it does not. Both
// give one sequence the same logits.
TEST(ConsistencySplit, ColumnSplitAttentionMatchesTheUnsplitBatch) {
  test_util::RandomModelSpec spec;
  ModelConfig& c = spec.config = test_util::SmallConfig();
  c.hidden_dim = 150;  // three column ranges, the last with a tail
  c.z_dim = 16;
  c.window = 256;  // enough work per query for the split
  c.max_positions = 512;
  spec.seed = 11;
  const std::string path = test_util::TempPath("consistency_split.safetensors");
  ASSERT_TRUE(test_util::WriteRandomModel(spec, path).ok());
  auto model = Model::Load(path);
  ASSERT_TRUE(model.ok()) << model.status();
  for (WeightDType fifo : {WeightDType::kF32, WeightDType::kBF16}) {
    CpuBackendOptions options;
    options.num_slots = 3;
    options.num_threads = 2;
    options.fifo_dtype = fifo;
    auto backend = CpuBackend::Create(**model, options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    const int V = c.vocab_size, T = 60;
    std::mt19937 rng(3);
    std::vector<int32_t> tokens(T), other(T);
    for (int32_t& t : tokens) t = 2 + static_cast<int32_t>(rng() % (V - 2));
    for (int32_t& t : other) t = 2 + static_cast<int32_t>(rng() % (V - 2));
    int64_t activated = 0;
    float worst = 0.0f;
    for (int t = 0; t < T; ++t) {
      std::vector<float> alone(V), pair(2 * V);
      std::vector<uint8_t> decisions(c.layers);
      SequenceChunk one{0, absl::MakeConstSpan(tokens.data() + t, 1), false};
      ASSERT_TRUE((*backend)
                      ->Forward({&one, 1}, {absl::MakeSpan(alone), absl::MakeSpan(decisions), {}})
                      .ok());
      for (uint8_t d : decisions) activated += d;
      SequenceChunk two[] = {{1, absl::MakeConstSpan(tokens.data() + t, 1), false},
                             {2, absl::MakeConstSpan(other.data() + t, 1), false}};
      ASSERT_TRUE((*backend)->Forward(two, {absl::MakeSpan(pair), {}, {}}).ok());
      for (int v = 0; v < V; ++v) worst = std::max(worst, std::fabs(alone[v] - pair[v]));
    }
    EXPECT_GT(activated, T * c.layers / 10) << "the GAU must run for the split to matter";
    EXPECT_LE(worst, 2e-5f) << WeightDTypeName(fifo);
  }
  std::filesystem::remove(path);
}

std::vector<Options> AllOptions() {
  std::vector<Options> all;
  for (AttentionKind a :
       {AttentionKind::kSoftmax, AttentionKind::kRelu2, AttentionKind::kLaplace}) {
    for (PositionKind p : {PositionKind::kRotary, PositionKind::kSimple}) {
      for (NormKind n : {NormKind::kLayerNorm, NormKind::kScaleNorm, NormKind::kRmsNorm}) {
        for (bool pre : {true, false}) {
          all.push_back(
              {a, p, n, pre, pre ? 0 : 7, pre ? EmaHorizon::kExact : EmaHorizon::kTrained});
          all.push_back(
              {a, p, n, pre, pre ? 7 : 0, pre ? EmaHorizon::kTrained : EmaHorizon::kExact});
        }
      }
    }
  }
  return all;
}

INSTANTIATE_TEST_SUITE_P(AllOptions, ConsistencyTest, ::testing::ValuesIn(AllOptions()),
                         [](const ::testing::TestParamInfo<Options>& info) {
                           return Name(info.param);
                         });

}  // namespace
}  // namespace seqboat
