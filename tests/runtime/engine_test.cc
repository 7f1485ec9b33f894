// The engine end to end on a fixture model and the CPU backend: greedy generation equals
// teacher forcing, seeded sampling does not depend on batch company, limits, cancellation,
// deadlines and drain.
#include "runtime/engine/engine.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/fault_injecting_backend.h"
#include "runtime/model/model.h"
#include "runtime/model/tokenizer.h"
#include "tests/runtime/fixture_util.h"

namespace seqboat {
namespace {

// Polls `done` for up to two seconds.
template <typename F>
bool WaitFor(F done) {
  for (int i = 0; i < 2000 && !done(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return done();
}

// Collects a request's tokens and waits for its end.
class CollectingSink : public RequestSink {
 public:
  explicit CollectingSink(int stop_after = -1) : stop_after_(stop_after) {}
  bool OnToken(const GeneratedToken& token) override {
    std::lock_guard<std::mutex> lock(mu_);
    tokens_.push_back(token.token);
    logprobs_.push_back(token.logprob);
    activations_.push_back(token.activations);
    return stop_after_ < 0 || static_cast<int>(tokens_.size()) < stop_after_;
  }
  void OnFinish(const FinishInfo& info) override {
    std::lock_guard<std::mutex> lock(mu_);
    info_ = info;
    ++finishes_;
    done_.notify_all();
  }
  void OnPromptLogprobs(int64_t position, const std::vector<GeneratedToken>& tokens) override {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_EQ(position, 1 + static_cast<int64_t>(prompt_scores_.size())) << "positions in order";
    EXPECT_TRUE(tokens_.empty()) << "prompt scores come before the first token";
    prompt_scores_.insert(prompt_scores_.end(), tokens.begin(), tokens.end());
  }
  std::vector<GeneratedToken> prompt_scores() {
    std::lock_guard<std::mutex> lock(mu_);
    return prompt_scores_;
  }
  FinishInfo Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return finishes_ > 0; });
    return info_;
  }
  std::vector<int32_t> tokens() {
    std::lock_guard<std::mutex> lock(mu_);
    return tokens_;
  }
  std::vector<float> logprobs() {
    std::lock_guard<std::mutex> lock(mu_);
    return logprobs_;
  }
  std::vector<std::vector<uint8_t>> activations() {
    std::lock_guard<std::mutex> lock(mu_);
    return activations_;
  }
  int finishes() {
    std::lock_guard<std::mutex> lock(mu_);
    return finishes_;
  }

 private:
  const int stop_after_;
  std::mutex mu_;
  std::condition_variable done_;
  std::vector<int32_t> tokens_;
  std::vector<float> logprobs_;
  std::vector<std::vector<uint8_t>> activations_;
  std::vector<GeneratedToken> prompt_scores_;
  FinishInfo info_;
  int finishes_ = 0;
};

// Requests long enough to outlive any deadline in these tests (the fixture model decodes
// tens of thousands of tokens per second).
constexpr int32_t kEndless = 1 << 30;

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = Model::Load(testing::FixturesDir() + "/enwik8_tiny/model.safetensors");
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    CpuBackendOptions options;
    options.num_slots = 4;
    auto backend = CpuBackend::Create(*model_, options);
    ASSERT_TRUE(backend.ok());
    backend_ = std::move(*backend);
    prompt_ = testing::LoadExpected("enwik8_tiny", 2, "exact").tokens;
  }

  std::unique_ptr<Engine> MakeEngine(EngineOptions options, EngineObserver* observer = nullptr) {
    auto engine = Engine::Create(backend_.get(), model_->config(), options, observer);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return std::move(*engine);
  }

  // Greedy continuation computed directly on a fresh backend, one step at a time.
  std::vector<int32_t> GreedyReference(const std::vector<int32_t>& prompt, int n,
                                       absl::Span<const float> activation_bias = {}) {
    CpuBackendOptions options;
    auto backend = CpuBackend::Create(*model_, options);
    const int V = model_->config().vocab_size;
    std::vector<float> logits(V);
    std::vector<int32_t> out;
    SequenceChunk chunk{0, absl::MakeConstSpan(prompt), false, activation_bias};
    EXPECT_TRUE((*backend)->Forward({&chunk, 1}, {absl::MakeSpan(logits), {}, {}}).ok());
    for (int i = 0; i < n; ++i) {
      const int32_t next =
          static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      out.push_back(next);
      SequenceChunk step{0, absl::MakeConstSpan(&out.back(), 1), false, activation_bias};
      EXPECT_TRUE((*backend)->Forward({&step, 1}, {absl::MakeSpan(logits), {}, {}}).ok());
    }
    return out;
  }

  GenerationParams Greedy(int max_new_tokens) {
    GenerationParams params;
    params.prompt = prompt_;
    params.sampling.temperature = 0.0f;
    params.max_new_tokens = max_new_tokens;
    params.ignore_eos = true;
    return params;
  }

  std::unique_ptr<Model> model_;
  std::unique_ptr<CpuBackend> backend_;
  std::vector<int32_t> prompt_;
};

TEST_F(EngineTest, GreedyGenerationEqualsTeacherForcedArgmax) {
  auto engine = MakeEngine({.max_running = 2, .max_waiting = 8, .prefill_budget = 7});
  auto sink = std::make_shared<CollectingSink>();
  GenerationParams params = Greedy(40);
  params.return_activations = true;
  ASSERT_TRUE(engine->Submit(params, sink).ok());
  FinishInfo info = sink->Wait();
  EXPECT_EQ(info.reason, FinishReason::kLength);
  EXPECT_EQ(info.generated_tokens, 40);
  EXPECT_EQ(info.prompt_tokens, static_cast<int64_t>(prompt_.size()));
  EXPECT_EQ(sink->tokens(), GreedyReference(prompt_, 40));
  for (const auto& layers : sink->activations()) EXPECT_EQ(layers.size(), 3u);
}

TEST_F(EngineTest, SeededSamplingIgnoresBatchCompany) {
  GenerationParams params = Greedy(30);
  params.sampling.temperature = 0.9f;
  params.sampling.top_p = 0.95f;
  params.sampling.seed = 1234;
  std::vector<int32_t> alone;
  {
    auto engine = MakeEngine({.max_running = 4, .max_waiting = 8, .prefill_budget = 16});
    auto sink = std::make_shared<CollectingSink>();
    ASSERT_TRUE(engine->Submit(params, sink).ok());
    sink->Wait();
    alone = sink->tokens();
  }
  auto engine = MakeEngine({.max_running = 4, .max_waiting = 8, .prefill_budget = 16});
  std::vector<std::shared_ptr<CollectingSink>> others;
  for (int i = 0; i < 3; ++i) {
    GenerationParams other = params;
    other.sampling.seed = 99 + i;
    other.prompt.resize(5 + 9 * i);
    others.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(engine->Submit(other, others.back()).ok());
  }
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(engine->Submit(params, sink).ok());
  sink->Wait();
  EXPECT_EQ(sink->tokens(), alone);
  for (auto& other : others) other->Wait();
}

TEST_F(EngineTest, ParallelSamplingDrawsTheSameTokensAndLogprobs) {
  // Four seeded requests with penalties and logprobs, sampled on the engine thread and then
  // by a pool of three (threshold 0: every iteration in parallel).
  auto run = [&](int threads) {
    EngineOptions options{.max_running = 4, .max_waiting = 8, .prefill_budget = 16};
    options.sampling_threads = threads;
    options.parallel_sampling_min_logits = 0;
    auto engine = MakeEngine(options);
    std::vector<std::shared_ptr<CollectingSink>> sinks;
    for (int i = 0; i < 4; ++i) {
      GenerationParams params = Greedy(25);
      params.prompt.resize(6 + 5 * i);
      params.sampling.temperature = 0.8f + 0.1f * i;
      params.sampling.top_k = i == 1 ? 20 : 0;
      params.sampling.repetition_penalty = 1.3f;
      params.sampling.frequency_penalty = 0.5f;
      params.sampling.seed = 7 + i;
      params.top_logprobs = i;
      sinks.push_back(std::make_shared<CollectingSink>());
      EXPECT_TRUE(engine->Submit(params, sinks.back()).ok());
    }
    std::vector<std::vector<int32_t>> tokens;
    std::vector<std::vector<float>> logprobs;
    for (auto& sink : sinks) {
      sink->Wait();
      tokens.push_back(sink->tokens());
      logprobs.push_back(sink->logprobs());
    }
    return std::make_pair(tokens, logprobs);
  };
  const auto serial = run(1);
  const auto parallel = run(3);
  EXPECT_EQ(parallel.first, serial.first);
  // Logits agree to rounding only: which requests share an iteration depends on timing, and
  // the CPU backend's products round differently for 1, 2..8 and more rows.
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(serial.first[i].size(), 25u) << i;
    ASSERT_EQ(parallel.second[i].size(), 25u) << i;
    for (int t = 0; t < 25; ++t)
      EXPECT_NEAR(parallel.second[i][t], serial.second[i][t], 1e-4) << i << " " << t;
  }
  EXPECT_TRUE(std::all_of(serial.second[0].begin(), serial.second[0].end(), [](float v) {
    return v == 0.0f;
  })) << "no logprobs asked, none computed";
  EXPECT_TRUE(std::all_of(serial.second[2].begin(), serial.second[2].end(),
                          [](float v) { return v < 0.0f; }));
}

class ErrorObserver : public EngineObserver {
 public:
  void OnBackendError(const absl::Status& status, int64_t sequences) override {
    std::lock_guard<std::mutex> lock(mu);
    errors.push_back(std::string(status.message()));
    failed_sequences += sequences;
  }
  void OnBackendLost(const absl::Status& health, int64_t sequences) override {
    std::lock_guard<std::mutex> lock(mu);
    lost.push_back(std::string(health.message()));
    lost_sequences += sequences;
  }
  std::mutex mu;
  std::vector<std::string> errors;
  int64_t failed_sequences = 0;
  std::vector<std::string> lost;
  int64_t lost_sequences = 0;
};

TEST_F(EngineTest, BackendErrorEndsThatBatchAndTheEngineGoesOn) {
  // The requests in the failing (fifth) Forward call end with the backend's reason; a
  // request submitted afterwards decodes exactly, from slots the failure left unchanged.
  ErrorObserver observer;
  FaultInjectingBackend faulty(std::move(backend_), 5);
  auto made = Engine::Create(&faulty, model_->config(),
                             {.max_running = 2, .max_waiting = 8, .prefill_budget = 64}, &observer);
  ASSERT_TRUE(made.ok()) << made.status();
  std::unique_ptr<Engine> engine = std::move(*made);
  std::vector<std::shared_ptr<CollectingSink>> failing;
  for (int i = 0; i < 2; ++i) {
    failing.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(engine->Submit(Greedy(30), failing.back()).ok());
  }
  // Whether the second request joined the first before call 5 depends on timing: the ones
  // in that batch fail, any other finishes exactly.
  int64_t errors = 0;
  for (auto& sink : failing) {
    const FinishInfo info = sink->Wait();
    if (info.reason == FinishReason::kError) {
      ++errors;
      EXPECT_NE(info.error.find("injected fault in Forward call 5"), std::string::npos)
          << info.error;
      EXPECT_LT(info.generated_tokens, 30);
    } else {
      EXPECT_EQ(info.reason, FinishReason::kLength);
      EXPECT_EQ(sink->tokens(), GreedyReference(prompt_, 30));
    }
  }
  EXPECT_GE(errors, 1);
  auto after = std::make_shared<CollectingSink>();
  ASSERT_TRUE(engine->Submit(Greedy(20), after).ok());
  EXPECT_EQ(after->Wait().reason, FinishReason::kLength);
  EXPECT_EQ(after->tokens(), GreedyReference(prompt_, 20));
  std::lock_guard<std::mutex> lock(observer.mu);
  ASSERT_EQ(observer.errors.size(), 1u);
  EXPECT_EQ(observer.failed_sequences, errors);
}

TEST_F(EngineTest, UnusableBackendEndsEveryRequestAndRefusesNewOnes) {
  // From the fourth Forward call on the backend fails and reports itself unusable (a lost
  // device): the batch of that call ends with its error, every other request (running or
  // waiting) with the loss, and Submit answers UNAVAILABLE from then on.
  ErrorObserver observer;
  FaultInjectingBackend lost(std::move(backend_), 4, /*sticky=*/true);
  auto made = Engine::Create(
      &lost, model_->config(),
      {.max_running = 2, .max_waiting = 8, .prefill_budget = 4, .max_new_tokens_limit = kEndless},
      &observer);
  ASSERT_TRUE(made.ok()) << made.status();
  std::unique_ptr<Engine> engine = std::move(*made);
  EXPECT_TRUE(engine->backend_status().ok());
  // 2 run, 3 wait. The loss may come before the last submissions (each call is short): those
  // are refused with UNAVAILABLE.
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  int64_t refused_early = 0;
  for (int i = 0; i < 5; ++i) {
    auto sink = std::make_shared<CollectingSink>();
    auto handle = engine->Submit(Greedy(kEndless), sink);
    if (handle.ok()) {
      sinks.push_back(sink);
    } else {
      EXPECT_EQ(handle.status().code(), absl::StatusCode::kUnavailable) << handle.status();
      ++refused_early;
    }
  }
  ASSERT_FALSE(sinks.empty());
  int64_t batch_errors = 0, lost_errors = 0;
  for (auto& sink : sinks) {
    const FinishInfo info = sink->Wait();
    ASSERT_EQ(info.reason, FinishReason::kError);
    if (info.error.find("injected fault in Forward call 4") != std::string::npos) {
      ++batch_errors;
    } else {
      EXPECT_NE(info.error.find("the backend is unusable: injected device loss"), std::string::npos)
          << info.error;
      ++lost_errors;
    }
  }
  EXPECT_GE(batch_errors, 1);
  EXPECT_EQ(batch_errors + lost_errors, static_cast<int64_t>(sinks.size()));
  EXPECT_EQ(batch_errors + lost_errors + refused_early, 5);
  EXPECT_EQ(engine->backend_status().code(), absl::StatusCode::kInternal);
  auto refused = engine->Submit(Greedy(4), std::make_shared<CollectingSink>());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("must be restarted"), std::string::npos)
      << refused.status();
  EXPECT_TRUE(WaitFor([&] { return engine->running() == 0 && engine->waiting() == 0; }));
  std::lock_guard<std::mutex> lock(observer.mu);
  EXPECT_EQ(observer.errors.size(), 1u);
  EXPECT_EQ(observer.failed_sequences, batch_errors);
  ASSERT_EQ(observer.lost.size(), 1u);
  EXPECT_EQ(observer.lost_sequences, lost_errors);
}

TEST_F(EngineTest, FullQueueIsResourceExhaustedAtOnce) {
  auto engine = MakeEngine(
      {.max_running = 1, .max_waiting = 2, .prefill_budget = 4, .max_new_tokens_limit = kEndless});
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  std::vector<std::shared_ptr<RequestHandle>> handles;
  int exhausted = 0;
  for (int i = 0; i < 8; ++i) {
    if (i == 1) {  // let the first request take the only slot, so the queue is what remains
      ASSERT_TRUE(WaitFor([&] { return engine->running() == 1; }));
    }
    auto sink = std::make_shared<CollectingSink>();
    auto handle = engine->Submit(Greedy(kEndless), sink);
    if (handle.ok()) {
      handles.push_back(*handle);
      sinks.push_back(sink);
    } else {
      EXPECT_EQ(handle.status().code(), absl::StatusCode::kResourceExhausted);
      ++exhausted;
    }
  }
  EXPECT_EQ(exhausted, 5);  // 1 running + 2 waiting; nothing finishes, so nothing else fits
  for (auto& handle : handles) handle->Cancel();
  for (size_t i = 0; i < handles.size(); ++i) sinks[i]->Wait();
}

// Capacity is the slots plus max_waiting: with no queue, a request needs a free slot (the
// old rule, waiting >= max_waiting, refused every request when max_waiting was 0).
TEST_F(EngineTest, NoWaitingQueueStillServesFreeSlots) {
  auto engine = MakeEngine(
      {.max_running = 2, .max_waiting = 0, .prefill_budget = 4, .max_new_tokens_limit = kEndless});
  auto first = std::make_shared<CollectingSink>();
  auto done = engine->Submit(Greedy(3), first);
  ASSERT_TRUE(done.ok()) << done.status();
  first->Wait();
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (int i = 0; i < 2; ++i) {
    sinks.push_back(std::make_shared<CollectingSink>());
    auto handle = engine->Submit(Greedy(kEndless), sinks.back());
    ASSERT_TRUE(handle.ok()) << i << ": " << handle.status();
    handles.push_back(*handle);
  }
  auto refused = engine->Submit(Greedy(3), std::make_shared<CollectingSink>());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  handles[0]->Cancel();
  sinks[0]->Wait();
  EXPECT_TRUE(WaitFor([&] { return engine->running() == 1; }));
  auto again = std::make_shared<CollectingSink>();
  ASSERT_TRUE(engine->Submit(Greedy(3), again).ok());  // the freed slot takes a request again
  again->Wait();
  handles[1]->Cancel();
  sinks[1]->Wait();
}

// n forks prefill the prompt once; fork k draws exactly what a lone request seeded seed + k
// draws.
TEST_F(EngineTest, ForksShareOnePrefillAndDrawAsLoneRequestsWithTheirSeeds) {
  struct PrefillCounter : EngineObserver {
    std::atomic<int64_t> prefill_tokens{0};
    void OnIteration(const IterationStats& stats) override {
      prefill_tokens += stats.prefill_tokens;
    }
  } counter;
  auto forked_engine =
      Engine::Create(backend_.get(), model_->config(),
                     {.max_running = 4, .max_waiting = 8, .prefill_budget = 8}, &counter);
  ASSERT_TRUE(forked_engine.ok());
  GenerationParams params = Greedy(24);
  params.sampling.temperature = 1.0f;
  params.sampling.seed = 100;
  params.n = 3;
  std::vector<std::shared_ptr<CollectingSink>> forks;
  std::vector<std::shared_ptr<RequestSink>> sinks;
  for (int k = 0; k < 3; ++k) {
    forks.push_back(std::make_shared<CollectingSink>());
    sinks.push_back(forks.back());
  }
  ASSERT_TRUE((*forked_engine)->Submit(params, sinks).ok());
  for (auto& fork : forks) EXPECT_EQ(fork->Wait().generated_tokens, 24);
  EXPECT_EQ(counter.prefill_tokens.load(), static_cast<int64_t>(prompt_.size())) << "one prefill";

  auto engine = MakeEngine({.max_running = 2, .max_waiting = 8, .prefill_budget = 8});
  std::set<std::vector<int32_t>> distinct;
  for (int k = 0; k < 3; ++k) {
    GenerationParams lone = Greedy(24);
    lone.sampling.temperature = 1.0f;
    lone.sampling.seed = 100 + k;
    auto sink = std::make_shared<CollectingSink>();
    ASSERT_TRUE(engine->Submit(lone, sink).ok());
    sink->Wait();
    EXPECT_EQ(forks[k]->tokens(), sink->tokens()) << "fork " << k;
    distinct.insert(sink->tokens());
  }
  EXPECT_EQ(distinct.size(), 3u) << "the forks drew their own tokens";
  // More forks than slots can never be admitted: refused, naming n.
  params.n = 5;
  sinks.resize(5, std::make_shared<CollectingSink>());
  auto refused = (*forked_engine)->Submit(params, sinks);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(std::string(refused.status().message()).rfind("n: 5 is outside 1..4", 0), 0u)
      << refused.status();
}

// Scoring: the log-probability of every prompt token, exactly the reference's log-softmax,
// with and without a cached prefix to restore (a scored prompt always runs in full).
TEST_F(EngineTest, ScoredPromptsReportEveryPositionAsTheReferenceDoes) {
  const testing::Expected expected = testing::LoadExpected("enwik8_tiny", 2, "exact");
  const int V = model_->config().vocab_size;
  const int64_t T = static_cast<int64_t>(expected.tokens.size());
  auto engine = MakeEngine({.max_running = 2,
                            .max_waiting = 8,
                            .prefill_budget = 5,
                            .prefix_cache_slots = 2,
                            .prefix_cache_block = 4});
  for (int pass = 0; pass < 3; ++pass) {  // later passes find the prefix cached
    GenerationParams params = Greedy(0);
    params.prompt = expected.tokens;
    params.prompt_logprobs = 3;
    auto sink = std::make_shared<CollectingSink>();
    ASSERT_TRUE(engine->Submit(params, sink).ok());
    const FinishInfo info = sink->Wait();
    EXPECT_EQ(info.reason, FinishReason::kLength);
    EXPECT_EQ(info.generated_tokens, 0);
    EXPECT_EQ(info.cached_prompt_tokens, 0) << "pass " << pass;
    const std::vector<GeneratedToken> scores = sink->prompt_scores();
    ASSERT_EQ(static_cast<int64_t>(scores.size()), T - 1);
    for (int64_t p = 1; p < T; ++p) {
      const float* row = expected.logits.data() + (p - 1) * V;
      double max = row[0], sum = 0;
      for (int v = 1; v < V; ++v) max = std::max<double>(max, row[v]);
      for (int v = 0; v < V; ++v) sum += std::exp(row[v] - max);
      const double logprob = row[expected.tokens[p]] - max - std::log(sum);
      EXPECT_EQ(scores[p - 1].token, expected.tokens[p]);
      EXPECT_NEAR(scores[p - 1].logprob, logprob, 1e-4) << "position " << p;
      ASSERT_EQ(scores[p - 1].top.size(), 3u);
      EXPECT_GE(scores[p - 1].top[0].logprob, scores[p - 1].logprob - 1e-6);
    }
  }
  // Scoring may generate nothing; a request that is not scored must generate something.
  GenerationParams plain = Greedy(0);
  EXPECT_FALSE(engine->Submit(plain, std::make_shared<CollectingSink>()).ok());
}

// A cancelled request whose forks have not started ends them all and frees every slot.
TEST_F(EngineTest, CancellingForksBeforeTheirPromptEndsFreesEverySlot) {
  auto engine = MakeEngine(
      {.max_running = 4, .max_waiting = 0, .prefill_budget = 1, .max_new_tokens_limit = kEndless});
  GenerationParams params = Greedy(kEndless);
  params.n = 4;
  std::vector<std::shared_ptr<CollectingSink>> forks;
  std::vector<std::shared_ptr<RequestSink>> sinks;
  for (int k = 0; k < 4; ++k) {
    forks.push_back(std::make_shared<CollectingSink>());
    sinks.push_back(forks.back());
  }
  auto handle = engine->Submit(params, sinks);
  ASSERT_TRUE(handle.ok());
  EXPECT_TRUE(WaitFor([&] { return engine->running() == 4; }));
  auto full = engine->Submit(Greedy(3), std::make_shared<CollectingSink>());
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted) << "four slots held";
  (*handle)->Cancel();
  for (auto& fork : forks) EXPECT_EQ(fork->Wait().reason, FinishReason::kCancelled);
  EXPECT_TRUE(WaitFor([&] { return engine->running() == 0; }));
  auto next = std::make_shared<CollectingSink>();
  ASSERT_TRUE(engine->Submit(Greedy(3), next).ok());
  EXPECT_EQ(next->Wait().generated_tokens, 3);
}

TEST_F(EngineTest, CancelDeadlineAndStopFinishWithTheirReasons) {
  auto engine = MakeEngine(
      {.max_running = 3, .max_waiting = 8, .prefill_budget = 8, .max_new_tokens_limit = kEndless});
  auto cancelled = std::make_shared<CollectingSink>();
  auto expired = std::make_shared<CollectingSink>();
  auto stopped = std::make_shared<CollectingSink>(/*stop_after=*/3);
  auto handle = engine->Submit(Greedy(kEndless), cancelled);
  ASSERT_TRUE(handle.ok());
  GenerationParams short_deadline = Greedy(kEndless);
  short_deadline.deadline = absl::Now() + absl::Milliseconds(50);
  ASSERT_TRUE(engine->Submit(short_deadline, expired).ok());
  ASSERT_TRUE(engine->Submit(Greedy(kEndless), stopped).ok());
  (*handle)->Cancel();
  EXPECT_EQ(cancelled->Wait().reason, FinishReason::kCancelled);
  EXPECT_EQ(expired->Wait().reason, FinishReason::kDeadline);
  FinishInfo stop = stopped->Wait();
  EXPECT_EQ(stop.reason, FinishReason::kStop);
  EXPECT_EQ(stop.generated_tokens, 3);
  // Everything freed: a new request runs to completion.
  auto after = std::make_shared<CollectingSink>();
  ASSERT_TRUE(engine->Submit(Greedy(5), after).ok());
  EXPECT_EQ(after->Wait().reason, FinishReason::kLength);
  EXPECT_TRUE(WaitFor([&] { return engine->running() == 0 && engine->waiting() == 0; }));
}

TEST_F(EngineTest, InvalidRequestsNameTheField) {
  auto engine = MakeEngine({.max_running = 1, .max_waiting = 2, .prefill_budget = 4});
  auto sink = std::make_shared<CollectingSink>();
  GenerationParams params = Greedy(5);
  params.prompt = {};
  EXPECT_NE(std::string(engine->Submit(params, sink).status().message()).find("prompt"),
            std::string::npos);
  params = Greedy(5);
  params.prompt[1] = kPadId;
  EXPECT_NE(std::string(engine->Submit(params, sink).status().message()).find("padding"),
            std::string::npos);
  params = Greedy(0);
  EXPECT_NE(std::string(engine->Submit(params, sink).status().message()).find("max_new_tokens"),
            std::string::npos);
  params = Greedy(5);
  params.sampling.top_p = 1.5f;
  EXPECT_NE(std::string(engine->Submit(params, sink).status().message()).find("top_p"),
            std::string::npos);
  params = Greedy(5);
  params.activation_bias = {1.0f, 2.0f};
  EXPECT_EQ(engine->Submit(params, sink).status().message(),
            "activation_bias: 2 values; expected one per layer (3) or none");
  params.activation_bias = {0.0f, 1001.0f, 0.0f};
  EXPECT_EQ(engine->Submit(params, sink).status().message(),
            "activation_bias[1]: 1001 is outside -1000..1000");
  params.activation_bias = {0.0f, 0.0f, std::nanf("")};
  EXPECT_EQ(engine->Submit(params, sink).status().message(),
            "activation_bias[2]: nan is outside -1000..1000");
  EXPECT_EQ(sink->finishes(), 0);
}

// Requests under different activation biases batch together, each generating what the backend
// gives alone under its own bias; a state made under one bias never serves another.
TEST_F(EngineTest, ActivationBiasIsEachRequestsOwnInBatchesAndInThePrefixCache) {
  const std::vector<float> off = {100.0f, 100.0f, 100.0f}, mixed = {-100.0f, 0.0f, 100.0f};
  // Slots enough that no cache entry is evicted.
  CpuBackendOptions options;
  options.num_slots = 10;
  auto backend = CpuBackend::Create(*model_, options);
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto created = Engine::Create(backend->get(), model_->config(),
                                {.max_running = 3,
                                 .max_waiting = 8,
                                 .prefill_budget = 64,
                                 .prefix_cache_slots = 7,
                                 .prefix_cache_block = 8},
                                /*observer=*/nullptr);
  ASSERT_TRUE(created.ok()) << created.status();
  Engine* engine = created->get();
  const int n = 16;
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  const std::vector<float>* const first_turns[] = {&off, &mixed, nullptr};
  for (const std::vector<float>* bias : first_turns) {
    GenerationParams params = Greedy(n);
    params.return_activations = true;
    if (bias != nullptr) params.activation_bias = *bias;
    sinks.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(engine->Submit(params, sinks.back()).ok());
  }
  for (auto& sink : sinks) sink->Wait();
  EXPECT_EQ(sinks[0]->tokens(), GreedyReference(prompt_, n, off));
  EXPECT_EQ(sinks[1]->tokens(), GreedyReference(prompt_, n, mixed));
  EXPECT_EQ(sinks[2]->tokens(), GreedyReference(prompt_, n));
  // The biases did route differently (else this test could not tell them apart).
  auto activated = [](CollectingSink& sink) {
    int64_t on = 0;
    for (const auto& layers : sink.activations()) on += std::count(layers.begin(), layers.end(), 1);
    return on;
  };
  EXPECT_EQ(activated(*sinks[0]), 0);  // +100 on every layer: no attention at all
  EXPECT_GT(activated(*sinks[1]), activated(*sinks[2]));

  // The next turn of the mixed-bias conversation: its own bias restores the state its first
  // turn left; no bias, or another, must not (their first turns went elsewhere).
  ASSERT_NE(sinks[1]->tokens(), sinks[0]->tokens());
  ASSERT_NE(sinks[1]->tokens(), sinks[2]->tokens());
  std::vector<int32_t> next = prompt_;
  const std::vector<int32_t> first_turn = sinks[1]->tokens();
  next.insert(next.end(), first_turn.begin(), first_turn.end());
  next.insert(next.end(), prompt_.begin(), prompt_.begin() + 5);
  const int64_t left = static_cast<int64_t>(prompt_.size()) + n - 1;  // the last token never ran
  const std::vector<float>* const second_turns[] = {&off, nullptr, &mixed};
  for (const std::vector<float>* bias : second_turns) {
    GenerationParams params = Greedy(n);
    params.prompt = next;
    if (bias != nullptr) params.activation_bias = *bias;
    auto sink = std::make_shared<CollectingSink>();
    ASSERT_TRUE(engine->Submit(params, sink).ok());
    const FinishInfo info = sink->Wait();
    const absl::Span<const float> routing =
        bias != nullptr ? absl::MakeConstSpan(*bias) : absl::Span<const float>();
    EXPECT_EQ(sink->tokens(), GreedyReference(next, n, routing));
    EXPECT_EQ(info.cached_prompt_tokens, bias == &mixed ? left : 0);
  }
  // All zeros is no bias: the unbiased first turn's end serves it.
  std::vector<int32_t> plain_next = prompt_;
  const std::vector<int32_t> plain_turn = sinks[2]->tokens();
  plain_next.insert(plain_next.end(), plain_turn.begin(), plain_turn.end());
  GenerationParams params = Greedy(n);
  params.prompt = plain_next;
  params.activation_bias = {0.0f, -0.0f, 0.0f};
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(engine->Submit(params, sink).ok());
  EXPECT_EQ(sink->Wait().cached_prompt_tokens, left);
  EXPECT_EQ(sink->tokens(), GreedyReference(plain_next, n));
}

TEST_F(EngineTest, ShutdownLetsShortRequestsFinishAndCancelsTheRest) {
  auto engine = MakeEngine(
      {.max_running = 2, .max_waiting = 8, .prefill_budget = 8, .max_new_tokens_limit = kEndless});
  auto quick = std::make_shared<CollectingSink>();
  auto endless = std::make_shared<CollectingSink>();
  ASSERT_TRUE(engine->Submit(Greedy(3), quick).ok());
  ASSERT_TRUE(engine->Submit(Greedy(kEndless), endless).ok());
  engine->Shutdown(absl::Milliseconds(300));
  EXPECT_EQ(quick->Wait().reason, FinishReason::kLength);
  EXPECT_EQ(endless->Wait().reason, FinishReason::kCancelled);
  EXPECT_EQ(engine->Submit(Greedy(3), quick).status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(EngineTest, EndDrainCancelsWhatStillRunsDuringALongGrace) {
  auto engine = MakeEngine(
      {.max_running = 1, .max_waiting = 8, .prefill_budget = 8, .max_new_tokens_limit = kEndless});
  auto running = std::make_shared<CollectingSink>();
  auto waiting = std::make_shared<CollectingSink>();
  ASSERT_TRUE(engine->Submit(Greedy(kEndless), running).ok());
  ASSERT_TRUE(engine->Submit(Greedy(kEndless), waiting).ok());
  ASSERT_TRUE(WaitFor([&] { return !running->tokens().empty(); }));
  // Shutdown waits out its grace on this thread; a second signal ends it from another.
  std::thread hurry([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    engine->EndDrain();
  });
  const absl::Time start = absl::Now();
  engine->Shutdown(absl::Hours(1));
  hurry.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(running->Wait().reason, FinishReason::kCancelled);
  EXPECT_EQ(waiting->Wait().reason, FinishReason::kCancelled);
}

// Counts what the engine reports about the prefix cache.
class CacheObserver : public EngineObserver {
 public:
  void OnIteration(const IterationStats& stats) override {
    std::lock_guard<std::mutex> lock(mu_);
    hits += stats.prefix_cache_hits;
    misses += stats.prefix_cache_misses;
    hit_tokens += stats.prefix_cache_hit_tokens;
    entries = stats.prefix_cache_entries;
    evictions += stats.prefix_cache_evictions;
    full_hits += stats.prefix_cache_full_hits;
    forwarded_tokens += stats.tokens;
  }
  std::mutex mu_;
  int64_t hits = 0, misses = 0, hit_tokens = 0, entries = 0, evictions = 0, full_hits = 0,
          forwarded_tokens = 0;
};

TEST_F(EngineTest, PrefixCacheReusesSharedPrefixStateAndKeepsTokensExact) {
  ASSERT_GE(prompt_.size(), 40u);
  const std::vector<int32_t> shared(prompt_.begin(), prompt_.begin() + 20);
  auto with_tail = [&](int from, int to) {
    std::vector<int32_t> p = shared;
    p.insert(p.end(), prompt_.begin() + from, prompt_.begin() + to);
    return p;
  };
  // Tails that differ from each other right after the shared 20 tokens.
  const std::vector<std::vector<int32_t>> prompts = {with_tail(20, 30), with_tail(30, 40),
                                                     with_tail(22, 31), with_tail(25, 39)};
  for (size_t i = 1; i < prompts.size(); ++i) ASSERT_NE(prompts[i][20], prompts[0][20]);
  // With branch points the shared 20 tokens are cached to their end; without, to their last
  // block boundary (16).
  for (bool branch_points : {true, false}) {
    SCOPED_TRACE(branch_points ? "branch points" : "block boundaries only");
    const int64_t shared_cached = branch_points ? 20 : 16;
    CacheObserver observer;
    // Two request slots and two snapshot slots; a small prefill budget makes chunks cross the
    // block boundaries (8, 16) that snapshots must stop at.
    auto engine = Engine::Create(backend_.get(), model_->config(),
                                 {.max_running = 2,
                                  .max_waiting = 8,
                                  .prefill_budget = 5,
                                  .prefix_cache_slots = 2,
                                  .prefix_cache_block = 8,
                                  .snapshot_branch_points = branch_points},
                                 &observer);
    ASSERT_TRUE(engine.ok()) << engine.status();
    std::vector<FinishInfo> infos;
    for (const auto& prompt : prompts) {
      auto sink = std::make_shared<CollectingSink>();
      GenerationParams params = Greedy(12);
      params.prompt = prompt;
      ASSERT_TRUE((*engine)->Submit(params, sink).ok());
      infos.push_back(sink->Wait());
      EXPECT_EQ(sink->tokens(), GreedyReference(prompt, 12)) << "prompt " << infos.size() - 1;
    }
    // The first prompt only marks its boundaries as seen (and leaves its end); the second shares
    // 20 tokens with it and snapshots there (or at 16, two blocks); the third and fourth restore
    // that snapshot.
    EXPECT_EQ(infos[0].cached_prompt_tokens, 0);
    EXPECT_EQ(infos[1].cached_prompt_tokens, 0);
    EXPECT_EQ(infos[2].cached_prompt_tokens, shared_cached);
    EXPECT_EQ(infos[3].cached_prompt_tokens, shared_cached);
    (*engine)->Shutdown(absl::Seconds(1));
    EXPECT_EQ(observer.hits, 2);
    EXPECT_EQ(observer.misses, 2);
    EXPECT_EQ(observer.hit_tokens, 2 * shared_cached);
    // One pool of 4 slots: each request's end stays in the slot it ran in, and the shared 16
    // tokens took a free one; the fourth request's slot came from the least worth entry (the
    // first request's end, the oldest of equal worth).
    EXPECT_EQ(observer.entries, 4);
    EXPECT_EQ(observer.evictions, 1);
    EXPECT_EQ(observer.full_hits, 0);
  }
}

TEST_F(EngineTest, ConversationTurnsRunOnlyTheirNewTokensAndStayExact) {
  // Two conversations, interleaved: each turn's prompt is the previous prompt, its answer
  // and new text. With the cache, a turn restores the state its previous turn ended with;
  // its tokens equal a fresh greedy run of the whole prompt, so no turn read the other
  // conversation's state.
  const std::vector<int32_t> text = testing::LoadExpected("enwik8_tiny", 0, "exact").tokens;
  ASSERT_GE(text.size(), 70u);
  for (bool snapshots : {true, false}) {
    auto engine = MakeEngine({.max_running = 2,
                              .max_waiting = 8,
                              .prefill_budget = 16,
                              .prefix_cache_slots = 2,
                              .prefix_cache_block = 8,
                              .snapshot_finished = snapshots});
    std::vector<std::vector<int32_t>> history = {
        std::vector<int32_t>(text.begin(), text.begin() + 11),
        std::vector<int32_t>(text.begin() + 30, text.begin() + 43)};
    for (int turn = 0; turn < 3; ++turn) {
      for (int c = 0; c < 2; ++c) {
        std::vector<int32_t>& prompt = history[c];
        auto sink = std::make_shared<CollectingSink>();
        GenerationParams params = Greedy(6);
        params.prompt = prompt;
        ASSERT_TRUE(engine->Submit(params, sink).ok());
        const FinishInfo info = sink->Wait();
        const std::vector<int32_t> answer = sink->tokens();
        EXPECT_EQ(answer, GreedyReference(prompt, 6)) << "turn " << turn << " conversation " << c;
        if (snapshots && turn > 0) {
          // All but the new text: the previous prompt and answer (its last token was never fed).
          EXPECT_EQ(info.cached_prompt_tokens, static_cast<int64_t>(prompt.size()) - 5)
              << "turn " << turn << " conversation " << c;
        } else if (!snapshots) {
          EXPECT_LT(info.cached_prompt_tokens, static_cast<int64_t>(prompt.size()) - 5);
        }
        prompt.insert(prompt.end(), answer.begin(), answer.end());
        const int from = 50 + 4 * turn + c;
        prompt.insert(prompt.end(), text.begin() + from, text.begin() + from + 4);
      }
    }
  }
}

// Runs `params` with forks to the end on `engine`: each fork's tokens, logprobs and
// activations, and the leader's FinishInfo.
struct ForkResults {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<float>> logprobs;
  std::vector<std::vector<std::vector<uint8_t>>> activations;
  FinishInfo info;
};
ForkResults RunForks(Engine& engine, const GenerationParams& params) {
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  std::vector<std::shared_ptr<RequestSink>> as_sinks;
  for (int k = 0; k < params.n; ++k) {
    sinks.push_back(std::make_shared<CollectingSink>());
    as_sinks.push_back(sinks.back());
  }
  ForkResults results;
  EXPECT_TRUE(engine.Submit(params, as_sinks).ok());
  for (auto& sink : sinks) {
    const FinishInfo info = sink->Wait();
    if (results.tokens.empty()) results.info = info;
    results.tokens.push_back(sink->tokens());
    results.logprobs.push_back(sink->logprobs());
    results.activations.push_back(sink->activations());
  }
  return results;
}

TEST_F(EngineTest, ExactRepeatsSampleFromKeptLogitsAndStayExact) {
  const std::vector<int32_t> prompt(prompt_.begin(), prompt_.begin() + 15);
  auto make = [&](bool cache, CacheObserver* observer) {
    return MakeEngine({.max_running = 2,
                       .max_waiting = 8,
                       .prefill_budget = 16,
                       .prefix_cache_slots = cache ? 2 : 0,
                       .prefix_cache_block = 8},
                      observer);
  };
  GenerationParams greedy = Greedy(5);
  greedy.prompt = prompt;
  greedy.logprobs = true;
  greedy.return_activations = true;
  GenerationParams sampled = greedy;
  sampled.sampling.temperature = 0.9f;
  sampled.sampling.seed = 77;
  sampled.n = 2;
  GenerationParams inside = greedy;  // ends inside the cached sequences: nothing to restore
  inside.prompt.resize(12);
  // The same requests without the cache, one after another.
  std::vector<ForkResults> plain;
  {
    std::unique_ptr<Engine> engine = make(false, nullptr);
    for (const GenerationParams* params : {&greedy, &greedy, &sampled, &inside})
      plain.push_back(RunForks(*engine, *params));
  }
  CacheObserver observer;
  std::unique_ptr<Engine> engine = make(true, &observer);
  GenerationParams first = greedy;
  first.max_new_tokens = 1;  // feeds only the prompt: its end is the prompt, with its logits
  const ForkResults once = RunForks(*engine, first);
  EXPECT_EQ(once.tokens[0], GreedyReference(prompt, 1));
  // An iteration's stats reach the observer after its tokens reach the sinks: wait for them.
  auto forwarded_so_far = [&] {
    std::lock_guard<std::mutex> lock(observer.mu_);
    return observer.forwarded_tokens;
  };
  ASSERT_TRUE(WaitFor([&] { return forwarded_so_far() >= 15; }));  // the prompt ran once
  const int64_t forwarded = forwarded_so_far();
  EXPECT_EQ(forwarded, 15);
  {
    std::lock_guard<std::mutex> lock(observer.mu_);
    EXPECT_EQ(observer.full_hits, 0);
  }
  const ForkResults repeat = RunForks(*engine, greedy);
  // Stats come in iteration order: a prompt run again would show before the last decode step.
  ASSERT_TRUE(WaitFor([&] { return forwarded_so_far() - forwarded >= 4; }));
  EXPECT_EQ(repeat.info.cached_prompt_tokens, 15);
  EXPECT_EQ(repeat.tokens, plain[0].tokens);
  EXPECT_EQ(repeat.logprobs, plain[0].logprobs);
  EXPECT_EQ(repeat.activations, plain[0].activations);
  EXPECT_EQ(repeat.tokens[0], GreedyReference(prompt, 5));
  {
    std::lock_guard<std::mutex> lock(observer.mu_);
    EXPECT_EQ(observer.full_hits, 1);
    // No token of the prompt ran: only the 4 decode steps after the first token.
    EXPECT_EQ(observer.forwarded_tokens - forwarded, 4);
  }
  // Seeded forks from the kept logits: each equals its fork without the cache.
  const ForkResults forks = RunForks(*engine, sampled);
  EXPECT_EQ(forks.info.cached_prompt_tokens, 15);
  EXPECT_EQ(forks.tokens, plain[2].tokens);
  EXPECT_EQ(forks.logprobs, plain[2].logprobs);
  // A prompt that ends inside every cached sequence restores none of them.
  const ForkResults shorter = RunForks(*engine, inside);
  EXPECT_EQ(shorter.info.cached_prompt_tokens, 0);
  EXPECT_EQ(shorter.tokens, plain[3].tokens);
  engine->Shutdown(absl::Seconds(1));
  EXPECT_EQ(observer.full_hits, 2);
}

TEST_F(EngineTest, ASnapshotTakenWhileAnotherRequestDecodesStaysExact) {
  const std::vector<int32_t> shared(prompt_.begin(), prompt_.begin() + 16);
  auto with_tail = [&](int from) {
    std::vector<int32_t> p = shared;
    p.insert(p.end(), prompt_.begin() + from, prompt_.begin() + from + 5);
    return p;
  };
  std::unique_ptr<Engine> engine = MakeEngine({.max_running = 2,
                                               .max_waiting = 8,
                                               .prefill_budget = 4,
                                               .prefix_cache_slots = 2,
                                               .prefix_cache_block = 8,
                                               .iteration_delay = absl::Milliseconds(1)});
  // A decodes throughout; B marks the shared boundaries seen, C's prefill snapshots 16 tokens
  // in iterations that also run A's decode step, and D restores that snapshot.
  const std::vector<int32_t> long_prompt(prompt_.begin() + 20, prompt_.begin() + 30);
  auto long_sink = std::make_shared<CollectingSink>();
  GenerationParams long_request = Greedy(300);
  long_request.prompt = long_prompt;
  ASSERT_TRUE(engine->Submit(long_request, long_sink).ok());
  ASSERT_TRUE(WaitFor([&] { return !long_sink->tokens().empty(); }));
  std::vector<FinishInfo> infos;
  for (int from : {16, 21, 26}) {
    auto sink = std::make_shared<CollectingSink>();
    GenerationParams params = Greedy(4);
    params.prompt = with_tail(from);
    ASSERT_TRUE(engine->Submit(params, sink).ok());
    infos.push_back(sink->Wait());
    EXPECT_EQ(sink->tokens(), GreedyReference(params.prompt, 4)) << "tail from " << from;
  }
  EXPECT_EQ(long_sink->finishes(), 0) << "the long request was to decode beside every snapshot";
  EXPECT_EQ(infos[0].cached_prompt_tokens, 0);
  EXPECT_EQ(infos[1].cached_prompt_tokens, 0);
  EXPECT_EQ(infos[2].cached_prompt_tokens, 16);
  long_sink->Wait();
  EXPECT_EQ(long_sink->tokens(), GreedyReference(long_prompt, 300));
}

TEST_F(EngineTest, RefusesMoreSlotsThanTheBackendHas) {
  auto engine = Engine::Create(backend_.get(), model_->config(),
                               {.max_running = 3, .prefix_cache_slots = 2}, nullptr);
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace seqboat
