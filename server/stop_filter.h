// Stop-sequence matching over a stream of token texts, with holdback: text that could
// still become the start of a stop sequence is not released until it cannot.
//
// Invariant: released text never contains the start of a match. Every suffix of the held
// text that is a proper prefix of some stop sequence is held, so a match found later always
// starts inside the held text.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace seqboat::server {

class StopFilter {
 public:
  explicit StopFilter(std::vector<std::string> stop_sequences);

  // Appends the text a token completed (whole UTF-8 characters). Returns true when a stop
  // sequence now matches: the text from the match on is dropped, and nothing more may be
  // appended.
  bool Append(int64_t token_index, absl::string_view text);
  // The stream ended without a match: release everything held.
  void Flush();

  // Text released since the last call, and the indices of tokens whose whole text has been
  // released (a token that straddles a match's start is never released).
  std::string TakeText();
  std::vector<int64_t> TakeTokens();

  bool stopped() const { return matched_ >= 0; }
  const std::string& matched_sequence() const;

 private:
  void Release(size_t bytes);  // moves `bytes` from held_ to the released text

  const std::vector<std::string> stops_;
  std::string held_;
  std::string released_;
  int64_t released_total_ = 0;  // bytes released over the whole stream
  int64_t appended_total_ = 0;  // bytes appended over the whole stream
  struct PendingToken {
    int64_t index;
    int64_t text_end;  // stream offset where the token's text ends
  };
  std::deque<PendingToken> pending_;
  std::vector<int64_t> ready_tokens_;
  int matched_ = -1;
};

}  // namespace seqboat::server
