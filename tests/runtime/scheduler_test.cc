// PlanIteration, driven through whole request lifetimes as per-iteration tables, with and
// without the prefix cache.
#include "runtime/engine/scheduler.h"

#include <algorithm>
#include <deque>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "runtime/engine/prefix_cache.h"

namespace seqboat {
namespace {

// A tiny engine around PlanIteration: requests arrive at given iterations with their prompts
// and want `outputs` tokens; the plan is applied as the engine applies it, and each
// iteration's plan is rendered as one table row:
//   A2        request 2 admitted into a reset slot
//   A2<c9:8   admitted, restoring 8 prompt tokens from cache slot 9 (`=`: the whole prompt,
//             with its logits)
//   A2!3      admitted into slot 3, which the cache gave up
//   d1*       a decode step of request 1 (it samples)
//   p2:0-4    prompt tokens [0, 4) of request 2; `*` it samples, `>c9` snapshot into slot 9
//   s2*       request 2 samples its first token from the cached logits (no forward pass)
// The slot pool is max_running + `cache_slots` slots. With `ends_to_cache`, a request that ends
// leaves its slot to the cache, keyed by its prompt and its decode inputs (tokens 900..), with
// its last position, as the engine does.
struct Arrival {
  int iteration;
  int id;
  std::vector<int32_t> prompt;
  int64_t outputs;
  int forks = 1;  // fork k of request r shows as request r * 10 + k
};

std::vector<int32_t> Tokens(int64_t n, int32_t first = 10) {
  std::vector<int32_t> tokens(n);
  for (int64_t i = 0; i < n; ++i) tokens[i] = first + static_cast<int32_t>(i);
  return tokens;
}

std::vector<std::string> Simulate(const std::vector<Arrival>& arrivals, SchedulerLimits limits,
                                  int iterations, PrefixCache* cache = nullptr, int cache_slots = 0,
                                  bool ends_to_cache = false) {
  struct Request {
    int id;
    std::vector<int32_t> prompt;
    int64_t left;  // tokens still to generate
    RunningSequence state;
    int forks = 1;
    int64_t outputs = left;  // tokens it generates in all
  };
  std::deque<Request> waiting;
  std::vector<Request> running;
  std::vector<SlotId> free_slots;
  for (SlotId slot = limits.max_running + cache_slots - 1; slot >= 0; --slot)
    free_slots.push_back(slot);
  std::vector<std::string> rows;
  for (int it = 0; it < iterations; ++it) {
    for (const Arrival& a : arrivals) {
      if (a.iteration == it) waiting.push_back({a.id, a.prompt, a.outputs, {}, a.forks});
    }
    std::vector<WaitingRequest> waiting_in;
    for (const Request& r : waiting) waiting_in.push_back({r.prompt, r.forks});
    std::vector<RunningSequence> running_in;
    for (const Request& r : running) running_in.push_back(r.state);
    const IterationPlan plan = PlanIteration(waiting_in, running_in, free_slots, cache, limits);
    std::vector<std::string> parts;
    // The plan took free slots from the back, in order; the others came from the cache.
    std::vector<SlotId> taken(free_slots.rbegin(), free_slots.rbegin() + plan.free_taken);
    free_slots.resize(free_slots.size() - plan.free_taken);
    size_t next_taken = 0;
    auto from_cache = [&](SlotId slot) {
      if (next_taken < taken.size() && taken[next_taken] == slot) {
        ++next_taken;
        return false;
      }
      EXPECT_FALSE(cache != nullptr && cache->Holds(slot)) << "an evicted slot is no entry";
      return true;
    };
    for (const Admission& admission : plan.admissions) {
      Request r = waiting.front();
      waiting.pop_front();
      const bool evicted = from_cache(admission.slot);
      EXPECT_EQ(static_cast<int>(admission.fork_slots.size()), r.forks - 1);
      for (SlotId slot : admission.fork_slots) from_cache(slot);
      r.state = {admission.slot, r.prompt, admission.restored_tokens, admission.snapshot_at,
                 admission.fork_slots};
      std::string part = absl::StrCat("A", r.id, r.forks > 1 ? absl::StrCat("x", r.forks) : "");
      if (evicted) absl::StrAppend(&part, "!", admission.slot);
      if (admission.restore_from >= 0) {
        absl::StrAppend(&part, "<c", admission.restore_from, ":", admission.restored_tokens,
                        admission.whole_prompt ? "=" : "");
      }
      parts.push_back(part);
      running.push_back(std::move(r));
    }
    std::vector<Request> forked;
    for (const ScheduledChunk& chunk : plan.chunks) {
      Request& r = running[chunk.sequence];
      EXPECT_EQ(chunk.slot, r.state.slot);
      if (chunk.decode) {
        parts.push_back(absl::StrCat("d", r.id, chunk.samples ? "*" : ""));
      } else if (chunk.from_cache) {
        EXPECT_EQ(chunk.begin, static_cast<int64_t>(r.prompt.size()));
        EXPECT_EQ(chunk.end, chunk.begin);
        EXPECT_TRUE(chunk.samples);
        parts.push_back(absl::StrCat("s", r.id, "*"));
      } else {
        EXPECT_EQ(chunk.begin, r.state.prefilled) << "a chunk continues where the prompt stands";
        parts.push_back(absl::StrCat(
            "p", r.id, ":", chunk.begin, "-", chunk.end, chunk.samples ? "*" : "",
            chunk.snapshot_into >= 0 ? absl::StrCat(">c", chunk.snapshot_into) : "",
            chunk.fork_into.empty() ? ""
                                    : absl::StrCat(">f", absl::StrJoin(chunk.fork_into, ","))));
        EXPECT_EQ(chunk.fork_into, chunk.samples ? r.state.fork_slots : std::vector<SlotId>{});
        r.state.prefilled = chunk.end;
        if (chunk.end == r.state.snapshot_at) r.state.snapshot_at = 0;
        for (size_t k = 0; k < chunk.fork_into.size(); ++k) {
          // A fork decodes from the whole prompt's state, its first token drawn already.
          RunningSequence state{chunk.fork_into[k], r.prompt, chunk.end, 0, {}};
          forked.push_back({r.id * 10 + static_cast<int>(k) + 1, r.prompt, r.left - 1, state});
        }
        if (!chunk.fork_into.empty()) r.state.fork_slots.clear();
      }
      if (chunk.samples) --r.left;
    }
    for (Request& fork : forked) running.push_back(std::move(fork));
    for (auto it = running.begin(); it != running.end();) {
      if (it->state.prefilled == static_cast<int64_t>(it->prompt.size()) && it->left == 0) {
        std::vector<int32_t> fed = it->prompt;
        for (int32_t k = 0; k < it->outputs - 1; ++k) fed.push_back(900 + k);
        if (ends_to_cache && cache->Insert(fed, it->state.slot)) {
          cache->SetLastPosition(it->state.slot, std::vector<float>{0.0f}, std::vector<uint8_t>{0});
        } else {
          free_slots.push_back(it->state.slot);
        }
        it = running.erase(it);
      } else {
        ++it;
      }
    }
    rows.push_back(parts.empty() ? "-" : absl::StrJoin(parts, " "));
  }
  return rows;
}

TEST(Scheduler, DecodeKeepsPaceWhileALongPromptPrefills) {
  // Request 1 (short prompt) is decoding when request 2 with a 10-token prompt arrives;
  // with a budget of 4 prompt tokens per iteration, 1 still gets a step every iteration.
  const std::vector<std::string> expected = {
      "A1 p1:0-3*",     // 1 admitted, prompt done, first token sampled
      "A2 d1* p2:0-4",  // 2 admitted: 4 of 10 prompt tokens
      "d1* p2:4-8",
      "d1* p2:8-10*",  // prompt done, 2 samples its first token
      "d1* d2*",       // 1 has its 5 tokens, 2 its 2: both finish
      "-",
      "-",
  };
  EXPECT_EQ(Simulate({{0, 1, Tokens(3), 5}, {1, 2, Tokens(10), 2}},
                     {/*max_running=*/2, /*prefill_budget=*/4}, 7),
            expected);
}

TEST(Scheduler, AdmitsInArrivalOrderAsSlotsFree) {
  // One slot: 2 and 3 wait (in order) until 1 finishes; nothing overtakes.
  const std::vector<std::string> expected = {
      "A1 p1:0-2*", "d1*", "A2 p2:0-1*", "A3 p3:0-1*", "d3*", "-",
  };
  EXPECT_EQ(Simulate({{0, 1, Tokens(2), 2}, {0, 2, Tokens(1), 1}, {0, 3, Tokens(1), 2}}, {1, 8}, 6),
            expected);
}

TEST(Scheduler, BudgetIsSharedInAdmissionOrder) {
  // Three prompts admitted together share a budget of 5 prompt tokens (decode steps do not
  // count against it): the oldest is served first.
  const std::vector<std::string> expected = {
      "A1 A2 A3 p1:0-4* p2:0-1", "d1* p2:1-3* p3:0-3*", "d2* d3*", "-", "-",
  };
  EXPECT_EQ(Simulate({{0, 1, Tokens(4), 2}, {0, 2, Tokens(3), 2}, {0, 3, Tokens(3), 2}}, {3, 5}, 5),
            expected);
}

TEST(Scheduler, ForksWaitForAllTheirSlotsThenShareOnePrefill) {
  // Two slots: request 2 (2 forks) waits for both, in order, ahead of 3; its prompt runs once
  // and the state goes to the fork's slot when it ends.
  const std::vector<std::string> expected = {
      "A1 p1:0-2*",
      "d1*",  // 1 finishes: both slots free
      "A2x2 p2:0-4",
      "p2:4-6*>f1",  // the prompt ends: fork 21 starts in slot 1
      "d2* d21*",    "A3 p3:0-1*", "-",
  };
  EXPECT_EQ(Simulate({{0, 1, Tokens(2), 2}, {1, 2, Tokens(6), 2, 2}, {1, 3, Tokens(1), 1}},
                     {/*max_running=*/2, /*prefill_budget=*/4}, 7),
            expected);
}

TEST(Scheduler, EmptyInputsPlanNothing) {
  IterationPlan plan = PlanIteration({}, {}, {0, 1, 2, 3}, nullptr, {4, 16});
  EXPECT_TRUE(plan.admissions.empty());
  EXPECT_TRUE(plan.chunks.empty());
  // A full engine admits nobody.
  const std::vector<int32_t> prompt = Tokens(3);
  plan = PlanIteration({{prompt}}, {{0, prompt, 3, 0, {}}, {1, prompt, 3, 0, {}}}, {}, nullptr,
                       {2, 16});
  EXPECT_TRUE(plan.admissions.empty());
  EXPECT_EQ(plan.chunks.size(), 2u);
}

// With the prefix cache (blocks of 4 tokens; a pool of 2 request slots and 2 more): a boundary
// is snapshot the second time a prompt passes it, the prefill chunk stopping there; later
// prompts with that prefix restore it at admission and prefill only the rest.
TEST(Scheduler, PrefixCacheSnapshotsASharedPrefixAndRestoresIt) {
  PrefixCache cache(/*block=*/4);
  std::vector<int32_t> a = Tokens(10), b = Tokens(10), c = Tokens(9);
  b[9] = 99;  // b shares a's first 9 tokens
  c[8] = 77;  // c shares a's first 8
  const std::vector<std::string> expected = {
      "A1 p1:0-10*",   // boundaries 4 and 8 seen once: no snapshot
      "d1*",           // 1 finishes; its slot 0 is free again
      "A2 p2:0-8>c1",  // seen before: the chunk stops at 8 and snapshots into free slot 1
      "p2:8-10*",
      "A3<c1:8 d2* p3:8-9*",  // 3 restores 8 tokens and prefills 1
      "d3*",
      "-",
  };
  EXPECT_EQ(Simulate({{0, 1, a, 2}, {2, 2, b, 2}, {4, 3, c, 2}}, {2, 16}, 7, &cache, 2), expected);
}

TEST(Scheduler, BudgetLeftAtASnapshotPointGoesToTheNextPrompt) {
  PrefixCache cache(/*block=*/4);
  const std::vector<int32_t> shared = Tokens(6), other = Tokens(6, 50);
  // Request 1 marks boundary 4 seen; request 2 stops at it (4 of its 6 tokens), and the rest
  // of the budget of 8 goes to request 3 instead of waiting for the next iteration.
  const std::vector<std::string> expected = {
      "A1 p1:0-6*", "A2 A3 d1* p2:0-4>c3 p3:0-4", "p2:4-6* p3:4-6*", "d2* d3*", "-",
  };
  EXPECT_EQ(
      Simulate({{0, 1, shared, 2}, {1, 2, shared, 2}, {1, 3, other, 2}}, {3, 8}, 5, &cache, 1),
      expected);
}

TEST(Scheduler, ARepeatOfABlockSnapshotRestoresUpToItsLastBlock) {
  PrefixCache cache(/*block=*/4);
  const std::vector<int32_t> prompt = Tokens(8);
  // Without end snapshots: the second pass snapshots boundary 4 (8 is the prompt's end: never
  // a block snapshot); the third restores 4 and runs 4 more.
  const std::vector<std::string> expected = {
      "A1 p1:0-8*", "A2 p2:0-4>c1", "p2:4-8*", "A3<c1:4 p3:4-8*", "-",
  };
  EXPECT_EQ(
      Simulate({{0, 1, prompt, 1}, {1, 2, prompt, 1}, {3, 3, prompt, 1}}, {1, 16}, 5, &cache, 1),
      expected);
}

TEST(Scheduler, AnExactRepeatOfAnEndSamplesFromItsLogitsWithoutAForwardPass) {
  PrefixCache cache(/*block=*/4);
  const std::vector<int32_t> prompt = Tokens(6);
  // Request 1 generates 2 tokens: it fed its prompt and its first token (900), and its slot 0
  // becomes that sequence's entry. Request 2 repeats the prompt: the entry is longer than it,
  // so it runs the prompt (boundary 4 was seen, but no slot is free and the entry is worth
  // more than a 4-token snapshot, so the chunk runs on). Request 3 is request 1's whole
  // sequence: restored whole and sampled from the kept logits, in no chunk.
  const std::vector<std::string> expected = {
      "A1 p1:0-6*", "d1*", "A2 p2:0-6*", "d2*", "A3<c0:7= s3*", "d3*", "-",
  };
  std::vector<int32_t> whole = prompt;
  whole.push_back(900);
  EXPECT_EQ(Simulate({{0, 1, prompt, 2}, {2, 2, prompt, 2}, {4, 3, whole, 2}}, {2, 16}, 7, &cache,
                     0, /*ends_to_cache=*/true),
            expected);
}

TEST(Scheduler, UnderMemoryPressureAdmissionsTakeTheLeastWorthEntryButNeverTheOneTheyRestore) {
  PrefixCache cache(/*block=*/64);
  // One request slot and one more: every slot a finished request leaves goes to the cache.
  std::vector<int32_t> a = Tokens(4), b = Tokens(8, 50), c = a, d = Tokens(3, 60);
  c.push_back(77);
  const std::vector<std::string> expected = {
      "A1 p1:0-4*",  // ends: the cache holds a (worth 4) in slot 0
      "A2 p2:0-8*",  // ends: b (worth 8) in slot 1; no slot is free now
      // c restores a, so a stays, and b gives its slot up although it is worth more.
      "A3!1<c0:4 p3:4-5*",
      "A4!0 p4:0-3*",  // the clock rose to 8: c (worth 13) stays, a (4) goes
      "-",
  };
  EXPECT_EQ(Simulate({{0, 1, a, 1}, {1, 2, b, 1}, {2, 3, c, 1}, {3, 4, d, 1}}, {1, 16}, 5, &cache,
                     1, /*ends_to_cache=*/true),
            expected);
  EXPECT_EQ(cache.evictions(), 2);
  EXPECT_EQ(cache.entries(), 2);  // c and d
}

}  // namespace
}  // namespace seqboat
