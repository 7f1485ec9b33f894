// Pieces of seqboat-cli that are worth testing on their own: latency statistics and the
// parsing of list flags.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace seqboat::cli {

struct LatencySummary {
  int64_t count = 0;
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
};

// Nearest-rank percentiles (the smallest sample with at least p% of samples <= it).
LatencySummary Summarize(std::vector<double> samples);

// "2,17,9" -> {2, 17, 9}; `flag` names the flag in errors.
absl::StatusOr<std::vector<int32_t>> ParseIdList(absl::string_view text, absl::string_view flag);
// "1.5,0,-2" -> numbers (empty text: none); an error names `flag`.
absl::StatusOr<std::vector<float>> ParseNumberList(absl::string_view text, absl::string_view flag);

// Comma-separated strings where "\," is a literal comma and "\\" a backslash.
absl::StatusOr<std::vector<std::string>> ParseStringList(absl::string_view text,
                                                         absl::string_view flag);

}  // namespace seqboat::cli
