// The engine: one thread owns the backend and every state slot and runs continuous batching
// (admit, prefill chunks within a token budget, one decode step per running sequence,
// sample, report). Other threads only submit requests and set cancellation flags.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/backend.h"
#include "runtime/engine/prefix_cache.h"
#include "runtime/engine/request.h"
#include "runtime/engine/scheduler.h"
#include "runtime/model/config.h"
#include "runtime/util/thread_pool.h"

namespace seqboat {

struct EngineOptions {
  int max_running = 8;   // sequences decoding or prefilling at once (<= backend slots)
  int max_waiting = 64;  // queued requests beyond the slots; then Submit answers ResourceExhausted
  int64_t prefill_budget = 256;  // prompt tokens per iteration over all prefilling sequences
  int64_t max_prompt_tokens = int64_t{1} << 20;
  int32_t max_new_tokens_limit = 4096;
  // Backend slots beyond max_running for the prefix cache (0 = no prefix cache). Slots are one
  // pool: the cache also keeps the request slots that no request holds, and gives them back
  // when requests need them, so it holds at least this many entries' worth and at most all.
  int prefix_cache_slots = 0;
  int64_t prefix_cache_block = 32;  // snapshots are taken at multiples of this many tokens
  // A request that ends (but by an error) leaves its state in the prefix cache, keyed by the
  // tokens it fed: a prompt that extends them (the next turn of a conversation) runs only
  // its new tokens.
  bool snapshot_finished = true;
  // Snapshots also where a prompt leaves (or ends on) a cached sequence: exactly where a shared
  // prefix ends, not only at block boundaries (PrefixCache::SnapshotPoint).
  bool snapshot_branch_points = true;
  absl::Duration iteration_delay =
      absl::ZeroDuration();  // testing: a pause after every iteration (a slow device)
  // Threads that sample the batch's tokens (each sequence's sampler is independent); worth
  // it for large vocabularies and batches. 1 = on the engine thread.
  int sampling_threads = 1;
  int64_t parallel_sampling_min_logits = 1
                                         << 14;  // below this many logits per iteration: one thread
  int32_t max_top_logprobs = 20;
  int32_t max_stop_token_ids = 256;
  int32_t max_n = 16;                   // forks of one request; at most max_running
  float max_activation_bias = 1000.0f;  // |GenerationParams::activation_bias| allowed

  RequestLimits request_limits() const {
    return {max_prompt_tokens,  max_new_tokens_limit,         max_top_logprobs,
            max_stop_token_ids, std::min(max_n, max_running), max_activation_bias};
  }
};

// What happened in one iteration, for metrics. Reported on the engine thread.
struct IterationStats {
  int64_t sequences = 0;  // chunks in the batch (decode steps and prefill chunks)
  int64_t decode_sequences = 0;
  int64_t prefill_tokens = 0;
  int64_t running = 0;
  int64_t waiting = 0;
  absl::Duration step_time;               // the backend's Forward call
  std::vector<int64_t> activated_tokens;  // [L] tokens of this iteration that ran each layer's GAU
  int64_t tokens = 0;                     // tokens through the model this iteration
  int64_t generated_tokens = 0;           // tokens sampled and handed to sinks
  // Prefix cache: lookups made while admitting this iteration's requests, and its size now.
  int64_t prefix_cache_hits = 0;
  int64_t prefix_cache_misses = 0;
  int64_t prefix_cache_hit_tokens = 0;
  int64_t prefix_cache_entries = 0;
  int64_t prefix_cache_bytes = 0;
  int64_t prefix_cache_evictions = 0;  // entries this iteration gave their slots up
  int64_t prefix_cache_full_hits = 0;  // of the hits, whole prompts sampled from kept logits
};

class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  virtual void OnIteration(const IterationStats& stats) {}
  virtual void OnFinish(const FinishInfo& info) {}
  virtual void OnTokenEmitted(absl::Duration since_previous_token) {}
  // The backend failed a Forward call; the `sequences` requests of that batch end with
  // FinishReason::kError and the engine goes on with the others.
  virtual void OnBackendError(const absl::Status& status, int64_t sequences) {}
  // After that failure the backend reported itself unusable (`health`): the `sequences`
  // other requests end with FinishReason::kError too, and no request is taken any more.
  virtual void OnBackendLost(const absl::Status& health, int64_t sequences) {}
};

class Engine {
 public:
  // `backend` and `observer` (may be null) must outlive the engine.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(Backend* backend, const ModelConfig& config,
                                                        const EngineOptions& options,
                                                        EngineObserver* observer);
  ~Engine();  // Shutdown(0) if still running

  // Validates and enqueues a request; answers at once. ResourceExhausted when the waiting
  // queue is full, InvalidArgument naming the field, Unavailable after Shutdown began. One
  // sink per fork (GenerationParams::n); one handle cancels them all.
  absl::StatusOr<std::shared_ptr<RequestHandle>> Submit(
      GenerationParams params, std::vector<std::shared_ptr<RequestSink>> sinks);
  absl::StatusOr<std::shared_ptr<RequestHandle>> Submit(GenerationParams params,
                                                        std::shared_ptr<RequestSink> sink);

  // Stops accepting; lets running and waiting requests finish within `grace`, then
  // finishes the rest as cancelled; returns when the engine thread has exited.
  void Shutdown(absl::Duration grace);
  // Ends a drain now, from any thread: what still runs or waits finishes as cancelled at the
  // next iteration (a second stop signal). Submit must already be refused (Shutdown began, or
  // the front-ends stopped accepting).
  void EndDrain();

  absl::Time last_heartbeat() const;  // the loop's last iteration (or idle wake-up)
  // OK unless a failed Forward left the backend unusable (Backend::CheckHealth). From then on
  // every request ends with an error and Submit answers UNAVAILABLE: restart the process.
  absl::Status backend_status() const;
  int64_t running() const { return running_count_.load(); }
  int64_t waiting() const { return waiting_count_.load(); }
  const EngineOptions& options() const { return options_; }

 private:
  struct Sequence;

  Engine(Backend* backend, const ModelConfig& config, const EngineOptions& options,
         EngineObserver* observer);
  // What one iteration runs: entries, each a sequence and its planned chunk. The first
  // chunks.size() entries go through the backend; the rest sample from the logits the prefix
  // cache kept for their whole prompt (their rows are filled from Sequence::cached_last).
  struct Batch {
    std::vector<SequenceChunk> chunks;
    std::vector<const ScheduledChunk*> planned;
    std::vector<Sequence*> sequences;
    std::vector<int64_t> first_row;      // of each entry's logits (scored prompts have one a token)
    std::vector<int64_t> last_token;     // each entry's row of activations_ for its last token
    std::vector<int32_t> decode_inputs;  // the decode chunks' tokens point here
    int64_t logit_rows = 0;              // over all entries
    int64_t token_rows = 0;
    bool forwarded(size_t i) const { return i < chunks.size(); }
  };

  void Loop();
  bool RunIteration();  // false when there was nothing to do
  // The stages of an iteration, in order.
  absl::Time Intake();  // submitted -> waiting; returns the drain deadline
  void Expire(absl::Time now, absl::Time drain_deadline);  // cancellations, deadlines, drain
  IterationPlan Plan();
  void Admit(const IterationPlan& plan, absl::Time now,
             IterationStats* stats);  // slots, resets, restores
  void BuildBatch(const IterationPlan& plan, IterationStats* stats);
  bool Forward(IterationStats* stats);  // false: the batch failed and its requests ended
  void Sample();
  void Deliver(IterationStats* stats);  // tokens to sinks, snapshots, forks
  void DeliverToken(Sequence& sequence, GeneratedToken& generated, int64_t activation_row,
                    absl::Time sampled_at, IterationStats* stats);
  void Report(IterationStats* stats);
  void Finish(Sequence& sequence, FinishReason reason, const std::string& error = "");
  // Puts the state a finished sequence leaves into the prefix cache
  // (EngineOptions::snapshot_finished).
  void SnapshotFinished(Sequence& sequence);
  void DropSnapshot(SlotId slot);  // forgets a cache entry and frees its slot
  // Gives the cache entry in `entry` the logits and decisions of `sequence`'s last position
  // (its rows of this iteration's logits_ and activations_).
  void KeepLastPosition(SlotId entry, const Sequence& sequence);
  void ReleaseFinished();
  void TakeSubmittedLocked();                    // submitted_ -> waiting_; holds mu_
  void LoseBackend(const absl::Status& health);  // ends every request; Submit refuses

  Backend* const backend_;
  const ModelConfig config_;
  const EngineOptions options_;
  EngineObserver* const observer_;

  mutable std::mutex mu_;  // guards submitted_, accepting_, draining deadline, backend_lost_
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Sequence>> submitted_;
  bool accepting_ = true;
  bool stop_ = false;
  absl::Time drain_deadline_ = absl::InfiniteFuture();
  absl::Status backend_lost_;  // guarded by mu_; not OK once the backend is unusable

  // Owned by the engine thread only.
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  std::vector<SlotId> free_slots_;
  std::unique_ptr<PrefixCache> prefix_cache_;            // null when off
  int64_t reported_evictions_ = 0;                       // the cache's count at the last Report
  std::unique_ptr<ThreadPool> sampling_pool_;            // null when sampling_threads == 1
  Batch batch_;                                          // this iteration's (scratch)
  std::vector<GeneratedToken> sampled_;                  // [batch] this iteration's draws (scratch)
  std::vector<std::vector<GeneratedToken>> fork_draws_;  // [batch][forks] (scratch)
  std::vector<std::vector<GeneratedToken>> prompt_scores_;  // [batch][positions] (scratch)
  std::vector<float> logits_;                               // [rows, V] scratch
  std::vector<uint8_t> activations_;                        // [tokens, L] scratch

  std::atomic<int64_t> heartbeat_ns_{0};
  std::atomic<int64_t> held_{0};  // sequences submitted and not finished (the capacity count)
  std::atomic<int64_t> running_count_{0};
  std::atomic<int64_t> waiting_count_{0};
  std::thread thread_;
};

}  // namespace seqboat
