#include "server/process_metrics.h"

#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "gtest/gtest.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitizerAllocator = true;  // malloc is the sanitizer's: mallinfo2 misses it, and
                                            // it keeps freed memory
#else
constexpr bool kSanitizerAllocator = false;
#endif

namespace seqboat::server {
namespace {

constexpr int64_t kMiB = 1 << 20;

TEST(ProcessSampleTest, ResidentAndHeapFollowAnAllocationTouched) {
  const ProcessSample before = SampleProcess();
  ASSERT_GT(before.resident_bytes, 0);
  ASSERT_GE(before.virtual_bytes, before.resident_bytes);
  const size_t bytes = 64 * kMiB;
  char* block = static_cast<char*>(std::malloc(bytes));
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, bytes);
  const ProcessSample touched = SampleProcess();
  EXPECT_GE(touched.resident_bytes - before.resident_bytes, 60 * kMiB);
  EXPECT_GE(touched.virtual_bytes - before.virtual_bytes, 60 * kMiB);
  if (!kSanitizerAllocator) {
    EXPECT_GE(touched.heap_in_use_bytes - before.heap_in_use_bytes, 64 * kMiB);
  }
  std::free(block);
  const ProcessSample freed = SampleProcess();
  if (!kSanitizerAllocator) {  // a sanitizer keeps freed blocks (quarantine) or their pages
    EXPECT_LE(freed.resident_bytes, touched.resident_bytes - 60 * kMiB);
    EXPECT_LE(freed.heap_in_use_bytes, touched.heap_in_use_bytes - 64 * kMiB);
    EXPECT_GE(freed.heap_free_bytes, 0);
  }
}

TEST(ProcessSampleTest, CountsDescriptorsAndKnowsItsLimitAndStart) {
  const ProcessSample before = SampleProcess();
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const ProcessSample open = SampleProcess();
  close(fds[0]);
  close(fds[1]);
  EXPECT_EQ(open.open_fds, before.open_fds + 2);
  EXPECT_GE(before.open_fds, 3);  // stdin, stdout, stderr
  EXPECT_GT(open.max_fds, open.open_fds);
  const double now = static_cast<double>(std::time(nullptr));
  const double start = ProcessStartTimeSeconds();
  EXPECT_LE(start, now + 1);
  EXPECT_GE(start, now - 600);  // this test process started moments ago
}

TEST(ProcessSampleTest, CpuTimeGrowsWithWork) {
  const ProcessSample before = SampleProcess();
  ASSERT_GE(before.cpu_seconds, 0);
  volatile double sink = 0;
  ProcessSample after = before;
  for (int round = 0; round < 1000 && after.cpu_seconds <= before.cpu_seconds; ++round) {
    for (int i = 0; i < 1000000; ++i) sink = sink + i * 1e-9;
    after = SampleProcess();
  }
  EXPECT_GT(after.cpu_seconds, before.cpu_seconds);
}

TEST(ProcessMetricsTest, ExportsTheStandardSeries) {
  prometheus::Registry registry;
  ProcessMetrics metrics(registry);
  metrics.Update();
  const std::string text = prometheus::TextSerializer().Serialize(registry.Collect());
  for (const char* name :
       {"process_resident_memory_bytes ", "process_virtual_memory_bytes ", "process_open_fds ",
        "process_max_fds ", "process_start_time_seconds ", "process_cpu_seconds_total ",
        "seqboat_heap_in_use_bytes ", "seqboat_heap_free_bytes "}) {
    EXPECT_NE(text.find(std::string("\n") + name), std::string::npos) << name << " in\n" << text;
  }
  EXPECT_NE(text.find("# TYPE process_cpu_seconds_total counter"), std::string::npos) << text;
}

}  // namespace
}  // namespace seqboat::server
