// PlanIteration: admission with the prefix cache, decode steps, and the prefill token budget.
#include "runtime/engine/scheduler.h"

#include <algorithm>

#include "runtime/engine/prefix_cache.h"

namespace seqboat {

IterationPlan PlanIteration(absl::Span<const WaitingRequest> waiting,
                            absl::Span<const RunningSequence> running,
                            absl::Span<const SlotId> free_slots, PrefixCache* cache,
                            const SchedulerLimits& limits) {
  IterationPlan plan;
  // Every sequence of the iteration: the running ones, then the admitted ones.
  std::vector<RunningSequence> sequences(running.begin(), running.end());
  int room = limits.max_running;
  for (const RunningSequence& s : running) room -= 1 + static_cast<int>(s.fork_slots.size());
  size_t next_free = free_slots.size();  // slots are taken from the back
  for (const WaitingRequest& request : waiting) {
    if (request.forks > room || static_cast<size_t>(request.forks) > next_free) break;
    room -= request.forks;
    Admission admission;
    admission.slot = free_slots[--next_free];
    for (int k = 1; k < request.forks; ++k) admission.fork_slots.push_back(free_slots[--next_free]);
    if (cache != nullptr) {
      if (request.may_restore) {
        if (std::optional<PrefixCache::Hit> hit = cache->Lookup(request.prompt)) {
          admission.restore_from = hit->slot;
          admission.restored_tokens = hit->tokens;
        }
      }
      admission.snapshot_at = cache->SnapshotPoint(request.prompt, admission.restored_tokens);
    }
    plan.admissions.push_back(admission);
    sequences.push_back({admission.slot, request.prompt, admission.restored_tokens,
                         admission.snapshot_at, admission.fork_slots});
  }

  for (int i = 0; i < static_cast<int>(sequences.size()); ++i) {
    const RunningSequence& s = sequences[i];
    if (s.prefilled == static_cast<int64_t>(s.prompt.size())) {
      ScheduledChunk step;
      step.sequence = i;
      step.slot = s.slot;
      step.decode = step.samples = true;
      plan.chunks.push_back(step);
    }
  }
  int64_t budget = limits.prefill_budget;
  for (int i = 0; i < static_cast<int>(sequences.size()) && budget > 0; ++i) {
    const RunningSequence& s = sequences[i];
    const int64_t length = static_cast<int64_t>(s.prompt.size());
    if (s.prefilled == length) continue;
    // A chunk stops at the snapshot point, so that the state there can be copied.
    const int64_t stop = s.snapshot_at > s.prefilled ? s.snapshot_at : length;
    const int64_t take = std::min(stop - s.prefilled, budget);
    budget -= take;
    ScheduledChunk chunk;
    chunk.sequence = i;
    chunk.slot = s.slot;
    chunk.begin = s.prefilled;
    chunk.end = s.prefilled + take;
    chunk.samples = chunk.end == length;
    if (chunk.samples) chunk.fork_into = s.fork_slots;
    if (chunk.end == s.snapshot_at && cache != nullptr)
      chunk.snapshot_into = cache->Insert(s.prompt, s.snapshot_at);
    plan.chunks.push_back(chunk);
  }
  return plan;
}

}  // namespace seqboat
