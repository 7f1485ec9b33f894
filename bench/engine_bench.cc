// seqboat-bench-engine: the engine's own cost per iteration (scheduling, sampling, sinks,
// bookkeeping) with a backend that does no model work, so that what is measured is the
// overhead the engine adds to every backend step. Prints a table and JSON.
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "runtime/backend.h"
#include "runtime/engine/engine.h"
#include "runtime/model/config.h"
#include "runtime/model/vocab.h"

ABSL_FLAG(int, sampling_threads, 1, "Engine threads that sample an iteration's tokens.");
ABSL_FLAG(int, vocab_size, 256, "Vocabulary of the stand-in model (sampling cost grows with it).");
ABSL_FLAG(int, layers, 14, "Layers (activation bookkeeping grows with them).");
ABSL_FLAG(int, steps, 2000, "Decode steps per batch size.");
ABSL_FLAG(double, temperature, 1.0, "Sampling temperature (0 = greedy).");
ABSL_FLAG(int, top_k, 0, "Sampling top_k (0 = off).");
ABSL_FLAG(double, top_p, 1.0, "Sampling top_p (1 = off).");
ABSL_FLAG(std::string, json_out, "", "Write the results as JSON here.");

namespace seqboat::bench {
namespace {

// Logits that change with every call, no model work.
class NullBackend final : public Backend {
 public:
  NullBackend(int slots, int vocab, int layers) : slots_(slots), vocab_(vocab), layers_(layers) {}
  int num_slots() const override { return slots_; }
  const char* name() const override { return "null"; }
  size_t state_bytes_per_slot() const override { return 0; }
  absl::Status Forward(absl::Span<const SequenceChunk> batch, const ForwardOutputs& out) override {
    ++calls_;
    for (size_t i = 0; i < out.logits.size(); ++i)
      out.logits[i] = static_cast<float>((i * 7919 + calls_) % 97) * 0.05f;
    for (size_t i = 0; i < out.activations.size(); ++i) out.activations[i] = (i + calls_) % 2;
    return absl::OkStatus();
  }
  absl::Status ResetSlot(SlotId) override { return absl::OkStatus(); }
  absl::Status CopySlot(SlotId, SlotId) override { return absl::OkStatus(); }
  absl::Status Stats(SlotId, SlotStats*) const override { return absl::OkStatus(); }

 private:
  const int slots_, vocab_, layers_;
  uint64_t calls_ = 0;
};

class CountingSink final : public RequestSink {
 public:
  bool OnToken(const GeneratedToken&) override { return true; }
  void OnFinish(const FinishInfo&) override {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

class StepTimer final : public EngineObserver {
 public:
  void OnIteration(const IterationStats& stats) override {
    if (stats.decode_sequences > 0) ++iterations_;
    step_time_ += stats.step_time;
  }
  int64_t iterations_ = 0;
  absl::Duration step_time_;
};

int Run() {
  ModelConfig config;
  config.vocab_size = absl::GetFlag(FLAGS_vocab_size);
  config.layers = absl::GetFlag(FLAGS_layers);
  const int steps = absl::GetFlag(FLAGS_steps);
  nlohmann::json results = nlohmann::json::array();
  printf(
      "engine overhead per iteration (null backend, V=%d, L=%d, %d decode steps, temperature %.1f, "
      "top_k %d, top_p %.2f, %d sampling threads)\n",
      config.vocab_size, config.layers, steps, absl::GetFlag(FLAGS_temperature),
      absl::GetFlag(FLAGS_top_k), absl::GetFlag(FLAGS_top_p),
      absl::GetFlag(FLAGS_sampling_threads));
  printf("%8s %14s %16s %16s\n", "batch", "iteration us", "per token us", "backend us");
  for (int batch : {1, 8, 64, 256}) {
    NullBackend backend(batch, config.vocab_size, config.layers);
    StepTimer timer;
    EngineOptions options;
    options.max_running = batch;
    options.max_waiting = batch;
    options.max_new_tokens_limit = steps;
    options.sampling_threads = absl::GetFlag(FLAGS_sampling_threads);
    auto engine = Engine::Create(&backend, config, options, &timer);
    if (!engine.ok()) {
      fprintf(stderr, "seqboat-bench-engine: %s\n", std::string(engine.status().message()).c_str());
      return 1;
    }
    std::vector<std::shared_ptr<CountingSink>> sinks;
    const absl::Time start = absl::Now();
    for (int b = 0; b < batch; ++b) {
      GenerationParams params;
      params.prompt = {kEosId, 10 + b % 50};
      params.max_new_tokens = steps;
      params.ignore_eos = true;
      params.sampling.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
      params.sampling.top_k = absl::GetFlag(FLAGS_top_k);
      params.sampling.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
      params.sampling.seed = b;
      sinks.push_back(std::make_shared<CountingSink>());
      if (!(*engine)->Submit(params, sinks.back()).ok()) return 1;
    }
    for (auto& sink : sinks) sink->Wait();
    const absl::Duration total = absl::Now() - start;
    (*engine)->Shutdown(absl::ZeroDuration());
    const double iterations = static_cast<double>(timer.iterations_);
    const double per_iteration_us = absl::ToDoubleMicroseconds(total) / iterations;
    const double backend_us = absl::ToDoubleMicroseconds(timer.step_time_) / iterations;
    const double overhead_us = per_iteration_us - backend_us;
    printf("%8d %14.2f %16.3f %16.2f\n", batch, overhead_us, overhead_us / batch, backend_us);
    results.push_back({{"batch", batch},
                       {"iterations", timer.iterations_},
                       {"overhead_us_per_iteration", overhead_us},
                       {"overhead_us_per_token", overhead_us / batch},
                       {"null_backend_us_per_iteration", backend_us}});
  }
  if (const std::string path = absl::GetFlag(FLAGS_json_out); !path.empty()) {
    std::ofstream(path) << nlohmann::json{{"engine_overhead", results}}.dump(2) << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace seqboat::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Measures the engine's overhead per iteration with a backend that does no work.");
  absl::ParseCommandLine(argc, argv);
  return seqboat::bench::Run();
}
