// The immutable model configuration (MODEL.md notation) and its JSON form in model files.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace seqboat {

enum class AttentionKind { kSoftmax, kRelu2, kLaplace };
enum class PositionKind { kRotary, kSimple };
enum class NormKind { kLayerNorm, kScaleNorm, kRmsNorm };

const char* AttentionKindName(AttentionKind kind);
const char* PositionKindName(PositionKind kind);
const char* NormKindName(NormKind kind);

struct ModelConfig {
  int embed_dim = 0;          // D
  int z_dim = 0;              // Z (query/key width; even for rotary)
  int hidden_dim = 0;         // H (value / gate width)
  int n_dim = 0;              // N (EMA dimension per channel)
  int layers = 0;             // L
  int window = 0;             // w: FIFO entries per layer (fairseq's and the model file's
                              // chunk_size); <= 0 is SeqBoat-full
  int vocab_size = 0;         // V
  int truncation_length = 0;  // T; 0 = untruncated (both horizons equal)
  int max_positions = 0;      // P (simple relative bias table holds 2P-1)
  AttentionKind attention = AttentionKind::kSoftmax;
  PositionKind position = PositionKind::kRotary;
  NormKind norm = NormKind::kLayerNorm;
  bool normalize_before = true;
  bool final_norm_affine = true;
  bool normalize_embedding = false;
  bool scale_embedding = true;
  bool tied_embeddings = true;
  int ffn_dim = 0;  // F; 0 = no normalised FFN

  bool has_final_norm() const { return normalize_before; }
  bool has_ffn() const { return ffn_dim > 0; }
};

// Parses and validates the `config` JSON of a model file. Errors name the key.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text);
std::string ModelConfigToJson(const ModelConfig& config);

}  // namespace seqboat
