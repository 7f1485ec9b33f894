// The process's own resources on /metrics, read at each scrape: the standard Prometheus
// process_* series (as other Prometheus clients export them, for the usual dashboards and
// alerts) and the C heap as malloc accounts it. Heap bytes in use that keep growing under a
// steady load are a leak; resident bytes that grow while they stay flat are memory the
// allocator holds free (fragmentation), not a leak.
#pragma once

#include <cstdint>

#include "absl/synchronization/mutex.h"

namespace prometheus {
class Counter;
class Gauge;
class Registry;
}  // namespace prometheus

namespace seqboat::server {

// What Linux and glibc say about this process now; fields it could not read are -1.
struct ProcessSample {
  int64_t resident_bytes = -1;  // /proc/self/statm
  int64_t virtual_bytes = -1;
  int64_t open_fds = -1;  // entries of /proc/self/fd
  int64_t max_fds = -1;   // RLIMIT_NOFILE soft limit
  double cpu_seconds = -1;
  int64_t heap_in_use_bytes = -1;  // mallinfo2: allocated chunks and mmapped blocks
  int64_t heap_free_bytes = -1;    // free chunks malloc holds (resident or not)
};
ProcessSample SampleProcess();
// When this process started, in seconds since the Unix epoch; -1 if /proc cannot tell.
double ProcessStartTimeSeconds();

class ProcessMetrics {
 public:
  explicit ProcessMetrics(prometheus::Registry& registry);
  // Sets the series from a new sample; thread-safe (call before each scrape).
  void Update();

 private:
  absl::Mutex mu_;
  prometheus::Gauge *resident_, *virtual_, *open_fds_, *max_fds_, *start_time_, *heap_in_use_,
      *heap_free_;
  prometheus::Counter* cpu_;
  double cpu_seen_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace seqboat::server
