// ChatTemplate: reading one, and rendering messages with it.
#include "server/chat_template.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "nlohmann/json.hpp"

namespace seqboat::server {

absl::StatusOr<ChatTemplate> ChatTemplate::FromJson(absl::string_view json,
                                                    absl::string_view where) {
  const nlohmann::json parsed = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        where,
        ": a chat template is a JSON object {\"message\": \"...{role}...{content}...\", "
        "\"generation_prompt\": \"...\"}"));
  }
  ChatTemplate out;
  for (const auto& [key, value] : parsed.items()) {
    if (key != "message" && key != "generation_prompt") {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown key \"", key,
                                                     "\"; expected message and generation_prompt"));
    }
    if (!value.is_string())
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", key, " is not a string"));
    (key == "message" ? out.message : out.generation_prompt) = value.get<std::string>();
  }
  if (out.message.find("{content}") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": message has no {content}"));
  }
  return out;
}

std::string ChatTemplate::Render(
    const std::vector<std::pair<std::string, std::string>>& messages) const {
  std::string out;
  for (const auto& [role, content] : messages) {
    // {content} last, so that a message's own text is never read as a placeholder.
    const size_t at = message.find("{content}");
    out += absl::StrReplaceAll(message.substr(0, at), {{"{role}", role}});
    out += content;
    out += absl::StrReplaceAll(message.substr(at + 9), {{"{role}", role}});
  }
  return out + generation_prompt;
}

}  // namespace seqboat::server
