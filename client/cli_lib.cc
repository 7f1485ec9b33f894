#include "client/cli_lib.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace seqboat::cli {

LatencySummary Summarize(std::vector<double> samples) {
  LatencySummary s;
  s.count = static_cast<int64_t>(samples.size());
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  double total = 0;
  for (double x : samples) total += x;
  s.mean = total / samples.size();
  auto rank = [&](double p) {
    const size_t index = static_cast<size_t>(std::ceil(p / 100.0 * samples.size()));
    return samples[std::clamp<size_t>(index, 1, samples.size()) - 1];
  };
  s.p50 = rank(50);
  s.p90 = rank(90);
  s.p99 = rank(99);
  s.max = samples.back();
  return s;
}

absl::StatusOr<std::vector<int32_t>> ParseIdList(absl::string_view text, absl::string_view flag) {
  std::vector<int32_t> ids;
  if (absl::StripAsciiWhitespace(text).empty()) return ids;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int32_t id;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", part, "' is not an integer; expected ids like 2,17,9"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<std::vector<float>> ParseNumberList(absl::string_view text, absl::string_view flag) {
  std::vector<float> values;
  if (absl::StripAsciiWhitespace(text).empty()) return values;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    float value;
    if (!absl::SimpleAtof(absl::StripAsciiWhitespace(part), &value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag, ": '", part, "' is not a number; expected numbers like 1.5,0,-2"));
    }
    values.push_back(value);
  }
  return values;
}

absl::StatusOr<std::vector<std::string>> ParseStringList(absl::string_view text,
                                                         absl::string_view flag) {
  std::vector<std::string> out;
  if (text.empty()) return out;
  std::string current;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\\') {
      if (i + 1 >= text.size() || (text[i + 1] != ',' && text[i + 1] != '\\')) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", flag, ": a backslash must escape ',' or '\\' (at byte ", i, ")"));
      }
      current += text[++i];
    } else if (c == ',') {
      out.push_back(std::move(current));
      current.clear();
    } else {
      current += c;
    }
  }
  out.push_back(std::move(current));
  return out;
}

}  // namespace seqboat::cli
