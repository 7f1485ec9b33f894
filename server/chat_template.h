// How chat messages become a prompt: a plain template, not a program. Each message is
// `message` with {role} and {content} replaced, in order, then `generation_prompt` follows.
// The default suits fairseq language models, whose line break is the end-of-sequence token:
//   system: You are terse.\nuser: Hello\nassistant:
// A model file may carry its own in its metadata ("chat_template", the JSON below), and
// --chat_template FILE overrides both.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace seqboat::server {

struct ChatTemplate {
  std::string message = "{role}: {content}\n";
  std::string generation_prompt = "assistant:";

  // {"message": "...", "generation_prompt": "..."}; `where` names the source in errors.
  static absl::StatusOr<ChatTemplate> FromJson(absl::string_view json, absl::string_view where);
  // (role, content) pairs, in order.
  std::string Render(const std::vector<std::pair<std::string, std::string>>& messages) const;
};

}  // namespace seqboat::server
