// Helpers shared by every Backend implementation.
#include "runtime/backend.h"

#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "runtime/model/vocab.h"

namespace seqboat {

absl::StatusOr<EmaHorizon> ParseEmaHorizon(absl::string_view name) {
  if (name == "exact") return EmaHorizon::kExact;
  if (name == "trained") return EmaHorizon::kTrained;
  return absl::InvalidArgumentError(
      absl::StrCat("EMA horizon '", name, "'; expected exact or trained"));
}

const char* EmaHorizonName(EmaHorizon horizon) {
  return horizon == EmaHorizon::kTrained ? "trained" : "exact";
}

absl::StatusOr<WeightDType> ParseWeightDType(absl::string_view name) {
  if (name == "as_stored") return WeightDType::kAsStored;
  if (name == "f32") return WeightDType::kF32;
  if (name == "f16") return WeightDType::kF16;
  if (name == "bf16") return WeightDType::kBF16;
  if (name == "int8") return WeightDType::kInt8;
  return absl::InvalidArgumentError(
      absl::StrCat("weight dtype '", name, "'; expected as_stored, f32, f16, bf16 or int8"));
}

const char* WeightDTypeName(WeightDType dtype) {
  switch (dtype) {
    case WeightDType::kAsStored: return "as_stored";
    case WeightDType::kF32: return "f32";
    case WeightDType::kF16: return "f16";
    case WeightDType::kBF16: return "bf16";
    case WeightDType::kInt8: return "int8";
  }
  return "unknown";
}

absl::StatusOr<SlotLayout> MakeSlotLayout(const ModelConfig& config,
                                          const BackendOptions& options) {
  if (options.num_slots < 1 || options.num_slots > kMaxSlots) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_slots is ", options.num_slots, "; expected 1..", kMaxSlots));
  }
  const int fifo_capacity = options.fifo_capacity;
  if (fifo_capacity < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("fifo_capacity is ", fifo_capacity, "; expected >= 0"));
  }
  if (config.window <= 0 && fifo_capacity == 0) {
    return absl::InvalidArgumentError(
        "this is a SeqBoat-full model (chunk_size <= 0: attention over every activated token); "
        "serving it needs an explicit FIFO bound (fifo_capacity > 0)");
  }
  if (config.window > 0 && fifo_capacity != 0 && fifo_capacity != config.window) {
    return absl::InvalidArgumentError(absl::StrCat("fifo_capacity ", fifo_capacity,
                                                   " differs from the model's chunk_size ",
                                                   config.window, "; leave it 0 for this model"));
  }
  SlotLayout layout;
  layout.fifo_capacity = config.window > 0 ? config.window : fifo_capacity;
  layout.truncation = options.ema_horizon == EmaHorizon::kTrained && config.truncation_length > 0
                          ? config.truncation_length
                          : 0;
  // relu2 and laplace divide by w (the parallel pass that trained the model; MODEL.md).
  layout.score_scale = config.attention == AttentionKind::kSoftmax
                           ? 1.0f / std::sqrt(static_cast<float>(config.z_dim))
                           : 1.0f / static_cast<float>(layout.fifo_capacity);
  return layout;
}

size_t StateBytesPerSlot(const ModelConfig& config, const SlotLayout& layout,
                         size_t kv_element_bytes, size_t layer_metadata_bytes) {
  const size_t D = config.embed_dim, N = config.n_dim, Z = config.z_dim, H = config.hidden_dim;
  const size_t w = layout.fifo_capacity, T = layout.truncation;
  const size_t per_layer = (D * N + T * D) * sizeof(float) + w * (Z + H) * kv_element_bytes +
                           w * sizeof(int64_t) + layer_metadata_bytes;
  return per_layer * static_cast<size_t>(config.layers);
}

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
      return absl::InvalidArgumentError(
          absl::StrCat("Forward: chunk ", c, " token ", bad->index, ": ", bad->problem));
    }
    if (!chunk.activation_bias.empty()) {
      if (static_cast<int64_t>(chunk.activation_bias.size()) != layers) {
        return absl::InvalidArgumentError(
            absl::StrCat("Forward: chunk ", c, " has ", chunk.activation_bias.size(),
                         " activation biases; expected none or one per layer (", layers, ")"));
      }
      for (size_t l = 0; l < chunk.activation_bias.size(); ++l) {
        if (!std::isfinite(chunk.activation_bias[l])) {
          return absl::InvalidArgumentError(
              absl::StrCat("Forward: chunk ", c, " activation bias of layer ", l, " is ",
                           chunk.activation_bias[l], "; must be finite"));
        }
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
