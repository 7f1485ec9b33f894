// The continuous-batching scheduler as a pure function: given the waiting queue, the running
// sequences and the limits, decide one iteration (admissions, prefill chunks, decode steps).
// No threads, no model: tested with per-iteration tables (scheduler_test).
#pragma once

#include <cstdint>
#include <vector>

namespace seqboat {

using RequestId = int64_t;

struct SchedulerLimits {
  int max_running = 1;         // state slots
  int64_t prefill_budget = 1;  // prompt tokens per iteration, over all prefilling sequences
};

struct WaitingRequest {
  RequestId id = 0;
  int64_t prompt_tokens = 0;  // tokens still to prefill (after any prefix-cache hit), >= 1
};

struct RunningSequence {
  RequestId id = 0;
  int64_t prompt_remaining = 0;  // > 0: still prefilling; 0: decoding
};

struct ScheduledChunk {
  RequestId id = 0;
  int64_t tokens = 0;     // prompt tokens this iteration, or 1 for a decode step
  bool decode = false;    // a decode step (feeds the last sampled token)
  bool samples = false;   // this chunk ends the prompt or is a decode step: sample after it
};

struct IterationPlan {
  std::vector<RequestId> admitted;      // moved from the waiting queue into slots, FIFO order
  std::vector<ScheduledChunk> chunks;   // decode steps first, then prefill chunks
};

// Rules: (1) admit waiting requests in FIFO order while slots are free; (2) every decoding
// sequence gets one decode step, so running streams keep their pace whatever arrives;
// (3) the prefill budget goes to prefilling sequences in admission order (running ones
// first, then the newly admitted), each taking min(remaining, budget left); a sequence
// whose prompt ends in this chunk samples its first token.
IterationPlan PlanIteration(const std::vector<WaitingRequest>& waiting,
                            const std::vector<RunningSequence>& running,
                            const SchedulerLimits& limits);

}  // namespace seqboat
