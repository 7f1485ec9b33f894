// ModelConfig <-> JSON, with validation of every field.
#include "runtime/model/config.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/util/status_macros.h"

namespace seqboat {
namespace {

using Json = nlohmann::json;

absl::Status ConfigError(absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("model config \"", key, "\": ", what));
}

absl::StatusOr<int> GetInt(const Json& json, const char* key, int min_value) {
  auto it = json.find(key);
  if (it == json.end()) return ConfigError(key, "missing");
  if (!it->is_number_integer()) return ConfigError(key, "expected an integer");
  int64_t value = it->get<int64_t>();
  if (value < min_value || value > (1 << 30)) {
    return ConfigError(key,
                       absl::StrCat("value ", value, " out of range; expected >= ", min_value));
  }
  return static_cast<int>(value);
}

absl::StatusOr<bool> GetBool(const Json& json, const char* key) {
  auto it = json.find(key);
  if (it == json.end()) return ConfigError(key, "missing");
  if (!it->is_boolean()) return ConfigError(key, "expected true or false");
  return it->get<bool>();
}

absl::StatusOr<std::string> GetString(const Json& json, const char* key) {
  auto it = json.find(key);
  if (it == json.end()) return ConfigError(key, "missing");
  if (!it->is_string()) return ConfigError(key, "expected a string");
  return it->get<std::string>();
}

}  // namespace

const char* AttentionKindName(AttentionKind kind) {
  switch (kind) {
    case AttentionKind::kSoftmax: return "softmax";
    case AttentionKind::kRelu2: return "relu2";
    case AttentionKind::kLaplace: return "laplace";
  }
  return "?";
}

const char* PositionKindName(PositionKind kind) {
  return kind == PositionKind::kRotary ? "rotary" : "simple";
}

const char* NormKindName(NormKind kind) {
  switch (kind) {
    case NormKind::kLayerNorm: return "layernorm";
    case NormKind::kScaleNorm: return "scalenorm";
    case NormKind::kRmsNorm: return "rmsnorm";
  }
  return "?";
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text) {
  Json json = Json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::InvalidArgumentError("model config is not a JSON object");
  }
  ModelConfig c;
  ASSIGN_OR_RETURN(c.embed_dim, GetInt(json, "embed_dim", 1));
  ASSIGN_OR_RETURN(c.z_dim, GetInt(json, "z_dim", 1));
  ASSIGN_OR_RETURN(c.hidden_dim, GetInt(json, "hidden_dim", 1));
  ASSIGN_OR_RETURN(c.n_dim, GetInt(json, "n_dim", 1));
  ASSIGN_OR_RETURN(c.layers, GetInt(json, "layers", 1));
  ASSIGN_OR_RETURN(c.window, GetInt(json, "chunk_size", -(1 << 30)));
  ASSIGN_OR_RETURN(c.vocab_size, GetInt(json, "vocab_size", 5));
  ASSIGN_OR_RETURN(c.truncation_length, GetInt(json, "truncation_length", 0));
  ASSIGN_OR_RETURN(c.max_positions, GetInt(json, "max_positions", 1));
  ASSIGN_OR_RETURN(c.ffn_dim, GetInt(json, "ffn_dim", 0));
  ASSIGN_OR_RETURN(c.normalize_before, GetBool(json, "normalize_before"));
  ASSIGN_OR_RETURN(c.final_norm_affine, GetBool(json, "final_norm_affine"));
  ASSIGN_OR_RETURN(c.normalize_embedding, GetBool(json, "normalize_embedding"));
  ASSIGN_OR_RETURN(c.scale_embedding, GetBool(json, "scale_embedding"));
  ASSIGN_OR_RETURN(c.tied_embeddings, GetBool(json, "tied_embeddings"));

  ASSIGN_OR_RETURN(std::string attention, GetString(json, "attention_activation"));
  if (attention == "softmax") {
    c.attention = AttentionKind::kSoftmax;
  } else if (attention == "relu2") {
    c.attention = AttentionKind::kRelu2;
  } else if (attention == "laplace") {
    c.attention = AttentionKind::kLaplace;
  } else {
    return ConfigError(
        "attention_activation",
        absl::StrCat("\"", attention, "\" is not supported; expected softmax, relu2 or laplace"));
  }
  ASSIGN_OR_RETURN(std::string position, GetString(json, "rel_pos_bias"));
  if (position == "rotary") {
    c.position = PositionKind::kRotary;
  } else if (position == "simple") {
    c.position = PositionKind::kSimple;
  } else {
    return ConfigError(
        "rel_pos_bias",
        absl::StrCat("\"", position, "\" is not supported; expected rotary or simple"));
  }
  ASSIGN_OR_RETURN(std::string norm, GetString(json, "norm_type"));
  if (norm == "layernorm") {
    c.norm = NormKind::kLayerNorm;
  } else if (norm == "scalenorm") {
    c.norm = NormKind::kScaleNorm;
  } else if (norm == "rmsnorm") {
    c.norm = NormKind::kRmsNorm;
  } else {
    return ConfigError(
        "norm_type",
        absl::StrCat("\"", norm, "\" is not supported; expected layernorm, scalenorm or rmsnorm"));
  }
  ASSIGN_OR_RETURN(std::string activation, GetString(json, "activation"));
  if (activation != "silu") {
    return ConfigError("activation",
                       absl::StrCat("\"", activation, "\" is not supported; expected silu"));
  }
  if (c.position == PositionKind::kRotary && c.z_dim % 2 != 0) {
    return ConfigError("z_dim",
                       absl::StrCat(c.z_dim, " is odd; rotary positions need an even z_dim"));
  }
  return c;
}

std::string ModelConfigToJson(const ModelConfig& c) {
  nlohmann::ordered_json json = {
      {"embed_dim", c.embed_dim},
      {"z_dim", c.z_dim},
      {"hidden_dim", c.hidden_dim},
      {"n_dim", c.n_dim},
      {"layers", c.layers},
      {"chunk_size", c.window},
      {"vocab_size", c.vocab_size},
      {"truncation_length", c.truncation_length},
      {"rel_pos_bias", PositionKindName(c.position)},
      {"max_positions", c.max_positions},
      {"attention_activation", AttentionKindName(c.attention)},
      {"activation", "silu"},
      {"norm_type", NormKindName(c.norm)},
      {"normalize_before", c.normalize_before},
      {"final_norm_affine", c.final_norm_affine},
      {"normalize_embedding", c.normalize_embedding},
      {"scale_embedding", c.scale_embedding},
      {"tied_embeddings", c.tied_embeddings},
      {"ffn_dim", c.ffn_dim},
  };
  return json.dump();
}

}  // namespace seqboat
