// fairseq args -> ModelConfig, with the SeqBoat architectures' defaults and the rejections.
#include "converter/fairseq_config.h"

#include <map>
#include <optional>
#include <variant>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "runtime/util/status_macros.h"

namespace seqboat::convert {
namespace {

struct NoneDefault {};
using Default = std::variant<NoneDefault, int64_t, bool, std::string>;
using Defaults = std::map<std::string, Default, std::less<>>;

// base_lm_architecture of fairseq/models/seqboat_lm.py (the args that matter here).
// decoder_ffn_embed_dim and decoder_input_dim default to other args and are resolved later.
Defaults BaseDefaults() {
  return {
      {"decoder_embed_dim", int64_t{512}},
      {"decoder_hidden_dim", int64_t{1664}},
      {"decoder_z_dim", int64_t{128}},
      {"decoder_n_dim", int64_t{16}},
      {"decoder_layers", int64_t{6}},
      {"decoder_chunk_size", int64_t{-1}},
      {"adaptive_softmax_cutoff", NoneDefault{}},
      {"adaptive_input", false},
      {"rel_pos_bias", std::string("simple")},
      {"normalization_type", std::string("layernorm")},
      {"normalize_before", false},
      {"normalize_embedding", false},
      {"no_scale_embedding", false},
      {"no_affine_final_norm", false},
      {"share_decoder_input_output_embed", false},
      {"activation_fn", std::string("silu")},
      {"attention_activation_fn", std::string("softmax")},
      {"truncation_length", int64_t{2048}},
      {"local_pos", false},
  };
}

// The registered slag_lm_* architectures' overrides of the base defaults.
absl::StatusOr<Defaults> ArchDefaults(const std::string& arch) {
  Defaults defaults = BaseDefaults();
  auto set = [&](std::initializer_list<std::pair<const char*, Default>> values) {
    for (const auto& [name, value] : values) defaults[name] = value;
  };
  auto big = [&] {
    set({{"decoder_layers", int64_t{16}},
         {"decoder_embed_dim", int64_t{1024}},
         {"decoder_hidden_dim", int64_t{2048}},
         {"decoder_ffn_embed_dim", int64_t{2048}},
         {"decoder_z_dim", int64_t{256}}});
  };
  // The official code registers slag_lm*; our reference generator writes seqboat_lm.
  if (arch.empty() || arch == "slag_lm" || arch == "seqboat_lm") return defaults;
  if (arch == "slag_lm_big") {
    big();
  } else if (arch == "slag_lm_wiki103" || arch == "slag_lm_adaptive_big") {
    big();
    set({{"decoder_layers", int64_t{26}},
         {"adaptive_input", true},
         {"adaptive_softmax_cutoff", std::string("20000,60000")}});
  } else if (arch == "slag_lm_adaptive_base") {
    set({{"decoder_layers", int64_t{16}},
         {"decoder_embed_dim", int64_t{768}},
         {"decoder_hidden_dim", int64_t{1536}},
         {"decoder_ffn_embed_dim", int64_t{1536}},
         {"decoder_z_dim", int64_t{128}},
         {"adaptive_input", true},
         {"adaptive_softmax_cutoff", std::string("20000,60000")}});
  } else if (arch == "slag_lm_enwik8_base" || arch == "slag_lm_enwik8_large") {
    set({{"decoder_layers", int64_t{arch == "slag_lm_enwik8_base" ? 12 : 20}},
         {"decoder_embed_dim", int64_t{512}},
         {"decoder_hidden_dim", int64_t{1024}},
         {"decoder_ffn_embed_dim", int64_t{1024}},
         {"decoder_z_dim", int64_t{128}},
         {"decoder_n_dim", int64_t{16}}});
  } else if (arch == "slag_lm_enwik8_base_v2") {
    set({{"decoder_layers", int64_t{14}},
         {"decoder_embed_dim", int64_t{616}},
         {"decoder_hidden_dim", int64_t{1232}},
         {"decoder_ffn_embed_dim", int64_t{1232}},
         {"decoder_z_dim", int64_t{128}},
         {"decoder_n_dim", int64_t{16}}});
  } else if (!absl::StartsWith(arch, "slag_lm") && !absl::StartsWith(arch, "seqboat_lm")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "arch is '", arch,
        "', not a SeqBoat language model (slag_lm*, seqboat_lm*); refusing to convert"));
  }
  // An unregistered variant: the base defaults, and every shape is checked anyway.
  return defaults;
}

std::string DefaultString(const Default& value) {
  if (std::holds_alternative<NoneDefault>(value)) return "None";
  if (const auto* i = std::get_if<int64_t>(&value)) return absl::StrCat(*i);
  if (const auto* b = std::get_if<bool>(&value)) return *b ? "True" : "False";
  return absl::StrCat("'", std::get<std::string>(value), "'");
}

// Typed access to args with defaults; every error names `origin.name`.
class ArgReader {
 public:
  ArgReader(const ArgFields& args, Defaults defaults, std::string arch,
            std::vector<std::string>* used)
      : args_(args), defaults_(std::move(defaults)), arch_(std::move(arch)), used_(used) {}

  void SetDefault(const std::string& name, Default value) { defaults_[name] = std::move(value); }
  bool Has(absl::string_view name) const { return args_.Find(name) != nullptr; }

  absl::Status Error(absl::string_view name, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(args_.origin(), ".", name, " ", what));
  }

  // The stored value, or the default as a value-like variant. nullopt: absent, no default.
  absl::StatusOr<Default> Get(absl::string_view name) {
    const Value* value = args_.Find(name);
    if (value == nullptr) {
      auto it = defaults_.find(name);
      if (it == defaults_.end()) return Error(name, "is missing and has no default");
      used_->push_back(absl::StrCat(name, " = ", DefaultString(it->second), " (",
                                    arch_.empty() ? "slag_lm" : arch_, " default)"));
      return it->second;
    }
    switch (value->kind) {
      case Kind::kNone: return Default(NoneDefault{});
      case Kind::kInt: return Default(value->int_value);
      case Kind::kBool: return Default(value->int_value != 0);
      case Kind::kString: return Default(value->text);
      case Kind::kObject:
        return Error(name, absl::StrCat("is the result of calling ", value->CallableName(),
                                        ", which the converter does not evaluate; the model "
                                        "needs a plain value here"));
      default: return Error(name, absl::StrCat("is ", Describe(*value), ", not a plain value"));
    }
  }

  absl::StatusOr<std::optional<int64_t>> OptionalInt(absl::string_view name) {
    ASSIGN_OR_RETURN(Default value, Get(name));
    if (std::holds_alternative<NoneDefault>(value)) return std::optional<int64_t>();
    if (const auto* i = std::get_if<int64_t>(&value)) return std::optional<int64_t>(*i);
    return Error(name, absl::StrCat("is ", DefaultString(value), ", expected an int"));
  }
  absl::StatusOr<int64_t> Int(absl::string_view name, int64_t min_value) {
    ASSIGN_OR_RETURN(std::optional<int64_t> value, OptionalInt(name));
    if (!value) return Error(name, "is None, expected an int");
    if (*value < min_value || *value > (int64_t{1} << 30)) {
      return Error(name,
                   absl::StrCat("is ", *value, ", out of range (expected >= ", min_value, ")"));
    }
    return *value;
  }
  absl::StatusOr<bool> Bool(absl::string_view name) {
    ASSIGN_OR_RETURN(Default value, Get(name));
    if (const auto* b = std::get_if<bool>(&value)) return *b;
    if (const auto* i = std::get_if<int64_t>(&value); i != nullptr && (*i == 0 || *i == 1)) {
      return *i == 1;
    }
    if (std::holds_alternative<NoneDefault>(value)) return false;  // getattr(..., False) style
    return Error(name, absl::StrCat("is ", DefaultString(value), ", expected True or False"));
  }
  absl::StatusOr<std::optional<std::string>> OptionalString(absl::string_view name) {
    ASSIGN_OR_RETURN(Default value, Get(name));
    if (std::holds_alternative<NoneDefault>(value)) return std::optional<std::string>();
    if (const auto* s = std::get_if<std::string>(&value)) return std::optional<std::string>(*s);
    return Error(name, absl::StrCat("is ", DefaultString(value), ", expected a string"));
  }
  absl::StatusOr<std::string> String(absl::string_view name) {
    ASSIGN_OR_RETURN(std::optional<std::string> value, OptionalString(name));
    if (!value) return Error(name, "is None, expected a string");
    return *value;
  }

 private:
  const ArgFields& args_;
  Defaults defaults_;
  std::string arch_;
  std::vector<std::string>* used_;
};

}  // namespace

absl::StatusOr<FairseqModelConfig> ModelConfigFromArgs(const ArgFields& args, const ArgFields& task,
                                                       int vocab_size) {
  FairseqModelConfig out;
  // args.arch (legacy Namespace) or cfg.model._name.
  for (const char* key : {"arch", "_name"}) {
    const Value* arch = args.Find(key);
    if (arch != nullptr && arch->kind == Kind::kString) {
      out.arch = arch->text;
      break;
    }
  }
  auto defaults = ArchDefaults(out.arch);
  if (!defaults.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(args.origin(), ".", defaults.status().message()));
  }
  ArgReader reader(args, *std::move(defaults), out.arch, &out.defaults);
  ModelConfig& c = out.config;

  // Features MODEL.md excludes: refused first, naming the arg.
  ASSIGN_OR_RETURN(bool adaptive_input, reader.Bool("adaptive_input"));
  if (adaptive_input) {
    return reader.Error("adaptive_input", "is True: adaptive input embeddings are not supported");
  }
  ASSIGN_OR_RETURN(auto cutoff, reader.OptionalString("adaptive_softmax_cutoff"));
  if (cutoff) {
    return reader.Error("adaptive_softmax_cutoff",
                        absl::StrCat("is '", *cutoff, "': adaptive softmax is not supported"));
  }

  ASSIGN_OR_RETURN(int64_t embed_dim, reader.Int("decoder_embed_dim", 1));
  c.embed_dim = static_cast<int>(embed_dim);
  reader.SetDefault("decoder_input_dim", embed_dim);
  ASSIGN_OR_RETURN(int64_t input_dim, reader.Int("decoder_input_dim", 1));
  if (input_dim != embed_dim) {
    return reader.Error("decoder_input_dim",
                        absl::StrCat("is ", input_dim, " but decoder_embed_dim is ", embed_dim,
                                     ": an input projection (project_in_dim) is not supported"));
  }
  ASSIGN_OR_RETURN(int64_t z_dim, reader.Int("decoder_z_dim", 1));
  ASSIGN_OR_RETURN(int64_t hidden_dim, reader.Int("decoder_hidden_dim", 1));
  ASSIGN_OR_RETURN(int64_t n_dim, reader.Int("decoder_n_dim", 1));
  ASSIGN_OR_RETURN(int64_t layers, reader.Int("decoder_layers", 1));
  ASSIGN_OR_RETURN(int64_t chunk_size, reader.Int("decoder_chunk_size", -(int64_t{1} << 30)));
  c.z_dim = static_cast<int>(z_dim);
  c.hidden_dim = static_cast<int>(hidden_dim);
  c.n_dim = static_cast<int>(n_dim);
  c.layers = static_cast<int>(layers);
  c.window = static_cast<int>(chunk_size);
  // fairseq builds the normalised FFN whenever decoder_ffn_embed_dim > 0, and its default
  // is decoder_hidden_dim: a checkpoint without the arg has FFN layers.
  if (!reader.Has("decoder_ffn_embed_dim")) {
    Defaults arch_defaults = *ArchDefaults(out.arch);
    auto it = arch_defaults.find("decoder_ffn_embed_dim");
    reader.SetDefault("decoder_ffn_embed_dim",
                      it != arch_defaults.end() ? it->second : Default(hidden_dim));
  }
  ASSIGN_OR_RETURN(int64_t ffn_dim, reader.Int("decoder_ffn_embed_dim", -(int64_t{1} << 30)));
  c.ffn_dim = ffn_dim > 0 ? static_cast<int>(ffn_dim) : 0;

  ASSIGN_OR_RETURN(std::optional<int64_t> truncation, reader.OptionalInt("truncation_length"));
  if (truncation && *truncation <= 0) {
    return reader.Error("truncation_length",
                        absl::StrCat("is ", *truncation, ", expected a positive int or None"));
  }
  if (truncation && *truncation > (int64_t{1} << 30)) {
    return reader.Error("truncation_length", absl::StrCat("is ", *truncation, ", too large"));
  }
  c.truncation_length = truncation ? static_cast<int>(*truncation) : 0;

  // max_target_positions: the model's arg, else (cfg) the task's, else fairseq's 1024.
  if (!reader.Has("max_target_positions")) {
    const Value* from_task = task.Find("max_target_positions");
    reader.SetDefault("max_target_positions", from_task != nullptr && from_task->kind == Kind::kInt
                                                  ? Default(from_task->int_value)
                                                  : Default(int64_t{1024}));
  }
  ASSIGN_OR_RETURN(std::optional<int64_t> max_positions,
                   reader.OptionalInt("max_target_positions"));
  c.max_positions = max_positions ? static_cast<int>(*max_positions) : 1024;
  if (c.max_positions < 1 || (max_positions && *max_positions > (int64_t{1} << 30))) {
    return reader.Error("max_target_positions",
                        absl::StrCat("is ", *max_positions, ", expected a positive int"));
  }

  ASSIGN_OR_RETURN(std::string position, reader.String("rel_pos_bias"));
  if (position == "rotary") {
    c.position = PositionKind::kRotary;
  } else if (position == "simple") {
    c.position = PositionKind::kSimple;
  } else if (position == "t5") {
    return reader.Error("rel_pos_bias", "is 't5': the T5 relative bias is not supported");
  } else {
    return reader.Error("rel_pos_bias",
                        absl::StrCat("is '", position, "', expected 'rotary' or 'simple'"));
  }
  if (c.position == PositionKind::kRotary && c.z_dim % 2 != 0) {
    return reader.Error("decoder_z_dim",
                        absl::StrCat("is ", c.z_dim, ", odd; rotary positions need it even"));
  }
  ASSIGN_OR_RETURN(bool local_pos, reader.Bool("local_pos"));
  if (local_pos && c.position == PositionKind::kSimple && c.window > 0) {
    return reader.Error("local_pos", "is True: the window-local simple bias is not supported");
  }

  ASSIGN_OR_RETURN(std::string attention, reader.String("attention_activation_fn"));
  if (attention == "softmax") {
    c.attention = AttentionKind::kSoftmax;
  } else if (attention == "relu2") {
    c.attention = AttentionKind::kRelu2;
  } else if (attention == "laplace") {
    c.attention = AttentionKind::kLaplace;
  } else {
    return reader.Error(
        "attention_activation_fn",
        absl::StrCat("is '", attention, "', expected 'softmax', 'relu2' or 'laplace'"));
  }
  ASSIGN_OR_RETURN(std::string activation, reader.String("activation_fn"));
  if (activation != "silu" && activation != "swish") {
    return reader.Error("activation_fn",
                        absl::StrCat("is '", activation, "': only silu is supported"));
  }
  ASSIGN_OR_RETURN(std::string norm, reader.String("normalization_type"));
  if (norm == "layernorm") {
    c.norm = NormKind::kLayerNorm;
  } else if (norm == "scalenorm") {
    c.norm = NormKind::kScaleNorm;
  } else if (norm == "rmsnorm") {
    c.norm = NormKind::kRmsNorm;
  } else {
    return reader.Error(
        "normalization_type",
        absl::StrCat("is '", norm, "', expected 'layernorm', 'scalenorm' or 'rmsnorm'"));
  }
  ASSIGN_OR_RETURN(c.normalize_before, reader.Bool("normalize_before"));
  ASSIGN_OR_RETURN(bool no_affine_final_norm, reader.Bool("no_affine_final_norm"));
  c.final_norm_affine = !no_affine_final_norm;
  ASSIGN_OR_RETURN(c.normalize_embedding, reader.Bool("normalize_embedding"));
  ASSIGN_OR_RETURN(bool no_scale_embedding, reader.Bool("no_scale_embedding"));
  c.scale_embedding = !no_scale_embedding;
  ASSIGN_OR_RETURN(c.tied_embeddings, reader.Bool("share_decoder_input_output_embed"));
  c.vocab_size = vocab_size;
  return out;
}

}  // namespace seqboat::convert
