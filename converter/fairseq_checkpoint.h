// The parts of a fairseq checkpoint's top-level dict the converter reads: the model args
// (`args`, an argparse.Namespace, or newer fairseq's `cfg` with a `model` section) and the
// state dict (`model`). Everything else (optimizer state, extra_state...) is left unread.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "converter/pickle_value.h"

namespace seqboat::convert {

// A read-only view of named fields: an argparse.Namespace, a plain dict, or an
// omegaconf DictConfig (its `_content`, with value nodes unwrapped).
class ArgFields {
 public:
  ArgFields() = default;
  ArgFields(std::string origin, const Value* mapping)
      : origin_(std::move(origin)), mapping_(mapping) {}

  // Where the fields come from, for messages: "args" or "cfg.model".
  const std::string& origin() const { return origin_; }
  bool empty() const { return mapping_ == nullptr; }
  // The field's value with omegaconf nodes unwrapped; null when absent.
  const Value* Find(absl::string_view name) const;
  // Every field with a string name, in stored order (later duplicates win in Find).
  std::vector<std::pair<std::string, const Value*>> Fields() const;

 private:
  std::string origin_;
  const Value* mapping_ = nullptr;  // a kDict
};

// The dict behind a Namespace / dict / DictConfig value, or null when `value` is none of them.
const Value* AsMapping(const Value* value);
// Unwraps an omegaconf value node (its `_val`); other values are returned as they are.
const Value* UnwrapNode(const Value* value);

struct StateDictEntry {
  std::string name;  // as stored, e.g. "decoder.embed_tokens.weight"
  const Value* value = nullptr;
};

struct FairseqCheckpoint {
  ArgFields args;                      // the model's args (from `args` or `cfg.model`)
  ArgFields task;                      // `cfg.task` when the args came from cfg, else empty
  std::vector<StateDictEntry> model;   // the state dict, in stored order
  std::vector<std::string> top_level;  // every top-level key with a short description
  std::vector<std::string> skipped;    // top-level keys not read (training leftovers)
};

// Finds args/cfg and the state dict. Errors name the key and what was found; an opaque
// value (a call of a non-allow-listed global) where the model or args are needed is an error
// naming the global.
// `label` (the checkpoint's path) prefixes messages.
absl::StatusOr<FairseqCheckpoint> ReadFairseqCheckpoint(const Value& root, absl::string_view label);

}  // namespace seqboat::convert
