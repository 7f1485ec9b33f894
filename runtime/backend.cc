// Helpers shared by every Backend implementation.
#include "runtime/backend.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace seqboat {

namespace {
constexpr int32_t kPaddingId = 1;  // fairseq's <pad>: never model input
}  // namespace

absl::Status CheckSlotId(SlotId slot, int num_slots, absl::string_view what) {
  if (slot < 0 || slot >= num_slots) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " slot ", slot, " out of range; this backend has ", num_slots, " slots"));
  }
  return absl::OkStatus();
}

absl::Status ValidateForward(absl::Span<const SequenceChunk> batch, const ForwardOutputs& out,
                             int num_slots, int vocab_size, int layers) {
  absl::flat_hash_set<SlotId> seen;
  for (size_t c = 0; c < batch.size(); ++c) {
    const SequenceChunk& chunk = batch[c];
    absl::Status slot_ok = CheckSlotId(chunk.slot, num_slots, absl::StrCat("Forward: chunk ", c));
    if (!slot_ok.ok()) return slot_ok;
    if (!seen.insert(chunk.slot).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("Forward: slot ", chunk.slot, " appears twice in one batch"));
    }
    if (chunk.tokens.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Forward: chunk ", c, " (slot ", chunk.slot, ") has no tokens"));
    }
    for (size_t i = 0; i < chunk.tokens.size(); ++i) {
      const int32_t token = chunk.tokens[i];
      if (token < 0 || token >= vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("Forward: chunk ", c, " token ", i,
                                                       " is id ", token, "; expected 0..",
                                                       vocab_size - 1));
      }
      if (token == kPaddingId) {
        return absl::InvalidArgumentError(
            absl::StrCat("Forward: chunk ", c, " token ", i,
                         " is the padding id 1, which is never model input"));
      }
    }
  }
  const int64_t rows = LogitRows(batch), tokens = TotalTokens(batch);
  if (tokens > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Forward: ", tokens, " tokens in one call; at most 2^30"));
  }
  if (static_cast<int64_t>(out.logits.size()) != rows * vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("Forward: logits buffer holds ",
                                                   out.logits.size(), " floats; the batch needs ",
                                                   rows, " x ", vocab_size));
  }
  const int64_t decisions = tokens * layers;
  if (!out.activations.empty() && static_cast<int64_t>(out.activations.size()) != decisions) {
    return absl::InvalidArgumentError(absl::StrCat("Forward: activations buffer holds ",
                                                   out.activations.size(), "; expected ", tokens,
                                                   " x ", layers));
  }
  if (!out.confidences.empty() && static_cast<int64_t>(out.confidences.size()) != decisions) {
    return absl::InvalidArgumentError(absl::StrCat("Forward: confidences buffer holds ",
                                                   out.confidences.size(), "; expected ", tokens,
                                                   " x ", layers));
  }
  return absl::OkStatus();
}

int64_t LogitRows(absl::Span<const SequenceChunk> batch) {
  int64_t rows = 0;
  for (const SequenceChunk& chunk : batch) rows += chunk.all_logits ? chunk.tokens.size() : 1;
  return rows;
}

int64_t TotalTokens(absl::Span<const SequenceChunk> batch) {
  int64_t tokens = 0;
  for (const SequenceChunk& chunk : batch) tokens += chunk.tokens.size();
  return tokens;
}

}  // namespace seqboat
