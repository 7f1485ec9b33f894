// PlanIteration: admission, decode steps, and the prefill token budget.
#include "runtime/engine/scheduler.h"

#include <algorithm>

namespace seqboat {

IterationPlan PlanIteration(const std::vector<WaitingRequest>& waiting,
                            const std::vector<RunningSequence>& running,
                            const SchedulerLimits& limits) {
  IterationPlan plan;
  std::vector<RunningSequence> prefilling;
  for (const RunningSequence& sequence : running) {
    if (sequence.prompt_remaining == 0) {
      plan.chunks.push_back({sequence.id, 1, /*decode=*/true, /*samples=*/true});
    } else {
      prefilling.push_back(sequence);
    }
  }
  const int free_slots = std::max(0, limits.max_running - static_cast<int>(running.size()));
  for (int i = 0; i < free_slots && i < static_cast<int>(waiting.size()); ++i) {
    plan.admitted.push_back(waiting[i].id);
    prefilling.push_back({waiting[i].id, waiting[i].prompt_tokens});
  }
  int64_t budget = limits.prefill_budget;
  for (const RunningSequence& sequence : prefilling) {
    if (budget <= 0) break;
    const int64_t take = std::min(sequence.prompt_remaining, budget);
    budget -= take;
    plan.chunks.push_back({sequence.id, take, /*decode=*/false, take == sequence.prompt_remaining});
  }
  return plan;
}

}  // namespace seqboat
