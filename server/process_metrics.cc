#include "server/process_metrics.h"

#include <dirent.h>
#include <malloc.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace seqboat::server {
namespace {

int64_t CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int64_t n = 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n - 1;  // the directory stream's own descriptor
}

}  // namespace

// Field 22 of /proc/self/stat (starttime, clock ticks after boot) plus btime of /proc/stat.
double ProcessStartTimeSeconds() {
  std::ifstream stat("/proc/self/stat");
  std::string line;
  if (!std::getline(stat, line)) return -1;
  const size_t paren = line.rfind(')');  // the command name may hold spaces and parentheses
  if (paren == std::string::npos) return -1;
  std::istringstream fields(line.substr(paren + 2));  // from field 3 on
  std::string field;
  for (int i = 3; i <= 22; ++i) {
    if (!(fields >> field)) return -1;
  }
  std::ifstream system("/proc/stat");
  std::string key;
  long long boot = -1;
  while (system >> key && key != "btime") {
    // skip to the boot time
  }
  system >> boot;
  const long ticks = sysconf(_SC_CLK_TCK);
  if (boot < 0 || ticks <= 0) return -1;
  return static_cast<double>(boot) + std::stod(field) / static_cast<double>(ticks);
}

ProcessSample SampleProcess() {
  ProcessSample s;
  const long page = sysconf(_SC_PAGESIZE);
  if (FILE* statm = std::fopen("/proc/self/statm", "r")) {
    long long size = 0, resident = 0;
    if (std::fscanf(statm, "%lld %lld", &size, &resident) == 2 && page > 0) {
      s.virtual_bytes = size * page;
      s.resident_bytes = resident * page;
    }
    std::fclose(statm);
  }
  s.open_fds = CountOpenFds();
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    s.max_fds = limit.rlim_cur == RLIM_INFINITY ? -1 : static_cast<int64_t>(limit.rlim_cur);
  }
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) == 0) {
    s.cpu_seconds = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                    static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6;
  }
  const struct mallinfo2 heap = mallinfo2();
  s.heap_in_use_bytes = static_cast<int64_t>(heap.uordblks + heap.hblkhd);
  s.heap_free_bytes = static_cast<int64_t>(heap.fordblks);
  return s;
}

ProcessMetrics::ProcessMetrics(prometheus::Registry& registry) {
  auto gauge = [&](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add({});
  };
  resident_ = gauge("process_resident_memory_bytes", "Resident memory size in bytes");
  virtual_ = gauge("process_virtual_memory_bytes", "Virtual memory size in bytes");
  open_fds_ = gauge("process_open_fds", "Number of open file descriptors");
  max_fds_ = gauge("process_max_fds", "Maximum number of open file descriptors");
  start_time_ = gauge("process_start_time_seconds",
                      "Start time of the process since the Unix "
                      "epoch in seconds");
  heap_in_use_ = gauge("seqboat_heap_in_use_bytes",
                       "C heap bytes allocated and not freed (malloc's accounting)");
  heap_free_ = gauge("seqboat_heap_free_bytes",
                     "C heap bytes free but held by malloc (resident or not): fragmentation");
  cpu_ = &prometheus::BuildCounter()
              .Name("process_cpu_seconds_total")
              .Help("Total user and system CPU time spent in seconds")
              .Register(registry)
              .Add({});
  const double start = ProcessStartTimeSeconds();  // fixed for the process's life: read once
  if (start >= 0) start_time_->Set(start);
  Update();
}

void ProcessMetrics::Update() {
  const ProcessSample s = SampleProcess();
  absl::MutexLock lock(&mu_);
  auto set = [](prometheus::Gauge* gauge, double value) {
    if (value >= 0) gauge->Set(value);
  };
  set(resident_, static_cast<double>(s.resident_bytes));
  set(virtual_, static_cast<double>(s.virtual_bytes));
  set(open_fds_, static_cast<double>(s.open_fds));
  set(max_fds_, static_cast<double>(s.max_fds));
  set(heap_in_use_, static_cast<double>(s.heap_in_use_bytes));
  set(heap_free_, static_cast<double>(s.heap_free_bytes));
  if (s.cpu_seconds > cpu_seen_) {
    cpu_->Increment(s.cpu_seconds - cpu_seen_);
    cpu_seen_ = s.cpu_seconds;
  }
}

}  // namespace seqboat::server
