// Helpers shared by every Backend implementation.
#include "runtime/backend.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "runtime/model/vocab.h"

namespace seqboat {

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
    if (std::optional<BadTokenId> bad = FindBadTokenId(chunk.tokens, vocab_size)) {
      return absl::InvalidArgumentError(absl::StrCat("Forward: chunk ", c, " token ", bad->index, ": ", bad->problem));
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
  const int64_t flags = tokens * layers;  // one per token and layer
  if (!out.activations.empty() && static_cast<int64_t>(out.activations.size()) != flags) {
    return absl::InvalidArgumentError(absl::StrCat("Forward: activations buffer holds ",
                                                   out.activations.size(), "; expected ", tokens,
                                                   " x ", layers));
  }
  if (!out.confidences.empty() && static_cast<int64_t>(out.confidences.size()) != flags) {
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
