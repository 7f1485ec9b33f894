// A fixed pool of worker threads for data-parallel loops; the caller's thread takes part.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace seqboat {

class ThreadPool {
 public:
  // `num_threads` counts the caller: 1 means no workers (everything runs inline).
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) on disjoint ranges covering [0, n), at most one range per thread,
  // and returns when all are done. Not reentrant.
  //
  // A decode step runs a few dozen short jobs back to back, and a futex wake-up costs tens of
  // microseconds on a virtual machine, so the workers (and the caller, waiting for them) spin
  // for up to kSpin before they sleep on the condition variables.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

  static constexpr std::chrono::microseconds kSpin{20};

 private:
  void WorkerLoop(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  // Written under mu_ before generation_ is bumped (release); read after seeing the bump.
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_size_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stopping_{false};
};

}  // namespace seqboat
