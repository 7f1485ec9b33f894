// ThreadPool: every index is visited exactly once per job, back-to-back jobs (the spinning
// hand-off) and jobs after an idle pause (the sleeping hand-off) both complete, and the
// pool shuts down from either state.
#include "runtime/util/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace seqboat {
namespace {

// Runs one job over [0, n) and checks that each index was covered exactly once.
void ExpectExactCover(ThreadPool& pool, int64_t n) {
  std::vector<std::atomic<int>> visits(n);
  std::atomic<int> calls{0};
  pool.ParallelFor(n, [&](int64_t begin, int64_t end) {
    ++calls;
    EXPECT_LT(begin, end);
    for (int64_t i = begin; i < end; ++i) ++visits[i];
  });
  EXPECT_LE(calls.load(), pool.num_threads());
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(visits[i].load(), 1) << "n " << n << " index " << i;
}

TEST(ThreadPool, CoversEveryIndexOnceForAnySize) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 3, 7, 8, 9, 1000}) ExpectExactCover(pool, n);
  }
}

TEST(ThreadPool, ManyBackToBackJobsAllComplete) {
  ThreadPool pool(4);
  std::atomic<int64_t> sum{0};
  for (int job = 0; job < 20000; ++job) {
    pool.ParallelFor(16, [&](int64_t begin, int64_t end) { sum += end - begin; });
  }
  EXPECT_EQ(sum.load(), 20000 * 16);
}

TEST(ThreadPool, JobsAfterIdlePausesComplete) {
  // Pauses longer than the spin make the workers sleep on the condition variable.
  ThreadPool pool(3);
  for (int job = 0; job < 20; ++job) {
    std::this_thread::sleep_for(ThreadPool::kSpin * (job % 2 == 0 ? 4 : 1));
    ExpectExactCover(pool, 100);
  }
}

TEST(ThreadPool, ShutsDownWhileSpinningOrAsleep) {
  { ThreadPool idle(4); }  // never used
  {
    ThreadPool busy(4);
    ExpectExactCover(busy, 64);  // destroyed while its workers still spin
  }
  {
    ThreadPool asleep(4);
    ExpectExactCover(asleep, 64);
    std::this_thread::sleep_for(ThreadPool::kSpin * 10);
  }
}

}  // namespace
}  // namespace seqboat
