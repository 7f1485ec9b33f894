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
  const int room = std::max(0, limits.max_running - static_cast<int>(running.size()));
  const int admitted =
      std::min({room, static_cast<int>(waiting.size()), static_cast<int>(free_slots.size())});
  for (int i = 0; i < admitted; ++i) {
    Admission admission;
    admission.slot = free_slots[free_slots.size() - 1 - i];
    const absl::Span<const int32_t> prompt = waiting[i].prompt;
    if (cache != nullptr) {
      if (std::optional<PrefixCache::Hit> hit = cache->Lookup(prompt)) {
        admission.restore_from = hit->slot;
        admission.restored_tokens = hit->tokens;
      }
      admission.snapshot_at = cache->SnapshotPoint(prompt, admission.restored_tokens);
    }
    plan.admissions.push_back(admission);
    sequences.push_back({admission.slot, prompt, admission.restored_tokens, admission.snapshot_at});
  }

  for (int i = 0; i < static_cast<int>(sequences.size()); ++i) {
    const RunningSequence& s = sequences[i];
    if (s.prefilled == static_cast<int64_t>(s.prompt.size())) {
      plan.chunks.push_back({i, s.slot, /*decode=*/true, 0, 0, /*samples=*/true, -1});
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
    ScheduledChunk chunk{i, s.slot, /*decode=*/false, s.prefilled, s.prefilled + take, false, -1};
    chunk.samples = chunk.end == length;
    if (chunk.end == s.snapshot_at && cache != nullptr)
      chunk.snapshot_into = cache->Insert(s.prompt, s.snapshot_at);
    plan.chunks.push_back(chunk);
  }
  return plan;
}

}  // namespace seqboat
