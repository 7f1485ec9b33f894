// How much of the machine other processes (and the hypervisor) took while we measured, so a
// reader can tell a slow row from a contended one on a shared machine.
#pragma once

#include <cstdint>

namespace seqboat::bench {

// Samples /proc/stat (all CPUs) and this process's CPU time at construction; OthersShare()
// is the share of all CPUs' time since then that was busy but not spent by this process.
// Resolution is the kernel's clock tick (10 ms): meaningful for intervals of ~0.5 s and more.
class CpuContention {
 public:
  CpuContention();
  // In [0, 1]; 0 when /proc/stat cannot be read.
  double OthersShare() const;

 private:
  struct Sample {
    double total_s = 0.0;  // all CPUs' time, seconds
    double idle_s = 0.0;   // idle + iowait
    double self_s = 0.0;   // this process's user + system time
  };
  static Sample Take();

  Sample start_;
};

// The 1-minute load average from /proc/loadavg (-1 when unreadable).
double LoadAverage1m();

}  // namespace seqboat::bench
