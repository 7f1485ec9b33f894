// Locating args/cfg and the state dict in a fairseq checkpoint's top-level dict.
#include "converter/fairseq_checkpoint.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace seqboat::convert {
namespace {

bool IsOmegaConfContainer(const Value* value) {
  return value->kind == Kind::kObject && value->callable != nullptr &&
         value->callable->kind == Kind::kGlobal &&
         absl::StartsWith(value->callable->text, "omegaconf") &&
         value->callable->name == "DictConfig";
}

// Why `value` cannot serve as `what`, for messages.
std::string WhyNot(const Value& value) {
  if (value.kind == Kind::kObject) {
    return absl::StrCat("the result of calling ", value.CallableName(),
                        ", which the converter does not evaluate (only plain values, "
                        "argparse.Namespace and OrderedDict are allowed here)");
  }
  return Describe(value);
}

}  // namespace

const Value* AsMapping(const Value* value) {
  if (value == nullptr) return nullptr;
  if (value->kind == Kind::kDict) return value;
  if (value->kind != Kind::kObject || value->callable == nullptr) return nullptr;
  const Value* state = value->state;
  // BUILD state may be (dict, slotstate).
  if (state != nullptr && state->kind == Kind::kTuple && !state->items.empty()) {
    state = state->items[0];
  }
  if (state == nullptr || state->kind != Kind::kDict) return nullptr;
  if (value->callable->IsGlobal("argparse", "Namespace")) return state;
  if (IsOmegaConfContainer(value)) {
    const Value* content = state->DictGet("_content");
    return content != nullptr && content->kind == Kind::kDict ? content : nullptr;
  }
  return nullptr;
}

const Value* UnwrapNode(const Value* value) {
  if (value != nullptr && value->kind == Kind::kObject && value->callable != nullptr &&
      value->callable->kind == Kind::kGlobal &&
      absl::StartsWith(value->callable->text, "omegaconf.nodes") && value->state != nullptr) {
    const Value* state = value->state;
    if (state->kind == Kind::kTuple && !state->items.empty()) state = state->items[0];
    if (const Value* inner = state->DictGet("_val")) return inner;
  }
  return value;
}

const Value* ArgFields::Find(absl::string_view name) const {
  if (mapping_ == nullptr) return nullptr;
  return UnwrapNode(mapping_->DictGet(name));
}

std::vector<std::pair<std::string, const Value*>> ArgFields::Fields() const {
  std::vector<std::pair<std::string, const Value*>> fields;
  if (mapping_ == nullptr) return fields;
  for (size_t i = 0; i + 1 < mapping_->items.size(); i += 2) {
    const Value* key = mapping_->items[i];
    if (key->kind == Kind::kString)
      fields.emplace_back(key->text, UnwrapNode(mapping_->items[i + 1]));
  }
  return fields;
}

absl::StatusOr<FairseqCheckpoint> ReadFairseqCheckpoint(const Value& root,
                                                        absl::string_view label) {
  auto error = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": ", parts...));
  };
  if (root.kind != Kind::kDict) {
    return error("the top-level object is ", WhyNot(root),
                 "; a fairseq checkpoint is a dict with \"args\"/\"cfg\" and \"model\"");
  }
  FairseqCheckpoint out;
  for (size_t i = 0; i + 1 < root.items.size(); i += 2) {
    const Value* key = root.items[i];
    const std::string name = key->kind == Kind::kString ? key->text : Describe(*key);
    out.top_level.push_back(absl::StrCat(name, ": ", Describe(*root.items[i + 1])));
    if (name != "args" && name != "cfg" && name != "model") out.skipped.push_back(name);
  }

  // fairseq's own precedence (checkpoint_utils.load_checkpoint_to_cpu): a non-None `args`
  // wins over `cfg`.
  const Value* args = root.DictGet("args");
  const Value* cfg = root.DictGet("cfg");
  if (args != nullptr && args->kind != Kind::kNone) {
    const Value* fields = AsMapping(args);
    if (fields == nullptr) {
      return error("\"args\" is ", WhyNot(*args), "; expected an argparse.Namespace");
    }
    out.args = ArgFields("args", fields);
  } else if (cfg != nullptr && cfg->kind != Kind::kNone) {
    const Value* cfg_fields = AsMapping(cfg);
    if (cfg_fields == nullptr) {
      return error("\"cfg\" is ", WhyNot(*cfg), "; expected a dict or DictConfig");
    }
    const Value* model = UnwrapNode(cfg_fields->DictGet("model"));
    if (model == nullptr || model->kind == Kind::kNone) {
      return error("\"cfg\" has no \"model\" section holding the model's args");
    }
    const Value* model_fields = AsMapping(model);
    if (model_fields == nullptr) {
      return error("\"cfg\".\"model\" is ", WhyNot(*model),
                   "; expected a dict, DictConfig or argparse.Namespace");
    }
    out.args = ArgFields("cfg.model", model_fields);
    if (const Value* task = AsMapping(UnwrapNode(cfg_fields->DictGet("task")))) {
      out.task = ArgFields("cfg.task", task);
    }
  } else {
    return error("neither \"args\" nor \"cfg\" holds the model's arguments (keys: ",
                 root.DictSize(), "); not a fairseq checkpoint?");
  }

  const Value* model = root.DictGet("model");
  if (model == nullptr) return error("no \"model\" state dict");
  if (model->kind != Kind::kDict) {
    return error("\"model\" is ", WhyNot(*model), "; expected the state dict (an OrderedDict)");
  }
  for (size_t i = 0; i + 1 < model->items.size(); i += 2) {
    const Value* key = model->items[i];
    if (key->kind != Kind::kString) {
      return error("state dict key ", Describe(*key), " is not a string");
    }
    out.model.push_back({key->text, model->items[i + 1]});
  }
  return out;
}

}  // namespace seqboat::convert
