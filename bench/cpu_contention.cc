// CPU contention from /proc/stat and getrusage.
#include "bench/cpu_contention.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

namespace seqboat::bench {

CpuContention::CpuContention() : start_(Take()) {}

CpuContention::Sample CpuContention::Take() {
  Sample sample;
  std::ifstream stat("/proc/stat");
  std::string line;
  if (std::getline(stat, line) && line.rfind("cpu ", 0) == 0) {
    // cpu user nice system idle iowait irq softirq steal (guest time is inside user/nice)
    std::istringstream fields(line.substr(4));
    double ticks[8] = {};
    for (double& t : ticks) fields >> t;
    const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
    for (double t : ticks) sample.total_s += t / hz;
    sample.idle_s = (ticks[3] + ticks[4]) / hz;
  }
  rusage usage;
  if (getrusage(RUSAGE_SELF, &usage) == 0) {
    sample.self_s = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec * 1e-6 + usage.ru_stime.tv_sec +
                    usage.ru_stime.tv_usec * 1e-6;
  }
  return sample;
}

double CpuContention::OthersShare() const {
  const Sample now = Take();
  const double total = now.total_s - start_.total_s;
  if (total <= 0.0) return 0.0;
  const double others = total - (now.idle_s - start_.idle_s) - (now.self_s - start_.self_s);
  return std::clamp(others / total, 0.0, 1.0);
}

double LoadAverage1m() {
  std::ifstream loadavg("/proc/loadavg");
  double load = -1.0;
  if (!(loadavg >> load)) return -1.0;
  return load;
}

}  // namespace seqboat::bench
