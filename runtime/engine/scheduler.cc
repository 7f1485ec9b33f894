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
  std::vector<bool> whole_prompt(sequences.size(), false);
  int room = limits.max_running;
  for (const RunningSequence& s : running) room -= 1 + static_cast<int>(s.fork_slots.size());
  size_t next_free = free_slots.size();  // slots are taken from the back
  // Cache slots this plan reads (restores) or writes (snapshots): no eviction may take them.
  std::vector<SlotId> pinned;
  auto pin = [&](SlotId slot) {
    if (std::find(pinned.begin(), pinned.end(), slot) == pinned.end()) pinned.push_back(slot);
  };
  auto take = [&]() -> SlotId {
    if (next_free > 0) return free_slots[--next_free];
    return cache != nullptr ? cache->Evict(pinned) : -1;
  };
  for (const WaitingRequest& request : waiting) {
    if (request.forks > room) break;
    std::optional<PrefixCache::Hit> hit;
    if (cache != nullptr && request.may_restore) hit = cache->Peek(request.prompt, request.routing);
    // Slots to be had: the free ones and the cache entries no admission of this plan reads.
    int64_t evictable = 0;
    if (cache != nullptr) {
      const bool hit_pinned =
          hit.has_value() && std::find(pinned.begin(), pinned.end(), hit->slot) != pinned.end();
      evictable = cache->entries() - static_cast<int64_t>(pinned.size()) -
                  (hit.has_value() && !hit_pinned ? 1 : 0);
    }
    if (request.forks > static_cast<int64_t>(next_free) + evictable) break;
    room -= request.forks;
    Admission admission;
    if (hit.has_value()) {
      cache->MarkUsed(hit->slot);
      pin(hit->slot);
      admission.restore_from = hit->slot;
      admission.restored_tokens = hit->tokens;
      admission.whole_prompt = hit->last != nullptr;
    }
    admission.slot = take();
    for (int k = 1; k < request.forks; ++k) admission.fork_slots.push_back(take());
    if (cache != nullptr) {
      admission.snapshot_at =
          cache->SnapshotPoint(request.prompt, admission.restored_tokens, request.routing);
    }
    plan.admissions.push_back(admission);
    sequences.push_back({admission.slot, request.prompt, admission.restored_tokens,
                         admission.snapshot_at, admission.fork_slots, request.routing});
    whole_prompt.push_back(admission.whole_prompt);
  }

  for (int i = 0; i < static_cast<int>(sequences.size()); ++i) {
    const RunningSequence& s = sequences[i];
    if (s.prefilled == static_cast<int64_t>(s.prompt.size()) && !whole_prompt[i]) {
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
    // A chunk that can reach the snapshot point stops there, so that the state there can be
    // copied, when the snapshot gets a slot: a free one, or one an entry worth less gives up
    // (else it runs on). Two requests with one prompt admitted together both reach the point:
    // the first claims it.
    SlotId snapshot_into = -1;
    if (cache != nullptr && s.snapshot_at > s.prefilled && s.snapshot_at - s.prefilled <= budget) {
      const absl::Span<const int32_t> prefix = s.prompt.subspan(0, s.snapshot_at);
      if (!cache->Contains(prefix, s.routing)) {
        const bool free = next_free > 0;
        snapshot_into = free ? free_slots[--next_free] : cache->Evict(pinned, s.snapshot_at);
        // Insert refuses only what Contains ruled out; a free slot would go back if it did.
        if (snapshot_into >= 0 && !cache->Insert(prefix, snapshot_into, s.routing)) {
          if (free) ++next_free;
          snapshot_into = -1;
        }
        if (snapshot_into >= 0) pin(snapshot_into);
      }
    }
    const int64_t stop = snapshot_into >= 0 ? s.snapshot_at : length;
    const int64_t take_tokens = std::min(stop - s.prefilled, budget);
    budget -= take_tokens;
    ScheduledChunk chunk;
    chunk.sequence = i;
    chunk.slot = s.slot;
    chunk.begin = s.prefilled;
    chunk.end = s.prefilled + take_tokens;
    chunk.samples = chunk.end == length;
    if (chunk.samples) chunk.fork_into = s.fork_slots;
    chunk.snapshot_into = snapshot_into;
    plan.chunks.push_back(chunk);
  }
  for (int i = 0; i < static_cast<int>(sequences.size()); ++i) {
    if (!whole_prompt[i]) continue;
    const RunningSequence& s = sequences[i];
    ScheduledChunk chunk;
    chunk.sequence = i;
    chunk.slot = s.slot;
    chunk.begin = chunk.end = static_cast<int64_t>(s.prompt.size());
    chunk.samples = chunk.from_cache = true;
    chunk.fork_into = s.fork_slots;
    plan.chunks.push_back(chunk);
  }
  plan.free_taken = static_cast<int64_t>(free_slots.size() - next_free);
  return plan;
}

}  // namespace seqboat
