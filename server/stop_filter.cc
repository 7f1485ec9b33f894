#include "server/stop_filter.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace seqboat::server {
namespace {
constexpr int64_t kUnknownEnd = std::numeric_limits<int64_t>::max();
}  // namespace

StopFilter::StopFilter(std::vector<std::string> stop_sequences)
    : stops_(std::move(stop_sequences)) {}

const std::string& StopFilter::matched_sequence() const {
  static const std::string kNone;
  return matched_ >= 0 ? stops_[matched_] : kNone;
}

void StopFilter::Release(size_t bytes) {
  released_.append(held_, 0, bytes);
  held_.erase(0, bytes);
  released_total_ += bytes;
  while (!pending_.empty() && pending_.front().text_end <= released_total_) {
    ready_tokens_.push_back(pending_.front().index);
    pending_.pop_front();
  }
}

bool StopFilter::Append(int64_t token_index, absl::string_view text) {
  if (stopped()) return true;
  held_.append(text.data(), text.size());
  appended_total_ += text.size();
  // A token whose bytes end inside a character has no text yet: it completes with the text
  // of the token that completes the character.
  if (!text.empty()) {
    for (auto it = pending_.rbegin(); it != pending_.rend() && it->text_end == kUnknownEnd; ++it) {
      it->text_end = appended_total_;
    }
  }
  pending_.push_back({token_index, text.empty() ? kUnknownEnd : appended_total_});

  // The earliest match wins; among matches at the same place, the first listed.
  size_t match_at = std::string::npos;
  for (size_t i = 0; i < stops_.size(); ++i) {
    const size_t at = held_.find(stops_[i]);
    if (at != std::string::npos && (match_at == std::string::npos || at < match_at)) {
      match_at = at;
      matched_ = static_cast<int>(i);
    }
  }
  if (match_at != std::string::npos) {
    Release(match_at);
    held_.clear();
    pending_.clear();  // tokens at or after the match start are never released
    return true;
  }
  // Hold the longest suffix that is a proper prefix of a stop sequence.
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    const size_t longest = std::min(stop.size() - 1, held_.size());
    for (size_t k = longest; k > hold; --k) {
      if (absl::string_view(held_).substr(held_.size() - k) ==
          absl::string_view(stop).substr(0, k)) {
        hold = k;
        break;
      }
    }
  }
  Release(held_.size() - hold);
  return false;
}

void StopFilter::Flush() {
  if (stopped()) return;
  Release(held_.size());
  for (const PendingToken& token : pending_) ready_tokens_.push_back(token.index);
  pending_.clear();
}

std::string StopFilter::TakeText() { return std::exchange(released_, {}); }

std::vector<int64_t> StopFilter::TakeTokens() { return std::exchange(ready_tokens_, {}); }

}  // namespace seqboat::server
