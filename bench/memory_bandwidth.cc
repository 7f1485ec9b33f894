// Read bandwidth: each thread sums its contiguous share of one large buffer.
#include "bench/memory_bandwidth.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

namespace seqboat::bench {
namespace {

// Sixteen independent partial sums, so the loop is limited by loads rather than by the
// latency of one dependent add chain, and vectorises without reassociating.
float Sum(const float* values, size_t count) {
  float partial[16] = {};
  size_t i = 0;
  for (; i + 16 <= count; i += 16) {
    for (int j = 0; j < 16; ++j) partial[j] += values[i + j];
  }
  float total = 0.0f;
  for (; i < count; ++i) total += values[i];
  for (float p : partial) total += p;
  return total;
}

template <typename Fn>
void RunOnThreads(int threads, size_t count, Fn fn) {
  std::vector<std::thread> workers;
  const size_t share = (count + threads - 1) / threads;
  for (int t = 0; t < threads; ++t) {
    const size_t begin = std::min(count, t * share), end = std::min(count, begin + share);
    workers.emplace_back([=] { fn(t, begin, end); });
  }
  for (std::thread& worker : workers) worker.join();
}

}  // namespace

ReadBandwidth MeasureReadBandwidth(size_t bytes, int threads, int passes) {
  threads = std::max(1, threads);
  const size_t count = bytes / sizeof(float);
  std::unique_ptr<float[]> buffer(new float[count]);
  // First touch from the same split as the reads (pages land near their reader).
  RunOnThreads(threads, count, [&](int, size_t begin, size_t end) {
    std::fill(buffer.get() + begin, buffer.get() + end, 1.0f);
  });
  std::vector<float> sums(threads);
  auto best_seconds = [&](int readers) {
    double best = 0.0;
    for (int pass = 0; pass <= passes; ++pass) {
      const auto start = std::chrono::steady_clock::now();
      RunOnThreads(readers, count, [&](int t, size_t begin, size_t end) {
        sums[t] = Sum(buffer.get() + begin, end - begin);
      });
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (pass > 0 && (best == 0.0 || seconds < best)) best = seconds;
    }
    return best;
  };
  ReadBandwidth bandwidth;
  const double total_bytes = static_cast<double>(count * sizeof(float));
  bandwidth.single_thread = total_bytes / best_seconds(1);
  bandwidth.all_threads = total_bytes / best_seconds(threads);
  // Keep the sums observable so the reads cannot be optimised away.
  volatile float sink = 0.0f;
  for (float s : sums) sink = sink + s;
  return bandwidth;
}

}  // namespace seqboat::bench
