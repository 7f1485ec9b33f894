// One choice's output on its way to a client, shared by the front-ends: the text its tokens
// make (never ending inside a UTF-8 character), the stop sequences (text that could still
// become one is held back; a matched one is never sent unless the request includes it), and
// what is released but not yet sent, with its size. Not thread-safe: the caller locks.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/engine/request.h"
#include "runtime/model/tokenizer.h"
#include "server/stop_filter.h"

namespace seqboat::server {

class ChoiceOutput {
 public:
  struct Options {
    std::vector<std::string> stop_sequences;
    bool include_stop_sequence = false;  // a matched stop sequence ends the text, included
    // For the size estimate only: the tokens carry logprobs / activations to send.
    bool logprobs = false;
    bool activations = false;
  };
  ChoiceOutput(const Tokenizer& tokenizer, Options options);

  // A generated token; false once a stop sequence matches (the request should stop).
  bool Append(const GeneratedToken& token);
  // The engine ended the choice: the held-back text is released (unless a stop matched).
  void Finish(FinishReason reason);

  struct Chunk {
    std::string text;
    std::vector<GeneratedToken> tokens;  // each token whose whole text is in this or earlier text
    // [tokens] where each token's text begins in the choice's text, in code points. A token
    // whose bytes end no character (a character's first bytes) begins where the next does.
    std::vector<int64_t> text_offsets;
  };
  // What is released and not yet taken; the size estimate drops to 0.
  Chunk Take();
  bool has_unsent() const { return !unsent_.text.empty() || !unsent_.tokens.empty(); }
  // About the serialized size of what Take would return.
  int64_t unsent_bytes() const { return unsent_bytes_; }
  // Forgets everything held or released (the stream is being ended).
  void Drop();
  const std::string& matched_stop() const { return stop_filter_.matched_sequence(); }

 private:
  void MoveReleased();
  int64_t WireBytes(const GeneratedToken& token) const;

  const Options options_;
  StreamingDetokenizer detokenizer_;
  StopFilter stop_filter_;
  // Not yet released, with its text offset; held_[0] is token number held_first_.
  std::deque<std::pair<GeneratedToken, int64_t>> held_;
  int64_t held_first_ = 0;
  int64_t text_chars_ = 0;  // code points the detokenizer has made so far
  Chunk unsent_;
  int64_t unsent_bytes_ = 0;
};

}  // namespace seqboat::server
