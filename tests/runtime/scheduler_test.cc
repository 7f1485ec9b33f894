// PlanIteration, driven through whole request lifetimes as per-iteration tables.
#include "runtime/engine/scheduler.h"

#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"

namespace seqboat {
namespace {

// A tiny simulation around PlanIteration: requests arrive at given iterations with prompt
// lengths and want `outputs` tokens; each iteration's plan is rendered as one table row.
struct Arrival {
  int iteration;
  RequestId id;
  int64_t prompt;
  int64_t outputs;
};

std::vector<std::string> Simulate(const std::vector<Arrival>& arrivals, SchedulerLimits limits, int iterations) {
  std::vector<WaitingRequest> waiting;
  std::vector<RunningSequence> running;
  std::map<RequestId, int64_t> left;  // tokens still to generate
  std::vector<std::string> rows;
  for (int it = 0; it < iterations; ++it) {
    for (const Arrival& a : arrivals) {
      if (a.iteration == it) {
        waiting.push_back({a.id, a.prompt});
        left[a.id] = a.outputs;
      }
    }
    IterationPlan plan = PlanIteration(waiting, running, limits);
    std::vector<std::string> parts;
    for (RequestId id : plan.admitted) {
      waiting.erase(waiting.begin());
      running.push_back({id, 0});
      for (const Arrival& a : arrivals) {
        if (a.id == id) running.back().prompt_remaining = a.prompt;
      }
    }
    for (const ScheduledChunk& chunk : plan.chunks) {
      parts.push_back(absl::StrCat(chunk.decode ? "d" : "p", chunk.id, chunk.decode ? "" : absl::StrCat(":", chunk.tokens),
                                   chunk.samples ? "*" : ""));
      for (RunningSequence& s : running) {
        if (s.id != chunk.id) continue;
        if (!chunk.decode) s.prompt_remaining -= chunk.tokens;
        if (chunk.samples) --left[s.id];
      }
    }
    std::erase_if(running, [&](const RunningSequence& s) { return s.prompt_remaining == 0 && left[s.id] == 0; });
    rows.push_back(parts.empty() ? "-" : absl::StrJoin(parts, " "));
  }
  return rows;
}

TEST(Scheduler, DecodeKeepsPaceWhileALongPromptPrefills) {
  // Request 1 (short prompt) is decoding when request 2 with a 10-token prompt arrives;
  // with a budget of 4 prompt tokens per iteration, 1 still gets a step every iteration.
  const std::vector<std::string> expected = {
      "p1:3*",            // 1 admitted, prompt done, first token sampled
      "d1* p2:4",         // 2 admitted: 4 of 10 prompt tokens
      "d1* p2:4",
      "d1* p2:2*",        // prompt done, 2 samples its first token
      "d1* d2*",          // 1 has its 5 tokens, 2 its 2: both finish
      "-",
      "-",
  };
  EXPECT_EQ(Simulate({{0, 1, 3, 5}, {1, 2, 10, 2}}, {/*max_running=*/2, /*prefill_budget=*/4}, 7), expected);
}

TEST(Scheduler, AdmitsInArrivalOrderAsSlotsFree) {
  // One slot: 2 and 3 wait (in order) until 1 finishes; nothing overtakes.
  const std::vector<std::string> expected = {
      "p1:2*", "d1*", "p2:1*", "p3:1*", "d3*", "-",
  };
  EXPECT_EQ(Simulate({{0, 1, 2, 2}, {0, 2, 1, 1}, {0, 3, 1, 2}}, {1, 8}, 6), expected);
}

TEST(Scheduler, BudgetIsSharedInAdmissionOrder) {
  // Three prompts admitted together share a budget of 5 prompt tokens (decode steps do not
  // count against it): the oldest is served first.
  const std::vector<std::string> expected = {
      "p1:4* p2:1",
      "d1* p2:2* p3:3*",
      "d2* d3*",
      "-",
      "-",
  };
  EXPECT_EQ(Simulate({{0, 1, 4, 2}, {0, 2, 3, 2}, {0, 3, 3, 2}}, {3, 5}, 5), expected);
}

TEST(Scheduler, EmptyInputsPlanNothing) {
  IterationPlan plan = PlanIteration({}, {}, {4, 16});
  EXPECT_TRUE(plan.admitted.empty());
  EXPECT_TRUE(plan.chunks.empty());
  // A full engine admits nobody.
  plan = PlanIteration({{9, 3}}, {{1, 0}, {2, 0}}, {2, 16});
  EXPECT_TRUE(plan.admitted.empty());
  EXPECT_EQ(plan.chunks.size(), 2u);
}

}  // namespace
}  // namespace seqboat
