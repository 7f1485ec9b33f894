// The OpenAI-compatible HTTP API's JSON: requests read into the request builder's terms
// (types checked here, ranges by the builder, both errors naming the field as the API does),
// and the response bodies and stream events of completions and chat completions.
// No I/O: the HTTP server (server/http_api) feeds these.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/request.h"
#include "runtime/model/tokenizer.h"
#include "server/chat_template.h"
#include "server/request_builder.h"

namespace seqboat::server {

enum class OpenAiEndpoint { kCompletions, kChat };

// One prompt of a request (completions may hold several; chat has one).
struct OpenAiPrompt {
  GenerationRequest request;
  // A text prompt as given; empty for token ids.
  std::optional<std::string> text;
};

struct OpenAiRequest {
  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  std::string model;  // empty: the request named none
  std::vector<OpenAiPrompt> prompts;
  int n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool echo = false;           // completions: the prompt opens each choice's text
  // Completions `logprobs` (k alternatives) or chat `logprobs: true` with `top_logprobs` k.
  std::optional<int> logprobs;
  bool include_stop = false;   // include_stop_str_in_output
  bool tokens_as_ids = false;  // vLLM's return_tokens_as_token_ids: logprobs name "token_id:N"
  std::optional<int> prompt_logprobs;  // vLLM's: the prompt's tokens scored, k alternatives
  // SeqBoat's: per generated token, which layers ran the Gated Attention Unit (each choice's
  // `activations`: {"text_offset": [...], "layers": [[0|1 per layer], ...]}).
  bool return_activations = false;
  // Absent: the server draws one. Prompt p's choice k draws with seed + p * n + k (its index),
  // as a gRPC request with seed + p * n does for its choice k.
  std::optional<uint64_t> seed;
};

// The request builder's field names in this API.
FieldNames OpenAiFieldNames(OpenAiEndpoint endpoint);

// Parses a request body. InvalidArgument naming the field: a wrong type, a field this server
// does not support (tools, suffix, ...), or a prompt it cannot read. Unknown fields are
// ignored. Ranges are the request builder's to check.
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(const nlohmann::json& body,
                                                 OpenAiEndpoint endpoint,
                                                 const ChatTemplate& chat_template);

// What one choice produced, for the response.
struct ChoiceResult {
  std::string text;                    // the completion (after the echoed prompt, if any)
  std::vector<GeneratedToken> tokens;  // with logprobs when asked
  std::vector<int64_t> text_offsets;   // [tokens] where each begins in `text` (code points)
  int64_t generated_tokens = 0;        // what the model generated (usage.completion_tokens)
  FinishReason reason = FinishReason::kLength;
  std::string error;
};

// What one prompt produced: its choices, its scored tokens (echo with logprobs), its counts.
struct PromptResult {
  std::vector<int32_t> prompt_tokens;
  std::vector<GeneratedToken> prompt_scores;  // prompt tokens 1.. (the first has no score)
  std::vector<ChoiceResult> choices;
  int64_t cached_tokens = 0;
};

// The response's identity: "cmpl-..." / "chatcmpl-...", the model's name, the creation time.
struct ResponseIdentity {
  std::string id;
  std::string model;
  int64_t created = 0;
};

// What `echo` puts before a choice's text: a text prompt as given, token ids decoded.
std::string EchoText(const OpenAiPrompt& prompt, const PromptResult& result,
                     const Tokenizer& tokenizer);

// OpenAI's finish_reason: "stop" (end of sequence, a stop token or sequence), "length", and
// "abort" for a request the server ended (a drain, a deadline, an error).
const char* OpenAiFinishReason(FinishReason reason);

// The non-streamed response body.
nlohmann::json CompletionResponse(const OpenAiRequest& request,
                                  const std::vector<PromptResult>& results,
                                  const Tokenizer& tokenizer, const ResponseIdentity& identity);

// The streamed events, each a JSON object for one `data:` line.
// The first event of a choice: chat's role delta, or the echoed prompt (completions).
std::optional<nlohmann::json> StreamStartEvent(const OpenAiRequest& request, int index,
                                               const OpenAiPrompt& prompt,
                                               const PromptResult& result,
                                               const Tokenizer& tokenizer,
                                               const ResponseIdentity& identity);
// Text and tokens of choice `index`; the text begins at character `text_offset` of the choice's
// text, and each token at `token_offsets` (both count the echoed prompt, if any).
nlohmann::json StreamDeltaEvent(const OpenAiRequest& request, int index, const std::string& text,
                                const std::vector<GeneratedToken>& tokens,
                                const std::vector<int64_t>& token_offsets, int64_t text_offset,
                                const Tokenizer& tokenizer, const ResponseIdentity& identity);
// Choice `index` ended.
nlohmann::json StreamFinishEvent(const OpenAiRequest& request, int index, FinishReason reason,
                                 const ResponseIdentity& identity);
// The usage event (stream_options.include_usage): no choices.
nlohmann::json StreamUsageEvent(const OpenAiRequest& request,
                                const std::vector<PromptResult>& results,
                                const ResponseIdentity& identity);

// An OpenAI error object: {"error": {"message", "type", "param", "code"}}.
nlohmann::json ErrorBody(int http_status, const std::string& message,
                         const std::string& param = "");

// The HTTP status for a status from the builder or the engine (400, 429, 503, 500, ...).
int HttpStatusFor(const absl::Status& status);

// The `param` an error message names ("max_tokens: ..." -> "max_tokens"), or "".
std::string ErrorParam(const std::string& message);

}  // namespace seqboat::server
