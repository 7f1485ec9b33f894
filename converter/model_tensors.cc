// State dict -> the model file's tensor list, validated against the config.
#include "converter/model_tensors.h"

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/model/model.h"

namespace seqboat::convert {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string ConfigSummary(const ModelConfig& c) {
  return absl::StrCat(
      "D=", c.embed_dim, " Z=", c.z_dim, " H=", c.hidden_dim, " N=", c.n_dim, " L=", c.layers,
      " F=", c.ffn_dim, " V=", c.vocab_size, " P=", c.max_positions, ", ", NormKindName(c.norm),
      ", ", PositionKindName(c.position), c.normalize_before ? ", pre-norm" : ", post-norm",
      c.tied_embeddings ? ", tied" : ", untied");
}

}  // namespace

const TensorInfo* TiedOutputProjection(const FairseqCheckpoint& checkpoint,
                                       const ModelConfig& config) {
  if (!config.tied_embeddings) return nullptr;
  const std::string name = absl::StrCat(kStateDictPrefix, "output_projection.weight");
  for (const StateDictEntry& entry : checkpoint.model) {
    if (entry.name == name && entry.value->kind == Kind::kTensor) return entry.value->tensor.get();
  }
  return nullptr;
}

absl::StatusOr<std::vector<SelectedTensor>> SelectModelTensors(const std::string& label,
                                                               const FairseqCheckpoint& checkpoint,
                                                               const ModelConfig& config,
                                                               const std::string& dict_path) {
  auto error = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": ", parts...));
  };
  const std::string& origin = checkpoint.args.origin();
  // Every layer has more than one tensor: a layer count beyond the state dict's size is a
  // mismatch, and checking it first keeps a hostile count from sizing the expected list.
  if (static_cast<size_t>(config.layers) > checkpoint.model.size()) {
    return error("config/shape mismatch: ", origin, ".decoder_layers is ", config.layers,
                 " but the state dict holds only ", checkpoint.model.size(), " entries");
  }
  absl::flat_hash_map<std::string, const StateDictEntry*> by_name;
  for (const StateDictEntry& entry : checkpoint.model) {
    if (!by_name.emplace(entry.name, &entry).second) {
      return error("state dict holds \"", entry.name, "\" twice");
    }
  }

  // The vocabulary first: a wrong dict.txt is the likeliest mismatch, so say so plainly.
  const std::string embed_name = absl::StrCat(kStateDictPrefix, "embed_tokens.weight");
  auto embed = by_name.find(embed_name);
  if (embed != by_name.end() && embed->second->value->kind == Kind::kTensor) {
    const TensorInfo& t = *embed->second->value->tensor;
    if (t.shape.size() == 2 && t.shape[0] != config.vocab_size) {
      return error("config/shape mismatch: ", embed_name, " has ", t.shape[0], " rows but ",
                   dict_path, " gives V = ", config.vocab_size, " (", config.vocab_size - 4,
                   " symbols + 4 specials); is it the dict.txt this model was trained with?");
    }
  }

  std::vector<SelectedTensor> selected;
  absl::flat_hash_set<std::string> used;
  for (const ExpectedTensor& expected : ExpectedTensors(config)) {
    const std::string source = absl::StrCat(kStateDictPrefix, expected.name);
    auto it = by_name.find(source);
    if (it == by_name.end()) {
      return error("config/shape mismatch: the state dict lacks \"", source, "\" (",
                   ShapeString(expected.shape), "), which ", origin, " (", ConfigSummary(config),
                   ") require");
    }
    const Value& value = *it->second->value;
    if (value.kind != Kind::kTensor) {
      return error("state dict entry \"", source, "\" is ", Describe(value), ", expected a tensor");
    }
    const TensorInfo& tensor = *value.tensor;
    if (tensor.shape != expected.shape) {
      return error("config/shape mismatch: tensor \"", source, "\" has shape ",
                   ShapeString(tensor.shape), " but ", origin, " (", ConfigSummary(config),
                   ") require ", ShapeString(expected.shape));
    }
    const TorchDType dtype = tensor.storage_info().dtype;
    if (dtype != TorchDType::kFloat32 && dtype != TorchDType::kFloat16 &&
        dtype != TorchDType::kBFloat16) {
      return error("tensor \"", source, "\" has dtype ", TorchDTypeName(dtype),
                   "; expected float32, float16 or bfloat16");
    }
    selected.push_back({expected.name, source, &tensor});
    used.insert(source);
  }

  for (const StateDictEntry& entry : checkpoint.model) {
    if (used.contains(entry.name)) continue;
    if (entry.name == absl::StrCat(kStateDictPrefix, "version")) continue;  // a buffer
    if (config.tied_embeddings &&
        entry.name == absl::StrCat(kStateDictPrefix, "output_projection.weight")) {
      continue;  // checked against embed_tokens.weight by the caller
    }
    std::string why = "the config does not account for it";
    if (absl::StrContains(entry.name, "output_projection")) {
      why = absl::StrCat("the embeddings are tied (", origin, ".share_decoder_input_output_embed)");
    } else if (absl::StrContains(entry.name, "nffn")) {
      why = absl::StrCat(origin, ".decoder_ffn_embed_dim is ", config.ffn_dim);
    } else if (absl::StrContains(entry.name, "rel_pos_bias")) {
      why = absl::StrCat(origin, ".rel_pos_bias is '", PositionKindName(config.position), "'");
    } else if (absl::StrContains(entry.name, "final_norm")) {
      why = absl::StrCat(origin,
                         ".normalize_before / no_affine_final_norm give no affine "
                         "final norm");
    } else if (absl::StrContains(entry.name, "embed_norm")) {
      why = absl::StrCat(origin, ".normalize_embedding is False");
    }
    return error("config/shape mismatch: unexpected state-dict entry \"", entry.name, "\" (",
                 Describe(*entry.value), "): ", why, " (", ConfigSummary(config), ")");
  }
  return selected;
}

}  // namespace seqboat::convert
