// The continuous-batching scheduler: given the waiting queue, the running sequences, the free
// slots and the prefix cache, PlanIteration returns the exact plan of one iteration, which the
// engine applies as it stands: slot operations (reset, or restore a cached prefix), the token
// span of every chunk, which chunks sample, and which chunks end in a prefix-cache snapshot
// (and into which slot). No threads, no model: tested with per-iteration tables
// (scheduler_test).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "runtime/backend.h"

namespace seqboat {

class PrefixCache;

struct SchedulerLimits {
  int max_running = 1;         // state slots for requests
  int64_t prefill_budget = 1;  // prompt tokens per iteration, over all prefilling sequences
};

// A request waiting for a slot, in arrival order.
struct WaitingRequest {
  absl::Span<const int32_t> prompt;      // >= 1 tokens
  int forks = 1;                         // slots it takes: one per fork (GenerationParams::n)
  bool may_restore = true;               // false: every prompt position must run (prompt scoring)
  absl::Span<const float> routing = {};  // its activation bias: the prefix cache's key (or empty)
};

// A sequence holding a slot.
struct RunningSequence {
  SlotId slot = -1;
  absl::Span<const int32_t> prompt;
  int64_t prefilled = 0;  // prompt tokens through the model; prompt.size(): decoding
  // > prefilled: snapshot the state into the prefix cache there; else none.
  int64_t snapshot_at = 0;
  // The slots its forks hold until the prompt ends (the state is copied into them then).
  std::vector<SlotId> fork_slots;
  absl::Span<const float> routing = {};  // as WaitingRequest::routing
};

// A waiting request moved into a slot. Admissions are the first waiting requests, in order.
struct Admission {
  SlotId slot = -1;
  SlotId restore_from = -1;     // >= 0: copy this prefix-cache slot in; -1: reset the slot
  int64_t restored_tokens = 0;  // prompt tokens the restored state holds
  // The restored entry is the whole prompt and kept its last position's logits: no forward
  // pass, the first token is sampled from them (the engine copies them at admission).
  bool whole_prompt = false;
  int64_t snapshot_at = 0;         // the sequence's snapshot point (RunningSequence::snapshot_at)
  std::vector<SlotId> fork_slots;  // the slots of its forks 1..n-1, taken after `slot`
};

struct ScheduledChunk {
  int sequence = 0;  // index into running, then the admissions in order
  SlotId slot = -1;
  bool decode = false;  // a decode step (feeds the last sampled token); else prompt tokens:
  int64_t begin = 0;    // prompt[begin, end)
  int64_t end = 0;
  bool samples = false;  // a decode step, or the chunk that ends the prompt: sample after it
  // No tokens and no forward pass (begin == end == the prompt's size): the sample comes from
  // the restored entry's kept logits (Admission::whole_prompt).
  bool from_cache = false;
  SlotId snapshot_into = -1;  // >= 0: after the forward, copy the slot's state into this cache slot
  // The chunk that ends a prompt with forks: after the forward, copy the state into these.
  std::vector<SlotId> fork_into;
};

struct IterationPlan {
  std::vector<Admission> admissions;
  // Decode steps first, then prefill chunks, then the samples from cached logits.
  std::vector<ScheduledChunk> chunks;
  // Slots the plan took from the back of `free_slots` (for admissions, then snapshots); the
  // others it uses the prefix cache gave up (PrefixCache::Evict) while planning.
  int64_t free_taken = 0;
};

// Rules: (1) admit waiting requests in arrival order while `max_running` allows and slots can
// be had: from the back of `free_slots`, then from the prefix cache's least worth entries (never
// one this plan restores or snapshots into); a request with forks takes one per fork, or waits
// with everyone behind it. With a prefix cache, each admission that may restore takes the
// longest cached prefix of its prompt (looked up once, here), and every admission gets its
// snapshot point; (2) every decoding sequence gets one decode step, so running streams keep
// their pace whatever arrives; (3) the prefill budget goes to prefilling sequences in admission
// order (running ones first, then the newly admitted), each taking what is left of its prompt,
// of the budget, and of the way to its snapshot point; a chunk that reaches the snapshot point
// claims a slot for it (a free one, or a cache entry worth less than the snapshot), and one
// that ends the prompt samples the first token (and forks the state into the fork slots);
// (4) an admission whose whole prompt was cached with its logits samples from them, in no
// chunk's budget.
//
// `cache` may be null (no prefix cache); planning updates its bookkeeping (lookups, the
// prefixes seen, claimed slots), and the engine copies the states as planned.
IterationPlan PlanIteration(absl::Span<const WaitingRequest> waiting,
                            absl::Span<const RunningSequence> running,
                            absl::Span<const SlotId> free_slots, PrefixCache* cache,
                            const SchedulerLimits& limits);

}  // namespace seqboat
