// The prefix cache on the CUDA backend (#15): an engine over the GPU with the cache gives the
// tokens of the same engine without it, for conversation turns (each restoring the state its
// previous turn ended with), exact repeats (sampled from kept logits, no forward pass) and
// prompts that share a prefix. Greedy tokens must match except at a step where the cache-off
// run's top two log-probabilities lie within kTie (a near tie that float reduction order may
// break either way on a GPU).
#include <cmath>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "gtest/gtest.h"
#include "kernels/cuda_backend.h"
#include "runtime/engine/engine.h"
#include "runtime/model/model.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/runtime/fixture_util.h"

namespace seqboat {
namespace {

constexpr float kTie = 1e-3f;

class Collecting : public RequestSink {
 public:
  bool OnToken(const GeneratedToken& token) override {
    std::lock_guard<std::mutex> lock(mu_);
    tokens_.push_back(token);
    return true;
  }
  void OnFinish(const FinishInfo& info) override {
    std::lock_guard<std::mutex> lock(mu_);
    info_ = info;
    done_ = true;
    cv_.notify_all();
  }
  FinishInfo Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
    return info_;
  }
  std::vector<GeneratedToken> tokens() {
    std::lock_guard<std::mutex> lock(mu_);
    return tokens_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::vector<GeneratedToken> tokens_;
  FinishInfo info_;
};

struct Result {
  std::vector<GeneratedToken> tokens;
  FinishInfo info;
};

Result Generate(Engine& engine, const std::vector<int32_t>& prompt, int n) {
  GenerationParams params;
  params.prompt = prompt;
  params.sampling.temperature = 0.0f;
  params.max_new_tokens = n;
  params.ignore_eos = true;
  params.top_logprobs = 2;
  auto sink = std::make_shared<Collecting>();
  EXPECT_TRUE(engine.Submit(params, sink).ok());
  Result result;
  result.info = sink->Wait();
  result.tokens = sink->tokens();
  return result;
}

// The cached run's tokens equal the plain run's up to a near tie of the plain run.
void ExpectSameTokens(const Result& cached, const Result& plain, const std::string& what) {
  ASSERT_EQ(cached.tokens.size(), plain.tokens.size()) << what;
  for (size_t i = 0; i < plain.tokens.size(); ++i) {
    if (cached.tokens[i].token == plain.tokens[i].token) continue;
    const auto& top = plain.tokens[i].top;
    ASSERT_GE(top.size(), 2u) << what;
    EXPECT_LT(std::fabs(top[0].logprob - top[1].logprob), kTie)
        << what << ": token " << i << " differs without a tie";
    return;  // after a tie the continuations may differ
  }
}

class CudaPrefixCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = Model::Load(testing::FixturesDir() + "/enwik8_tiny/model.safetensors");
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    CudaBackendOptions options;
    options.num_slots = 4;
    auto backend = CreateCudaBackend(*model_, options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
    text_ = testing::LoadExpected("enwik8_tiny", 0, "exact").tokens;
    ASSERT_GE(text_.size(), 90u);
  }
  std::unique_ptr<Engine> MakeEngine(bool cache) {
    auto engine = Engine::Create(backend_.get(), model_->config(),
                                 {.max_running = 2,
                                  .max_waiting = 8,
                                  .prefill_budget = 16,
                                  .prefix_cache_slots = cache ? 2 : 0,
                                  .prefix_cache_block = 8},
                                 nullptr);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return std::move(*engine);
  }
  std::vector<int32_t> Text(int from, int to) {
    return std::vector<int32_t>(text_.begin() + from, text_.begin() + to);
  }

  std::unique_ptr<Model> model_;
  std::unique_ptr<Backend> backend_;
  std::vector<int32_t> text_;
};

TEST_F(CudaPrefixCacheTest, ConversationTurnsRestoreTheirPreviousEndAndKeepTheTokens) {
  // The prompts come from the cache-off run (its answers), so both runs see the same turns.
  std::vector<std::vector<int32_t>> prompts;
  std::vector<Result> plain;
  {
    std::unique_ptr<Engine> engine = MakeEngine(false);
    std::vector<int32_t> prompt = Text(0, 12);
    for (int turn = 0; turn < 4; ++turn) {
      prompts.push_back(prompt);
      plain.push_back(Generate(*engine, prompt, 6));
      for (const GeneratedToken& t : plain.back().tokens) prompt.push_back(t.token);
      prompt.insert(prompt.end(), text_.begin() + 40 + 5 * turn, text_.begin() + 45 + 5 * turn);
    }
  }
  std::unique_ptr<Engine> engine = MakeEngine(true);
  for (size_t turn = 0; turn < prompts.size(); ++turn) {
    const Result cached = Generate(*engine, prompts[turn], 6);
    ExpectSameTokens(cached, plain[turn], "turn " + std::to_string(turn));
    if (turn > 0) {
      // All but the new text: the previous prompt and answer (its last token was never fed).
      EXPECT_EQ(cached.info.cached_prompt_tokens, static_cast<int64_t>(prompts[turn].size()) - 6)
          << turn;
    }
  }
}

TEST_F(CudaPrefixCacheTest, ExactRepeatsAndSharedPrefixesKeepTheTokens) {
  const std::vector<int32_t> prompt = Text(0, 20);
  std::vector<int32_t> branch = Text(0, 14), other = Text(0, 14);
  branch.insert(branch.end(), text_.begin() + 60, text_.begin() + 70);
  other.insert(other.end(), text_.begin() + 75, text_.begin() + 85);
  std::vector<Result> plain;
  {
    std::unique_ptr<Engine> engine = MakeEngine(false);
    plain.push_back(Generate(*engine, prompt, 8));
    plain.push_back(Generate(*engine, branch, 8));
    plain.push_back(Generate(*engine, other, 8));
  }
  std::unique_ptr<Engine> engine = MakeEngine(true);
  Generate(*engine, prompt, 1);  // its end is exactly the prompt, with its logits
  const Result repeat = Generate(*engine, prompt, 8);
  EXPECT_EQ(repeat.info.cached_prompt_tokens, 20);
  ExpectSameTokens(repeat, plain[0], "exact repeat");
  // Leaves the cached prompt after 14 tokens: a snapshot there, which the next one restores.
  const Result shared = Generate(*engine, branch, 8);
  ExpectSameTokens(shared, plain[1], "shared prefix");
  const Result restored = Generate(*engine, other, 8);
  EXPECT_EQ(restored.info.cached_prompt_tokens, 14);
  ExpectSameTokens(restored, plain[2], "restored shared prefix");
}

}  // namespace
}  // namespace seqboat

int main(int argc, char** argv) { return seqboat::gpu_testing::GpuTestMain(argc, argv); }
