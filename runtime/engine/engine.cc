// Engine: the continuous-batching loop around PlanIteration and Backend::Forward.
#include "runtime/engine/engine.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "runtime/model/tokenizer.h"

namespace seqboat {

struct Engine::Sequence {
  std::shared_ptr<RequestHandle> handle;
  std::shared_ptr<RequestSink> sink;
  GenerationParams params;
  std::unique_ptr<Sampler> sampler;
  SlotId slot = -1;
  int64_t prefilled = 0;     // prompt tokens through the model
  int64_t cached = 0;        // of those, restored from the prefix cache
  int64_t snapshot_at = 0;   // > 0: copy the state into the prefix cache after this many
  int32_t last_token = -1;   // the next decode step's input
  int64_t generated = 0;
  absl::Time submitted_at, admitted_at, first_token_at, last_token_at;
  bool finished = false;
};

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(Backend* backend, const ModelConfig& config,
                                                       const EngineOptions& options,
                                                       EngineObserver* observer) {
  if (options.max_running < 1) return absl::InvalidArgumentError("max_running must be >= 1");
  if (options.prefix_cache_slots < 0) return absl::InvalidArgumentError("prefix_cache_slots must be >= 0");
  if (options.prefix_cache_block < 1) return absl::InvalidArgumentError("prefix_cache_block must be >= 1");
  if (options.max_running + options.prefix_cache_slots > backend->num_slots()) {
    return absl::InvalidArgumentError(absl::StrCat("max_running ", options.max_running, " + prefix_cache_slots ",
                                                   options.prefix_cache_slots, " exceed the backend's ",
                                                   backend->num_slots(), " state slots"));
  }
  if (options.max_waiting < 0) return absl::InvalidArgumentError("max_waiting must be >= 0");
  if (options.prefill_budget < 1) return absl::InvalidArgumentError("prefill_budget must be >= 1");
  if (options.max_prompt_tokens < 1) return absl::InvalidArgumentError("max_prompt_tokens must be >= 1");
  if (options.max_new_tokens_limit < 1) return absl::InvalidArgumentError("max_new_tokens_limit must be >= 1");
  if (options.sampling_threads < 1) return absl::InvalidArgumentError("sampling_threads must be >= 1");
  return std::unique_ptr<Engine>(new Engine(backend, config, options, observer));
}

Engine::Engine(Backend* backend, const ModelConfig& config, const EngineOptions& options,
               EngineObserver* observer)
    : backend_(backend), config_(config), options_(options), observer_(observer) {
  for (SlotId slot = options.max_running - 1; slot >= 0; --slot) free_slots_.push_back(slot);
  if (options.prefix_cache_slots > 0) {
    std::vector<SlotId> cache_slots;
    for (int i = 0; i < options.prefix_cache_slots; ++i) cache_slots.push_back(options.max_running + i);
    prefix_cache_ = std::make_unique<PrefixCache>(std::move(cache_slots), options.prefix_cache_block);
  }
  if (options.sampling_threads > 1) sampling_pool_ = std::make_unique<ThreadPool>(options.sampling_threads);
  heartbeat_ns_ = absl::ToUnixNanos(absl::Now());
  thread_ = std::thread([this] { Loop(); });
}

Engine::~Engine() { Shutdown(absl::ZeroDuration()); }

absl::Time Engine::last_heartbeat() const { return absl::FromUnixNanos(heartbeat_ns_.load()); }

absl::Status Engine::backend_status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return backend_lost_;
}

absl::StatusOr<std::shared_ptr<RequestHandle>> Engine::Submit(GenerationParams params,
                                                              std::shared_ptr<RequestSink> sink) {
  if (std::optional<RequestError> error = CheckGenerationParams(params, options_.request_limits(), config_.vocab_size)) {
    return InvalidField(*error);
  }

  auto sequence = std::make_unique<Sequence>();
  sequence->sink = std::move(sink);
  sequence->submitted_at = absl::Now();
  sequence->sampler = std::make_unique<Sampler>(params.sampling, config_.vocab_size);
  sequence->sampler->ObservePrompt(params.prompt);
  sequence->params = std::move(params);
  sequence->handle = std::make_shared<RequestHandle>();
  std::shared_ptr<RequestHandle> handle = sequence->handle;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) return absl::UnavailableError("the server is shutting down");
    if (!backend_lost_.ok()) {
      return absl::UnavailableError(
          absl::StrCat("the backend is unusable (", backend_lost_.message(), "); this server must be restarted"));
    }
    // Capacity: a slot for every running request and max_waiting more in the queue.
    const int64_t held = running_count_.load() + waiting_count_.load() + static_cast<int64_t>(submitted_.size());
    if (held >= options_.max_running + options_.max_waiting) {
      return absl::ResourceExhaustedError(absl::StrCat("the server is full (", options_.max_running, " slots and ",
                                                       options_.max_waiting, " waiting places taken); retry later"));
    }
    handle->id = next_id_++;
    submitted_.push_back(std::move(sequence));
  }
  wake_.notify_one();
  return handle;
}

void Engine::Shutdown(absl::Duration grace) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!thread_.joinable()) return;
    accepting_ = false;
    drain_deadline_ = std::min(drain_deadline_, absl::Now() + grace);
    stop_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void Engine::Loop() {
  for (;;) {
    heartbeat_ns_ = absl::ToUnixNanos(absl::Now());
    if (RunIteration()) {
      if (options_.iteration_delay > absl::ZeroDuration()) absl::SleepFor(options_.iteration_delay);
      continue;
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (stop_ && submitted_.empty() && waiting_.empty() && running_.empty()) return;
    // Idle: sleep until a submission, waking now and then to keep the heartbeat fresh.
    wake_.wait_for(lock, std::chrono::milliseconds(100),
                   [this] { return !submitted_.empty() || (stop_ && waiting_.empty() && running_.empty()); });
  }
}

void Engine::Finish(Sequence& sequence, FinishReason reason, const std::string& error) {
  if (sequence.finished) return;
  sequence.finished = true;
  const absl::Time now = absl::Now();
  FinishInfo info;
  info.reason = reason;
  info.error = error;
  info.prompt_tokens = sequence.params.prompt.size();
  info.cached_prompt_tokens = sequence.cached;
  info.generated_tokens = sequence.generated;
  info.queue_time = (sequence.admitted_at == absl::Time() ? now : sequence.admitted_at) - sequence.submitted_at;
  info.time_to_first_token =
      sequence.first_token_at == absl::Time() ? absl::ZeroDuration() : sequence.first_token_at - sequence.submitted_at;
  info.total_time = now - sequence.submitted_at;
  sequence.sink->OnFinish(info);
  if (observer_ != nullptr) observer_->OnFinish(info);
}

void Engine::ReleaseFinished() {
  for (auto& sequence : running_) {
    if (sequence->finished) free_slots_.push_back(sequence->slot);
  }
  std::erase_if(running_, [](const std::unique_ptr<Sequence>& s) { return s->finished; });
  std::erase_if(waiting_, [](const std::unique_ptr<Sequence>& s) { return s->finished; });
  running_count_ = running_.size();
  waiting_count_ = waiting_.size();
}

void Engine::TakeSubmittedLocked() {
  while (!submitted_.empty()) {
    waiting_.push_back(std::move(submitted_.front()));
    submitted_.pop_front();
  }
  // Under the same lock as the move, so that Submit never sees a request in neither count.
  waiting_count_ = waiting_.size();
}

void Engine::LoseBackend(const absl::Status& health) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    backend_lost_ = health;
    TakeSubmittedLocked();
  }
  const std::string reason = absl::StrCat("the backend is unusable: ", health.message());
  const int64_t others = static_cast<int64_t>(waiting_.size() + running_.size());
  if (observer_ != nullptr) observer_->OnBackendLost(health, others);
  for (auto& sequence : waiting_) Finish(*sequence, FinishReason::kError, reason);
  for (auto& sequence : running_) Finish(*sequence, FinishReason::kError, reason);
  ReleaseFinished();
}

bool Engine::RunIteration() {
  absl::Time drain_deadline;
  {
    std::lock_guard<std::mutex> lock(mu_);
    TakeSubmittedLocked();
    drain_deadline = drain_deadline_;
  }
  // Cancellations, deadlines and the end of a drain free their slots before planning.
  const absl::Time now = absl::Now();
  auto expire = [&](Sequence& sequence) {
    if (sequence.handle->cancelled.load() || now >= drain_deadline) {
      Finish(sequence, FinishReason::kCancelled);
    } else if (now >= sequence.params.deadline) {
      Finish(sequence, FinishReason::kDeadline);
    }
  };
  for (auto& sequence : waiting_) expire(*sequence);
  for (auto& sequence : running_) expire(*sequence);
  ReleaseFinished();
  if (waiting_.empty() && running_.empty()) return false;

  std::vector<WaitingRequest> waiting;
  for (const auto& sequence : waiting_) {
    int64_t to_prefill = static_cast<int64_t>(sequence->params.prompt.size());
    if (prefix_cache_ != nullptr) {
      if (auto hit = prefix_cache_->Peek(sequence->params.prompt)) to_prefill -= hit->tokens;
    }
    waiting.push_back({sequence->handle->id, to_prefill});
  }
  std::vector<RunningSequence> running;
  for (const auto& sequence : running_) {
    running.push_back({sequence->handle->id, static_cast<int64_t>(sequence->params.prompt.size()) - sequence->prefilled});
  }
  const IterationPlan plan = PlanIteration(waiting, running, {options_.max_running, options_.prefill_budget});
  IterationStats stats;
  for (size_t i = 0; i < plan.admitted.size(); ++i) {
    std::unique_ptr<Sequence> sequence = std::move(waiting_.front());
    waiting_.pop_front();
    sequence->slot = free_slots_.back();
    free_slots_.pop_back();
    sequence->admitted_at = now;
    absl::Status start = absl::OkStatus();
    if (prefix_cache_ != nullptr) {
      const std::vector<int32_t>& prompt = sequence->params.prompt;
      std::optional<PrefixCache::Hit> hit = prefix_cache_->Lookup(prompt);
      if (hit.has_value() && backend_->CopySlot(hit->slot, sequence->slot).ok()) {
        sequence->prefilled = sequence->cached = hit->tokens;
        ++stats.prefix_cache_hits;
        stats.prefix_cache_hit_tokens += hit->tokens;
      } else {
        if (hit.has_value()) prefix_cache_->Drop(hit->slot);
        start = backend_->ResetSlot(sequence->slot);
        ++stats.prefix_cache_misses;
      }
      sequence->snapshot_at = prefix_cache_->SnapshotPoint(prompt, sequence->prefilled);
    } else {
      start = backend_->ResetSlot(sequence->slot);
    }
    running_.push_back(std::move(sequence));
    if (!start.ok()) Finish(*running_.back(), FinishReason::kError, std::string(start.message()));
  }
  running_count_ = running_.size();
  waiting_count_ = waiting_.size();

  absl::flat_hash_map<RequestId, Sequence*> by_id;
  for (auto& sequence : running_) by_id[sequence->handle->id] = sequence.get();
  std::vector<SequenceChunk> batch;
  std::vector<Sequence*> batch_sequences;
  std::vector<bool> batch_decodes;
  std::vector<int32_t> decode_inputs;
  decode_inputs.reserve(plan.chunks.size());
  for (const ScheduledChunk& chunk : plan.chunks) {
    Sequence* sequence = by_id[chunk.id];
    if (sequence->finished) continue;
    if (chunk.decode) {
      decode_inputs.push_back(sequence->last_token);
      batch.push_back({sequence->slot, absl::MakeConstSpan(&decode_inputs.back(), 1), false});
      ++stats.decode_sequences;
    } else {
      int64_t n = std::min<int64_t>(chunk.tokens, sequence->params.prompt.size() - sequence->prefilled);
      // Stop at a prefix-cache snapshot point; the rest of the prompt goes next iteration.
      if (sequence->snapshot_at > sequence->prefilled) n = std::min(n, sequence->snapshot_at - sequence->prefilled);
      if (n <= 0) continue;
      batch.push_back({sequence->slot, absl::MakeConstSpan(sequence->params.prompt.data() + sequence->prefilled, n),
                       false});
      stats.prefill_tokens += n;
    }
    batch_sequences.push_back(sequence);
    batch_decodes.push_back(chunk.decode);
  }
  if (batch.empty()) {
    ReleaseFinished();
    return !running_.empty() || !waiting_.empty();
  }
  const int V = config_.vocab_size, L = config_.layers;
  const int64_t tokens = TotalTokens(batch);
  stats.sequences = static_cast<int64_t>(batch.size());
  // Reused across iterations: for a large vocabulary a fresh [batch, V] buffer costs more
  // (allocation, zeroing, page faults) than sampling from it.
  logits_.resize(batch.size() * V);
  activations_.resize(tokens * L);
  const absl::Span<const float> logits(logits_);
  const absl::Span<const uint8_t> activations(activations_);
  const absl::Time step_start = absl::Now();
  absl::Status status = backend_->Forward(batch, {absl::MakeSpan(logits_), absl::MakeSpan(activations_), {}});
  stats.step_time = absl::Now() - step_start;
  if (!status.ok()) {
    // The backend changed no slot; the requests of this batch end with an error.
    if (observer_ != nullptr) observer_->OnBackendError(status, static_cast<int64_t>(batch_sequences.size()));
    for (Sequence* sequence : batch_sequences) Finish(*sequence, FinishReason::kError, std::string(status.message()));
    ReleaseFinished();
    // Whether the others can go on: a lost device fails every later call as well.
    if (absl::Status health = backend_->CheckHealth(); !health.ok()) LoseBackend(health);
    return true;
  }

  stats.tokens = tokens;
  stats.activated_tokens.assign(L, 0);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int l = 0; l < L; ++l) stats.activated_tokens[l] += activations[t * L + l];
  }
  // Draw every token of the iteration first (in parallel when it pays: each sequence's
  // sampler is its own), then hand them out in batch order on this thread.
  auto samples_token = [&](size_t i) {
    const Sequence& sequence = *batch_sequences[i];
    return batch_decodes[i] || sequence.prefilled + static_cast<int64_t>(batch[i].tokens.size()) ==
                                   static_cast<int64_t>(sequence.params.prompt.size());
  };
  sampled_.resize(batch.size());
  auto draw = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (!samples_token(i)) continue;
      Sequence& sequence = *batch_sequences[i];
      const absl::Span<const float> row(logits.data() + i * V, V);
      GeneratedToken& generated = sampled_[i];
      generated.token = sequence.sampler->Sample(row);
      generated.logprob = 0.0f;
      generated.top.clear();
      if (sequence.params.top_logprobs > 0) {
        Sampler::TopLogprobs(row, sequence.params.top_logprobs, generated.token, &generated.logprob,
                             &generated.top);
      }
    }
  };
  if (sampling_pool_ != nullptr &&
      static_cast<int64_t>(batch.size()) * V >= options_.parallel_sampling_min_logits) {
    sampling_pool_->ParallelFor(batch.size(), draw);
  } else {
    draw(0, batch.size());
  }
  int64_t token_row = 0;
  const absl::Time sampled_at = absl::Now();
  for (size_t i = 0; i < batch.size(); ++i) {
    Sequence& sequence = *batch_sequences[i];
    const int64_t n = batch[i].tokens.size();
    const int64_t last_row = token_row + n - 1;
    token_row += n;
    if (!batch_decodes[i]) {
      sequence.prefilled += n;
      if (sequence.snapshot_at > 0 && sequence.prefilled == sequence.snapshot_at) {
        const SlotId snapshot = prefix_cache_->Insert(sequence.params.prompt, sequence.snapshot_at);
        if (snapshot >= 0 && !backend_->CopySlot(sequence.slot, snapshot).ok()) prefix_cache_->Drop(snapshot);
        sequence.snapshot_at = 0;
      }
      if (sequence.prefilled < static_cast<int64_t>(sequence.params.prompt.size())) continue;  // more prompt to go
    }
    GeneratedToken& generated = sampled_[i];
    generated.activations.clear();
    if (sequence.params.return_activations) {
      generated.activations.assign(activations.begin() + last_row * L, activations.begin() + (last_row + 1) * L);
    }
    if (observer_ != nullptr && sequence.generated > 0) observer_->OnTokenEmitted(sampled_at - sequence.last_token_at);
    if (sequence.generated == 0) sequence.first_token_at = sampled_at;
    sequence.last_token_at = sampled_at;
    sequence.last_token = generated.token;
    sequence.sampler->ObserveGenerated(generated.token);
    if (generated.token == kEosId && !sequence.params.ignore_eos) {
      Finish(sequence, FinishReason::kEos);
      continue;
    }
    if (sequence.sampler->IsStopToken(generated.token)) {
      Finish(sequence, FinishReason::kStopToken);
      continue;
    }
    ++sequence.generated;
    ++stats.generated_tokens;
    if (!sequence.sink->OnToken(generated)) {
      Finish(sequence, FinishReason::kStop);
    } else if (sequence.generated >= sequence.params.max_new_tokens) {
      Finish(sequence, FinishReason::kLength);
    }
  }
  ReleaseFinished();  // first, so that the counts below exclude requests that just ended
  stats.running = running_.size();
  stats.waiting = waiting_.size();
  if (prefix_cache_ != nullptr) {
    stats.prefix_cache_entries = prefix_cache_->entries();
    stats.prefix_cache_bytes = prefix_cache_->entries() * static_cast<int64_t>(backend_->state_bytes_per_slot());
  }
  if (observer_ != nullptr) observer_->OnIteration(stats);
  return true;
}

}  // namespace seqboat
