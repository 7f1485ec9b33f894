// Engine: the continuous-batching loop around PlanIteration and Backend::Forward, one
// iteration as a sequence of stages: Intake, Expire, Plan, Admit, BuildBatch, Forward,
// Sample, Deliver, Report.
#include "runtime/engine/engine.h"

#include <algorithm>
#include <cmath>

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
  std::vector<int32_t> fed;  // the decode steps' inputs so far (after the whole prompt)
  // Rows of logits_ and activations_ of the last position its state holds, from the latest
  // iteration it was in; -1 when it was not in the latest batch.
  int64_t logits_row = -1;
  int64_t activation_row = -1;
  // The whole prompt came from the prefix cache: its last position's logits and decisions.
  std::optional<PrefixCache::LastPosition> cached_last;
  int64_t generated = 0;
  absl::Time submitted_at, admitted_at, first_token_at, last_token_at;
  bool finished = false;
  // Forks 1..n-1 until the prompt ends: they hold their slots (set at admission) and start
  // decoding from a copy of this state.
  std::vector<std::unique_ptr<Sequence>> forks;
  int64_t slots() const { return 1 + static_cast<int64_t>(forks.size()); }
};

namespace {

// The state slots a queue of sequences takes.
template <typename Queue>
int64_t SlotsOf(const Queue& queue) {
  int64_t slots = 0;
  for (const auto& sequence : queue) slots += sequence->slots();
  return slots;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(Backend* backend, const ModelConfig& config,
                                                       const EngineOptions& options,
                                                       EngineObserver* observer) {
  if (options.max_running < 1) return absl::InvalidArgumentError("max_running must be >= 1");
  if (options.prefix_cache_slots < 0)
    return absl::InvalidArgumentError("prefix_cache_slots must be >= 0");
  if (options.prefix_cache_block < 1)
    return absl::InvalidArgumentError("prefix_cache_block must be >= 1");
  if (options.max_running + options.prefix_cache_slots > backend->num_slots()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_running ", options.max_running, " + prefix_cache_slots ", options.prefix_cache_slots,
        " exceed the backend's ", backend->num_slots(), " state slots"));
  }
  if (options.max_waiting < 0) return absl::InvalidArgumentError("max_waiting must be >= 0");
  if (options.prefill_budget < 1) return absl::InvalidArgumentError("prefill_budget must be >= 1");
  if (options.max_prompt_tokens < 1)
    return absl::InvalidArgumentError("max_prompt_tokens must be >= 1");
  if (options.max_new_tokens_limit < 1)
    return absl::InvalidArgumentError("max_new_tokens_limit must be >= 1");
  if (options.sampling_threads < 1)
    return absl::InvalidArgumentError("sampling_threads must be >= 1");
  return std::unique_ptr<Engine>(new Engine(backend, config, options, observer));
}

Engine::Engine(Backend* backend, const ModelConfig& config, const EngineOptions& options,
               EngineObserver* observer)
    : backend_(backend), config_(config), options_(options), observer_(observer) {
  // One pool: a slot is free, a sequence's, or a cache entry's. The cache keeps every slot
  // that requests leave to it and gives slots back when admissions need them.
  for (SlotId slot = options.max_running + options.prefix_cache_slots - 1; slot >= 0; --slot)
    free_slots_.push_back(slot);
  if (options.prefix_cache_slots > 0)
    prefix_cache_ =
        std::make_unique<PrefixCache>(options.prefix_cache_block, options.snapshot_branch_points);
  if (options.sampling_threads > 1)
    sampling_pool_ = std::make_unique<ThreadPool>(options.sampling_threads);
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
  std::vector<std::shared_ptr<RequestSink>> sinks;
  sinks.push_back(std::move(sink));
  return Submit(std::move(params), std::move(sinks));
}

absl::StatusOr<std::shared_ptr<RequestHandle>> Engine::Submit(
    GenerationParams params, std::vector<std::shared_ptr<RequestSink>> sinks) {
  if (std::optional<RequestError> error = CheckGenerationParams(
          params, options_.request_limits(), config_.vocab_size, config_.layers)) {
    return InvalidField(*error);
  }
  if (static_cast<int32_t>(sinks.size()) != params.n) {
    return absl::InvalidArgumentError(
        absl::StrCat("n is ", params.n, " but ", sinks.size(), " sinks were given; one per fork"));
  }
  auto handle = std::make_shared<RequestHandle>();
  const absl::Time now = absl::Now();
  auto make = [&](int fork) {
    auto sequence = std::make_unique<Sequence>();
    sequence->handle = handle;
    sequence->sink = std::move(sinks[fork]);
    sequence->submitted_at = now;
    sequence->params = params;
    sequence->params.sampling.seed = params.sampling.seed + static_cast<uint64_t>(fork);
    sequence->sampler = std::make_unique<Sampler>(sequence->params.sampling, config_.vocab_size);
    sequence->sampler->ObservePrompt(sequence->params.prompt);
    return sequence;
  };
  std::unique_ptr<Sequence> leader = make(0);
  for (int fork = 1; fork < params.n; ++fork) leader->forks.push_back(make(fork));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) return absl::UnavailableError("the server is shutting down");
    if (!backend_lost_.ok()) {
      return absl::UnavailableError(absl::StrCat("the backend is unusable (",
                                                 backend_lost_.message(),
                                                 "); this server must be restarted"));
    }
    // Capacity: a slot for every running sequence and max_waiting more in the queue. A
    // sequence stops counting when it finishes, before its sink hears of it: a client that
    // saw its request end finds the room.
    if (held_.load() + leader->slots() > options_.max_running + options_.max_waiting) {
      return absl::ResourceExhaustedError(absl::StrCat("the server is full (", options_.max_running,
                                                       " slots and ", options_.max_waiting,
                                                       " waiting places taken); retry later"));
    }
    held_ += leader->slots();
    submitted_.push_back(std::move(leader));
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

void Engine::EndDrain() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    accepting_ = false;
    drain_deadline_ = std::min(drain_deadline_, absl::Now());
  }
  wake_.notify_one();
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
    wake_.wait_for(lock, std::chrono::milliseconds(100), [this] {
      return !submitted_.empty() || (stop_ && waiting_.empty() && running_.empty());
    });
  }
}

void Engine::Finish(Sequence& sequence, FinishReason reason, const std::string& error) {
  if (sequence.finished) return;
  sequence.finished = true;
  --held_;
  if (reason != FinishReason::kError) SnapshotFinished(sequence);
  const absl::Time now = absl::Now();
  FinishInfo info;
  info.reason = reason;
  info.error = error;
  info.prompt_tokens = sequence.params.prompt.size();
  info.cached_prompt_tokens = sequence.cached;
  info.generated_tokens = sequence.generated;
  info.queue_time =
      (sequence.admitted_at == absl::Time() ? now : sequence.admitted_at) - sequence.submitted_at;
  info.time_to_first_token = sequence.first_token_at == absl::Time()
                                 ? absl::ZeroDuration()
                                 : sequence.first_token_at - sequence.submitted_at;
  info.total_time = now - sequence.submitted_at;
  sequence.sink->OnFinish(info);
  if (observer_ != nullptr) observer_->OnFinish(info);
  // Forks that have not started end with their leader (it ended before its prompt did).
  for (auto& fork : sequence.forks) Finish(*fork, reason, error);
}

void Engine::SnapshotFinished(Sequence& sequence) {
  // The slot holds the state after every token the sequence fed: its prompt (or what of it
  // ran) and its decode steps' inputs; the last sampled token was never fed. A fork that never
  // started (prefilled 0) holds nothing of its own. The slot itself goes to the cache: no copy.
  if (prefix_cache_ == nullptr || !options_.snapshot_finished || sequence.slot < 0 ||
      sequence.prefilled == 0) {
    return;
  }
  const std::vector<int32_t>& prompt = sequence.params.prompt;
  std::vector<int32_t> tokens(prompt.begin(), prompt.begin() + sequence.prefilled);
  tokens.insert(tokens.end(), sequence.fed.begin(), sequence.fed.end());
  if (!prefix_cache_->Insert(tokens, sequence.slot, sequence.params.activation_bias))
    return;  // cached already
  if (sequence.logits_row >= 0) KeepLastPosition(sequence.slot, sequence);
  sequence.slot = -1;  // the cache's now
}

void Engine::KeepLastPosition(SlotId entry, const Sequence& sequence) {
  const int V = config_.vocab_size, L = config_.layers;
  prefix_cache_->SetLastPosition(
      entry, absl::MakeConstSpan(logits_).subspan(sequence.logits_row * V, V),
      absl::MakeConstSpan(activations_).subspan(sequence.activation_row * L, L));
}

void Engine::DropSnapshot(SlotId slot) {
  if (prefix_cache_ != nullptr && prefix_cache_->Drop(slot)) free_slots_.push_back(slot);
}

void Engine::ReleaseFinished() {
  for (auto& sequence : running_) {
    if (!sequence->finished) continue;
    if (sequence->slot >= 0) free_slots_.push_back(sequence->slot);
    for (auto& fork : sequence->forks) free_slots_.push_back(fork->slot);
  }
  std::erase_if(running_, [](const std::unique_ptr<Sequence>& s) { return s->finished; });
  std::erase_if(waiting_, [](const std::unique_ptr<Sequence>& s) { return s->finished; });
  running_count_ = SlotsOf(running_);
  waiting_count_ = SlotsOf(waiting_);
}

void Engine::TakeSubmittedLocked() {
  while (!submitted_.empty()) {
    waiting_.push_back(std::move(submitted_.front()));
    submitted_.pop_front();
  }
  // Under the same lock as the move, so that Submit never sees a request in neither count.
  waiting_count_ = SlotsOf(waiting_);
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

// One iteration, as stages. Each returns what the next one needs; none edits the plan.
bool Engine::RunIteration() {
  const absl::Time drain_deadline = Intake();
  const absl::Time now = absl::Now();
  Expire(now, drain_deadline);
  if (waiting_.empty() && running_.empty()) return false;

  IterationStats stats;
  const IterationPlan plan = Plan();
  Admit(plan, now, &stats);
  BuildBatch(plan, &stats);
  if (batch_.sequences.empty()) {  // every planned sequence failed its slot operation
    ReleaseFinished();
    return !running_.empty() || !waiting_.empty();
  }
  if (!Forward(&stats)) return true;
  Sample();
  Deliver(&stats);
  Report(&stats);
  return true;
}

absl::Time Engine::Intake() {
  std::lock_guard<std::mutex> lock(mu_);
  TakeSubmittedLocked();
  return drain_deadline_;
}

void Engine::Expire(absl::Time now, absl::Time drain_deadline) {
  // Cancellations, deadlines and the end of a drain free their slots before planning.
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
}

IterationPlan Engine::Plan() {
  std::vector<WaitingRequest> waiting;
  int64_t room = options_.max_running - running_count_.load();  // no slot for more than this
  for (const auto& sequence : waiting_) {
    if (sequence->slots() > room) break;
    room -= sequence->slots();
    waiting.push_back({sequence->params.prompt, static_cast<int>(sequence->slots()),
                       /*may_restore=*/sequence->params.prompt_logprobs < 0,
                       sequence->params.activation_bias});
  }
  std::vector<RunningSequence> running;
  running.reserve(running_.size());
  for (const auto& sequence : running_) {
    RunningSequence& r = running.emplace_back();
    r.slot = sequence->slot;
    r.prompt = sequence->params.prompt;
    r.routing = sequence->params.activation_bias;
    r.prefilled = sequence->prefilled;
    r.snapshot_at = sequence->snapshot_at;
    for (const auto& fork : sequence->forks) r.fork_slots.push_back(fork->slot);
  }
  return PlanIteration(waiting, running, free_slots_, prefix_cache_.get(),
                       {options_.max_running, options_.prefill_budget});
}

void Engine::Admit(const IterationPlan& plan, absl::Time now, IterationStats* stats) {
  // The plan took these from the back of the free list (and the rest from the cache).
  free_slots_.resize(free_slots_.size() - plan.free_taken);
  for (const Admission& admission : plan.admissions) {
    std::unique_ptr<Sequence> sequence = std::move(waiting_.front());
    waiting_.pop_front();
    sequence->slot = admission.slot;
    for (size_t k = 0; k < sequence->forks.size(); ++k) {
      sequence->forks[k]->slot = admission.fork_slots[k];
      sequence->forks[k]->admitted_at = now;
    }
    sequence->admitted_at = now;
    sequence->prefilled = sequence->cached = admission.restored_tokens;
    sequence->snapshot_at = admission.snapshot_at;
    absl::Status start;
    if (admission.restore_from >= 0) {
      const PrefixCache::LastPosition* last = prefix_cache_->LastPositionOf(admission.restore_from);
      if (!prefix_cache_->Holds(admission.restore_from) || (admission.whole_prompt && !last)) {
        // An earlier admission of this plan failed to copy the same entry, which was dropped.
        start = absl::InternalError("the cached state this request was to restore was lost");
      } else {
        if (admission.whole_prompt) sequence->cached_last = *last;
        start = backend_->CopySlot(admission.restore_from, admission.slot);
        if (!start.ok()) DropSnapshot(admission.restore_from);
      }
      ++stats->prefix_cache_hits;
      stats->prefix_cache_hit_tokens += admission.restored_tokens;
    } else {
      start = backend_->ResetSlot(admission.slot);
      if (prefix_cache_ != nullptr) ++stats->prefix_cache_misses;
    }
    running_.push_back(std::move(sequence));
    // A slot that could not be prepared ends its request; the plan's other chunks go on.
    if (!start.ok()) Finish(*running_.back(), FinishReason::kError, std::string(start.message()));
  }
  running_count_ = SlotsOf(running_);
  waiting_count_ = SlotsOf(waiting_);
}

void Engine::BuildBatch(const IterationPlan& plan, IterationStats* stats) {
  batch_.chunks.clear();
  batch_.planned.clear();
  batch_.sequences.clear();
  batch_.first_row.clear();
  batch_.last_token.clear();
  batch_.decode_inputs.clear();
  batch_.decode_inputs.reserve(plan.chunks.size());  // spans point into it
  for (auto& sequence : running_) sequence->logits_row = sequence->activation_row = -1;
  int64_t rows = 0, tokens = 0, cached = 0;
  for (const ScheduledChunk& chunk : plan.chunks) {
    Sequence* sequence = running_[chunk.sequence].get();
    if (sequence->finished) {  // its slot operation failed
      if (chunk.snapshot_into >= 0) DropSnapshot(chunk.snapshot_into);
      continue;
    }
    if (chunk.from_cache) {  // after every forwarded chunk (the plan puts them last)
      batch_.planned.push_back(&chunk);
      batch_.sequences.push_back(sequence);
      batch_.first_row.push_back(-1);  // set below, after the forwarded rows
      batch_.last_token.push_back(cached++);
      ++stats->prefix_cache_full_hits;
      continue;
    }
    if (chunk.decode) {
      batch_.decode_inputs.push_back(sequence->last_token);
      sequence->fed.push_back(sequence->last_token);  // a failed Forward ends it (no snapshot)
      batch_.chunks.push_back({chunk.slot, absl::MakeConstSpan(&batch_.decode_inputs.back(), 1),
                               false, sequence->params.activation_bias});
      ++stats->decode_sequences;
    } else {
      // A scored prompt needs the logits of every position.
      const absl::Span<const int32_t> prompt(sequence->params.prompt);
      batch_.chunks.push_back({chunk.slot, prompt.subspan(chunk.begin, chunk.end - chunk.begin),
                               sequence->params.prompt_logprobs >= 0,
                               sequence->params.activation_bias});
      stats->prefill_tokens += chunk.end - chunk.begin;
    }
    batch_.planned.push_back(&chunk);
    batch_.sequences.push_back(sequence);
    batch_.first_row.push_back(rows);
    rows += batch_.chunks.back().all_logits ? batch_.chunks.back().tokens.size() : 1;
    tokens += static_cast<int64_t>(batch_.chunks.back().tokens.size());
    batch_.last_token.push_back(tokens - 1);
  }
  for (size_t i = batch_.chunks.size(); i < batch_.sequences.size(); ++i) {
    batch_.first_row[i] = rows + batch_.last_token[i];
    batch_.last_token[i] += tokens;
  }
  batch_.logit_rows = rows + cached;
  batch_.token_rows = tokens + cached;
  for (size_t i = 0; i < batch_.sequences.size(); ++i) {
    const int64_t entry_rows = batch_.forwarded(i) && batch_.chunks[i].all_logits
                                   ? static_cast<int64_t>(batch_.chunks[i].tokens.size())
                                   : 1;
    batch_.sequences[i]->logits_row = batch_.first_row[i] + entry_rows - 1;
    batch_.sequences[i]->activation_row = batch_.last_token[i];
  }
  stats->sequences = static_cast<int64_t>(batch_.chunks.size());
}

bool Engine::Forward(IterationStats* stats) {
  const int V = config_.vocab_size, L = config_.layers;
  const int64_t tokens = TotalTokens(batch_.chunks);
  const int64_t forwarded_rows = LogitRows(batch_.chunks);
  // Reused across iterations: for a large vocabulary a fresh [rows, V] buffer costs more
  // (allocation, zeroing, page faults) than sampling from it.
  logits_.resize(batch_.logit_rows * V);
  activations_.resize(batch_.token_rows * L);
  absl::Status status;
  if (!batch_.chunks.empty()) {  // else every entry samples from kept logits
    const absl::Time step_start = absl::Now();
    status =
        backend_->Forward(batch_.chunks, {absl::MakeSpan(logits_).subspan(0, forwarded_rows * V),
                                          absl::MakeSpan(activations_).subspan(0, tokens * L),
                                          {}});
    stats->step_time = absl::Now() - step_start;
  }
  if (status.ok()) {
    for (size_t i = batch_.chunks.size(); i < batch_.sequences.size(); ++i) {
      const PrefixCache::LastPosition& last = *batch_.sequences[i]->cached_last;
      std::copy(last.logits.begin(), last.logits.end(), logits_.begin() + batch_.first_row[i] * V);
      std::copy(last.activations.begin(), last.activations.end(),
                activations_.begin() + batch_.last_token[i] * L);
    }
    stats->tokens = tokens;
    stats->activated_tokens.assign(L, 0);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int l = 0; l < L; ++l) stats->activated_tokens[l] += activations_[t * L + l];
    }
    return true;
  }
  // The backend changed no slot; the requests of this batch end with an error, and the
  // snapshots they were to give are not taken.
  if (observer_ != nullptr)
    observer_->OnBackendError(status, static_cast<int64_t>(batch_.sequences.size()));
  for (size_t i = 0; i < batch_.sequences.size(); ++i) {
    if (batch_.planned[i]->snapshot_into >= 0) DropSnapshot(batch_.planned[i]->snapshot_into);
    Finish(*batch_.sequences[i], FinishReason::kError, std::string(status.message()));
  }
  ReleaseFinished();
  // Whether the others can go on: a lost device fails every later call as well.
  if (absl::Status health = backend_->CheckHealth(); !health.ok()) LoseBackend(health);
  return false;
}

namespace {

// `logits`' log-softmax at `token`, its rank, and the `top` most likely alternatives.
GeneratedToken Score(absl::Span<const float> logits, int32_t token, int top) {
  GeneratedToken scored;
  scored.token = token;
  Sampler::TopLogprobs(logits, top, token, &scored.logprob, &scored.top);
  scored.rank = 1 + static_cast<int32_t>(std::count_if(logits.begin(), logits.end(),
                                                       [&](float x) { return x > logits[token]; }));
  return scored;
}

}  // namespace

void Engine::Sample() {
  // Every token of the iteration is drawn first (in parallel when it pays: each sequence's
  // sampler is its own), then handed out in batch order by Deliver. Scored prompts get their
  // positions' log-probabilities here too.
  const int V = config_.vocab_size;
  const size_t n = batch_.sequences.size();
  sampled_.resize(n);
  fork_draws_.resize(n);
  prompt_scores_.resize(n);
  auto draw = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      Sequence& sequence = *batch_.sequences[i];
      const ScheduledChunk& chunk = *batch_.planned[i];
      const GenerationParams& params = sequence.params;
      const int64_t rows =
          batch_.forwarded(i) && batch_.chunks[i].all_logits ? chunk.end - chunk.begin : 1;
      const float* first = logits_.data() + batch_.first_row[i] * V;
      prompt_scores_[i].clear();
      if (!chunk.decode && params.prompt_logprobs >= 0) {
        // Row r (position begin + r) predicts prompt token begin + r + 1.
        for (int64_t r = 0;
             r < rows && chunk.begin + r + 1 < static_cast<int64_t>(params.prompt.size()); ++r) {
          prompt_scores_[i].push_back(Score({first + r * V, static_cast<size_t>(V)},
                                            params.prompt[chunk.begin + r + 1],
                                            params.prompt_logprobs));
        }
      }
      fork_draws_[i].clear();
      if (!chunk.samples || params.max_new_tokens == 0) continue;
      const absl::Span<const float> row(first + (rows - 1) * V, V);
      auto draw_one = [&](Sequence& s, GeneratedToken* generated) {
        generated->token = s.sampler->Sample(row);
        generated->logprob = 0.0f;
        generated->top.clear();
        if (s.params.logprobs || s.params.top_logprobs > 0) {
          Sampler::TopLogprobs(row, s.params.top_logprobs, generated->token, &generated->logprob,
                               &generated->top);
        }
      };
      draw_one(sequence, &sampled_[i]);
      fork_draws_[i].resize(chunk.fork_into.size());
      for (size_t k = 0; k < chunk.fork_into.size(); ++k) {
        draw_one(*sequence.forks[k], &fork_draws_[i][k]);
      }
    }
  };
  if (sampling_pool_ != nullptr && batch_.logit_rows * V >= options_.parallel_sampling_min_logits) {
    sampling_pool_->ParallelFor(n, draw);
  } else {
    draw(0, n);
  }
}

void Engine::Deliver(IterationStats* stats) {
  const absl::Time sampled_at = absl::Now();
  std::vector<std::unique_ptr<Sequence>> forked;  // join running_ after the loop
  for (size_t i = 0; i < batch_.sequences.size(); ++i) {
    Sequence& sequence = *batch_.sequences[i];
    const ScheduledChunk& chunk = *batch_.planned[i];
    const int64_t last_row = batch_.last_token[i];
    if (!chunk.decode) {
      sequence.prefilled = chunk.end;
      if (chunk.end == sequence.snapshot_at) {
        if (chunk.snapshot_into >= 0) {
          if (backend_->CopySlot(chunk.slot, chunk.snapshot_into).ok()) {
            // The chunk's last row is the snapshot's last position.
            KeepLastPosition(chunk.snapshot_into, sequence);
          } else {
            DropSnapshot(chunk.snapshot_into);
          }
        }
        sequence.snapshot_at = 0;
      }
      if (!prompt_scores_[i].empty()) {
        sequence.sink->OnPromptLogprobs(chunk.begin + 1, prompt_scores_[i]);
      }
    }
    if (!chunk.samples) continue;               // more prompt to go
    if (sequence.params.max_new_tokens == 0) {  // scored, nothing to generate
      Finish(sequence, FinishReason::kLength);
      continue;
    }
    // The forks take a copy of the whole prompt's state, then draw as the sequence does.
    for (size_t k = 0; k < chunk.fork_into.size(); ++k) {
      std::unique_ptr<Sequence>& fork = sequence.forks[k];
      fork->prefilled = sequence.prefilled;
      fork->cached = sequence.cached;
      fork->logits_row = sequence.logits_row;
      fork->activation_row = sequence.activation_row;
      const absl::Status copied = backend_->CopySlot(chunk.slot, chunk.fork_into[k]);
      if (!copied.ok()) {
        Finish(*fork, FinishReason::kError, std::string(copied.message()));
      } else {
        DeliverToken(*fork, fork_draws_[i][k], last_row, sampled_at, stats);
      }
      forked.push_back(std::move(fork));
    }
    sequence.forks.clear();
    DeliverToken(sequence, sampled_[i], last_row, sampled_at, stats);
  }
  for (auto& fork : forked) running_.push_back(std::move(fork));
}

void Engine::DeliverToken(Sequence& sequence, GeneratedToken& generated, int64_t activation_row,
                          absl::Time sampled_at, IterationStats* stats) {
  const int L = config_.layers;
  generated.activations.clear();
  if (sequence.params.return_activations) {
    generated.activations.assign(activations_.begin() + activation_row * L,
                                 activations_.begin() + (activation_row + 1) * L);
  }
  if (observer_ != nullptr && sequence.generated > 0)
    observer_->OnTokenEmitted(sampled_at - sequence.last_token_at);
  if (sequence.generated == 0) sequence.first_token_at = sampled_at;
  sequence.last_token_at = sampled_at;
  sequence.last_token = generated.token;
  sequence.sampler->ObserveGenerated(generated.token);
  if (generated.token == kEosId && !sequence.params.ignore_eos) {
    Finish(sequence, FinishReason::kEos);
    return;
  }
  if (sequence.sampler->IsStopToken(generated.token)) {
    Finish(sequence, FinishReason::kStopToken);
    return;
  }
  ++sequence.generated;
  ++stats->generated_tokens;
  if (!sequence.sink->OnToken(generated)) {
    Finish(sequence, FinishReason::kStop);
  } else if (sequence.generated >= sequence.params.max_new_tokens) {
    Finish(sequence, FinishReason::kLength);
  }
}

void Engine::Report(IterationStats* stats) {
  ReleaseFinished();  // first, so that the counts below exclude requests that just ended
  stats->running = running_.size();
  stats->waiting = waiting_.size();
  if (prefix_cache_ != nullptr) {
    stats->prefix_cache_entries = prefix_cache_->entries();
    stats->prefix_cache_bytes =
        prefix_cache_->entries() * static_cast<int64_t>(backend_->state_bytes_per_slot()) +
        prefix_cache_->last_position_bytes();
    stats->prefix_cache_evictions = prefix_cache_->evictions() - reported_evictions_;
    reported_evictions_ = prefix_cache_->evictions();
  }
  if (observer_ != nullptr) observer_->OnIteration(*stats);
}

}  // namespace seqboat
