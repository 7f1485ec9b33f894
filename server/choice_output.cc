// ChoiceOutput: detokenizer, stop filter and the unsent buffer of one choice.
#include "server/choice_output.h"

#include <utility>

#include "runtime/util/utf8.h"

namespace seqboat::server {

ChoiceOutput::ChoiceOutput(const Tokenizer& tokenizer, Options options)
    : options_(options), detokenizer_(tokenizer), stop_filter_(std::move(options.stop_sequences)) {}

int64_t ChoiceOutput::WireBytes(const GeneratedToken& token) const {
  int64_t bytes = 4;  // the id
  // A TokenLogprobs: id, logprob and per alternative id, logprob and a short text.
  if (options_.logprobs) bytes += 12 + 24 * static_cast<int64_t>(token.top.size());
  if (options_.activations) bytes += 4 + 2 * static_cast<int64_t>(token.activations.size());
  return bytes;
}

void ChoiceOutput::MoveReleased() {
  std::string text = stop_filter_.TakeText();
  unsent_bytes_ += static_cast<int64_t>(text.size());
  unsent_.text += text;
  for (int64_t index : stop_filter_.TakeTokens()) {
    if (index < 0) continue;  // the detokenizer's tail
    // Released in order; a token skipped over straddled a stop sequence and is dropped.
    while (held_first_ < index && !held_.empty()) {
      held_.pop_front();
      ++held_first_;
    }
    if (held_.empty()) continue;
    unsent_bytes_ += WireBytes(held_.front().first);
    unsent_.tokens.push_back(std::move(held_.front().first));
    unsent_.text_offsets.push_back(held_.front().second);
    held_.pop_front();
    ++held_first_;
  }
}

bool ChoiceOutput::Append(const GeneratedToken& token) {
  const std::string text = detokenizer_.Push(token.token);
  held_.emplace_back(token, text_chars_);
  text_chars_ += CountCodePoints(text);
  const int64_t index = held_first_ + static_cast<int64_t>(held_.size()) - 1;
  const bool stopped = stop_filter_.Append(index, text);
  MoveReleased();
  if (stopped && options_.include_stop_sequence) {
    unsent_.text += stop_filter_.matched_sequence();
    unsent_bytes_ += static_cast<int64_t>(stop_filter_.matched_sequence().size());
  }
  return !stopped;
}

void ChoiceOutput::Finish(FinishReason reason) {
  if (reason != FinishReason::kStop) {
    const std::string tail = detokenizer_.Flush();
    if (!tail.empty()) stop_filter_.Append(-1, tail);
    stop_filter_.Flush();
  }
  MoveReleased();
  held_.clear();
}

ChoiceOutput::Chunk ChoiceOutput::Take() {
  unsent_bytes_ = 0;
  return std::exchange(unsent_, {});
}

void ChoiceOutput::Drop() {
  held_.clear();
  unsent_ = {};
  unsent_bytes_ = 0;
}

}  // namespace seqboat::server
