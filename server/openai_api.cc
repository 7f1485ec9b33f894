// OpenAI-compatible JSON: requests in, responses and stream events out.
#include "server/openai_api.h"

#include <algorithm>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "runtime/util/utf8.h"

namespace seqboat::server {
namespace {

using json = nlohmann::json;

constexpr int kMaxPrompts = 64;

absl::Status TypeError(const std::string& name, const char* expected, const json& value) {
  return absl::InvalidArgumentError(absl::StrCat(name, ": expected ", expected, ", got ",
                                                 value.is_null() ? "null" : value.type_name()));
}

// Typed access to the body's fields; absent and null both read as "not given".
class Fields {
 public:
  explicit Fields(const json& body) : body_(body) {}

  const json* Get(const char* name) const {
    auto it = body_.find(name);
    return it == body_.end() || it->is_null() ? nullptr : &*it;
  }
  absl::StatusOr<std::optional<int64_t>> Int(const char* name) const {
    const json* value = Get(name);
    if (value == nullptr) return std::optional<int64_t>();
    if (!value->is_number_integer()) return TypeError(name, "an integer", *value);
    if (value->is_number_unsigned() &&
        value->get<uint64_t>() > std::numeric_limits<int64_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": ", value->dump(), " is too large"));
    }
    return std::optional<int64_t>(value->get<int64_t>());
  }
  // An int that must fit 32 bits (the builder then checks its range).
  absl::StatusOr<std::optional<int32_t>> Int32(const char* name) const {
    absl::StatusOr<std::optional<int64_t>> wide = Int(name);
    if (!wide.ok()) return wide.status();
    if (!wide->has_value()) return std::optional<int32_t>();
    if (**wide < std::numeric_limits<int32_t>::min() ||
        **wide > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": ", **wide, " is out of range"));
    }
    return std::optional<int32_t>(static_cast<int32_t>(**wide));
  }
  absl::StatusOr<std::optional<float>> Float(const char* name) const {
    const json* value = Get(name);
    if (value == nullptr) return std::optional<float>();
    if (!value->is_number()) return TypeError(name, "a number", *value);
    return std::optional<float>(value->get<float>());
  }
  absl::StatusOr<std::optional<bool>> Bool(const char* name) const {
    const json* value = Get(name);
    if (value == nullptr) return std::optional<bool>();
    if (!value->is_boolean()) return TypeError(name, "true or false", *value);
    return std::optional<bool>(value->get<bool>());
  }
  absl::StatusOr<std::optional<std::string>> String(const char* name) const {
    const json* value = Get(name);
    if (value == nullptr) return std::optional<std::string>();
    if (!value->is_string()) return TypeError(name, "a string", *value);
    return std::optional<std::string>(value->get<std::string>());
  }

 private:
  const json& body_;
};

#define ASSIGN_FIELD(lhs, expr)                               \
  do {                                                        \
    auto seqboat_field_ = (expr);                             \
    if (!seqboat_field_.ok()) return seqboat_field_.status(); \
    lhs = *seqboat_field_;                                    \
  } while (0)

absl::StatusOr<std::vector<int32_t>> TokenIds(const json& value, const std::string& name) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < value.size(); ++i) {
    const json& id = value[i];
    if (!id.is_number_integer() || id.get<int64_t>() < std::numeric_limits<int32_t>::min() ||
        id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return TypeError(absl::StrCat(name, "[", i, "]"), "a token id", id);
    }
    ids.push_back(id.get<int32_t>());
  }
  return ids;
}

// completions' `prompt`: a string, strings, token ids, or arrays of token ids.
absl::StatusOr<std::vector<OpenAiPrompt>> Prompts(const json* prompt) {
  constexpr char kExpected[] =
      "a string, an array of strings, an array of token ids or an array of token-id arrays";
  if (prompt == nullptr) return absl::InvalidArgumentError("prompt: required");
  std::vector<OpenAiPrompt> out;
  if (prompt->is_string()) {
    out.push_back({GenerationRequest{}, prompt->get<std::string>()});
    out.back().request.text = out.back().text;
    return out;
  }
  if (!prompt->is_array()) return TypeError("prompt", kExpected, *prompt);
  if (prompt->empty()) return absl::InvalidArgumentError("prompt: an empty array; give a prompt");
  if ((*prompt)[0].is_number_integer()) {
    absl::StatusOr<std::vector<int32_t>> ids = TokenIds(*prompt, "prompt");
    if (!ids.ok()) return ids.status();
    out.emplace_back().request.tokens = *std::move(ids);
    return out;
  }
  if (prompt->size() > static_cast<size_t>(kMaxPrompts)) {
    return absl::InvalidArgumentError(absl::StrCat("prompt: ", prompt->size(), " prompts; at most ",
                                                   kMaxPrompts, " in one request"));
  }
  for (size_t i = 0; i < prompt->size(); ++i) {
    const json& one = (*prompt)[i];
    const std::string name = absl::StrCat("prompt[", i, "]");
    OpenAiPrompt& p = out.emplace_back();
    if (one.is_string()) {
      p.text = one.get<std::string>();
      p.request.text = p.text;
    } else if (one.is_array()) {
      absl::StatusOr<std::vector<int32_t>> ids = TokenIds(one, name);
      if (!ids.ok()) return ids.status();
      p.request.tokens = *std::move(ids);
    } else {
      return TypeError(name, "a string or an array of token ids", one);
    }
  }
  return out;
}

// chat's `messages`, through the template.
absl::StatusOr<std::string> ChatPrompt(const json* messages, const ChatTemplate& chat_template) {
  if (messages == nullptr) return absl::InvalidArgumentError("messages: required");
  if (!messages->is_array() || messages->empty()) {
    return TypeError("messages", "a non-empty array of {role, content}", *messages);
  }
  std::vector<std::pair<std::string, std::string>> turns;
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string name = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return TypeError(name, "an object {role, content}", m);
    auto role = m.find("role");
    if (role == m.end() || !role->is_string() || role->get<std::string>().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ".role: expected a role (system, user, assistant)"));
    }
    std::string content;
    auto c = m.find("content");
    if (c == m.end() || c->is_null()) {
      if (role->get<std::string>() != "assistant") {  // an assistant turn may have none
        return absl::InvalidArgumentError(absl::StrCat(name, ".content: required"));
      }
    } else if (c->is_string()) {
      content = c->get<std::string>();
    } else if (c->is_array()) {
      for (size_t j = 0; j < c->size(); ++j) {
        const json& part = (*c)[j];
        auto type = part.is_object() ? part.find("type") : part.end();
        auto text = part.is_object() ? part.find("text") : part.end();
        if (type == part.end() || *type != "text" || text == part.end() || !text->is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat(name, ".content[", j,
                           "]: only {\"type\": \"text\", \"text\": ...} parts are supported"));
        }
        content += text->get<std::string>();
      }
    } else {
      return TypeError(name + ".content", "a string or an array of text parts", *c);
    }
    turns.emplace_back(role->get<std::string>(), std::move(content));
  }
  return chat_template.Render(turns);
}

std::string TokenText(const Tokenizer& tokenizer, int32_t id) {
  return EscapeInvalidUtf8(tokenizer.TokenText(id));
}

// A token in logprobs: its text, or vLLM's "token_id:N" (return_tokens_as_token_ids).
std::string TokenName(const Tokenizer& tokenizer, int32_t id, bool as_ids) {
  return as_ids ? absl::StrCat("token_id:", id) : TokenText(tokenizer, id);
}

json TokenBytes(const Tokenizer& tokenizer, int32_t id) {
  json bytes = json::array();
  for (unsigned char c : tokenizer.TokenText(id)) bytes.push_back(static_cast<int>(c));
  return bytes;
}

// Characters in text[0, byte_offset) (a prefix that may end inside a character).
int64_t CharOffset(const std::string& text, int64_t byte_offset) {
  return CountCodePoints(absl::string_view(text).substr(0, static_cast<size_t>(byte_offset)));
}

// Completions' logprobs object over `tokens` (the first may have no score: null).
json CompletionLogprobs(const std::vector<const GeneratedToken*>& tokens,
                        const std::vector<bool>& scored, const std::string& text,
                        const Tokenizer& tokenizer, bool as_ids) {
  json out = {{"tokens", json::array()},
              {"token_logprobs", json::array()},
              {"top_logprobs", json::array()},
              {"text_offset", json::array()}};
  int64_t byte_offset = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const GeneratedToken& t = *tokens[i];
    out["tokens"].push_back(TokenName(tokenizer, t.token, as_ids));
    out["text_offset"].push_back(CharOffset(text, byte_offset));
    byte_offset += static_cast<int64_t>(tokenizer.TokenText(t.token).size());
    if (!scored[i]) {
      out["token_logprobs"].push_back(nullptr);
      out["top_logprobs"].push_back(nullptr);
      continue;
    }
    out["token_logprobs"].push_back(t.logprob);
    json top = json::object();
    for (const TokenLogprob& alternative : t.top)
      top[TokenName(tokenizer, alternative.token, as_ids)] = alternative.logprob;
    out["top_logprobs"].push_back(std::move(top));
  }
  return out;
}

// SeqBoat's activations of generated `tokens`: per token where its text begins in the choice's
// text (`offsets`, from the generated text's start, plus `echo_chars`), and per layer 1 where
// the layer's Gated Attention Unit ran for it, else 0.
json Activations(const std::vector<GeneratedToken>& tokens, const std::vector<int64_t>& offsets,
                 int64_t echo_chars) {
  json text_offset = json::array(), layers = json::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    text_offset.push_back(echo_chars + (i < offsets.size() ? offsets[i] : 0));
    json row = json::array();
    for (uint8_t on : tokens[i].activations) row.push_back(on != 0 ? 1 : 0);
    layers.push_back(std::move(row));
  }
  return {{"text_offset", std::move(text_offset)}, {"layers", std::move(layers)}};
}

json ChatLogprobs(const std::vector<GeneratedToken>& tokens, const Tokenizer& tokenizer,
                  bool as_ids) {
  json content = json::array();
  for (const GeneratedToken& t : tokens) {
    json top = json::array();
    for (const TokenLogprob& alternative : t.top) {
      top.push_back({{"token", TokenName(tokenizer, alternative.token, as_ids)},
                     {"logprob", alternative.logprob},
                     {"bytes", TokenBytes(tokenizer, alternative.token)}});
    }
    content.push_back({{"token", TokenName(tokenizer, t.token, as_ids)},
                       {"logprob", t.logprob},
                       {"bytes", TokenBytes(tokenizer, t.token)},
                       {"top_logprobs", std::move(top)}});
  }
  return {{"content", std::move(content)}};
}

// vLLM's prompt_logprobs: null for the first token, then {id: {logprob, rank, decoded_token}}
// for the prompt token and its alternatives.
json VllmPromptLogprobs(const PromptResult& result, const Tokenizer& tokenizer) {
  json out = json::array({nullptr});
  for (const GeneratedToken& t : result.prompt_scores) {
    json position = json::object();
    position[std::to_string(t.token)] = {
        {"logprob", t.logprob}, {"rank", t.rank}, {"decoded_token", TokenText(tokenizer, t.token)}};
    for (size_t r = 0; r < t.top.size(); ++r) {
      const TokenLogprob& alternative = t.top[r];
      position[std::to_string(alternative.token)] = {
          {"logprob", alternative.logprob},
          {"rank", static_cast<int>(r) + 1},
          {"decoded_token", TokenText(tokenizer, alternative.token)}};
    }
    out.push_back(std::move(position));
  }
  return out;
}

// The echoed prompt's tokens and scores. A text prompt echoes its own tokens, each scored
// after the start token the tokenizer put before them; a token prompt echoes every token, the
// first with no score.
void EchoTokens(const OpenAiPrompt& prompt, const PromptResult& result,
                std::vector<const GeneratedToken*>* tokens, std::vector<bool>* scored,
                std::vector<GeneratedToken>* first) {
  if (!prompt.text.has_value()) {
    first->resize(1);
    (*first)[0].token = result.prompt_tokens.empty() ? 0 : result.prompt_tokens[0];
    tokens->push_back(&(*first)[0]);
    scored->push_back(false);
  }
  for (const GeneratedToken& t : result.prompt_scores) {
    tokens->push_back(&t);
    scored->push_back(true);
  }
}

json Usage(const std::vector<PromptResult>& results) {
  int64_t prompt = 0, completion = 0, cached = 0;
  for (const PromptResult& r : results) {
    prompt += static_cast<int64_t>(r.prompt_tokens.size());
    cached += r.cached_tokens;
    for (const ChoiceResult& c : r.choices) completion += c.generated_tokens;
  }
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

json Envelope(const OpenAiRequest& request, const ResponseIdentity& identity, bool chunk) {
  const bool chat = request.endpoint == OpenAiEndpoint::kChat;
  return {
      {"id", identity.id},
      {"object", chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
      {"created", identity.created},
      {"model", identity.model}};
}

}  // namespace

FieldNames OpenAiFieldNames(OpenAiEndpoint endpoint) {
  const bool chat = endpoint == OpenAiEndpoint::kChat;
  return [chat](ApiField field) -> std::string {
    switch (field) {
      case ApiField::kPrompt:
      case ApiField::kText:
      case ApiField::kTokens: return chat ? "messages" : "prompt";
      case ApiField::kTemperature: return "temperature";
      case ApiField::kTopK: return "top_k";
      case ApiField::kTopP: return "top_p";
      case ApiField::kMinP: return "min_p";
      case ApiField::kRepetitionPenalty: return "repetition_penalty";
      case ApiField::kPresencePenalty: return "presence_penalty";
      case ApiField::kFrequencyPenalty: return "frequency_penalty";
      case ApiField::kMaxNewTokens: return "max_tokens";
      case ApiField::kStop: return "stop";
      case ApiField::kStopTokenIds: return "stop_token_ids";
      case ApiField::kLogprobs: return chat ? "top_logprobs" : "logprobs";
      case ApiField::kPromptLogprobs: return "prompt_logprobs";
      case ApiField::kN: return "n";
      case ApiField::kLogitBias: return "logit_bias";
      case ApiField::kActivationBias: return "routing.activation_bias";
      case ApiField::kLayerActivationBias: return "routing.layer_activation_bias";
    }
    return "?";
  };
}

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(const json& body, OpenAiEndpoint endpoint,
                                                 const ChatTemplate& chat_template) {
  if (!body.is_object()) return TypeError("body", "a JSON object", body);
  const Fields f(body);
  const bool chat = endpoint == OpenAiEndpoint::kChat;
  OpenAiRequest out;
  out.endpoint = endpoint;
  std::optional<std::string> model;
  ASSIGN_FIELD(model, f.String("model"));
  out.model = model.value_or("");
  // OpenAI fields this server does not implement: refused, not silently ignored.
  for (const char* unsupported : {"suffix", "tools", "tool_choice", "functions", "function_call"}) {
    if (f.Get(unsupported) != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(unsupported, ": not supported by this server"));
    }
  }
  if (const json* format = f.Get("response_format");
      format != nullptr && !(format->is_object() && format->value("type", "") == "text")) {
    return absl::InvalidArgumentError("response_format: only {\"type\": \"text\"} is supported");
  }

  GenerationRequest common;
  ASSIGN_FIELD(common.temperature, f.Float("temperature"));
  ASSIGN_FIELD(common.top_p, f.Float("top_p"));
  std::optional<int32_t> top_k;
  ASSIGN_FIELD(top_k, f.Int32("top_k"));
  common.top_k = top_k.value_or(0) == -1 ? 0 : top_k.value_or(0);  // vLLM: -1 turns it off
  std::optional<float> number;
  ASSIGN_FIELD(number, f.Float("min_p"));
  common.min_p = number.value_or(0.0f);
  ASSIGN_FIELD(common.repetition_penalty, f.Float("repetition_penalty"));
  ASSIGN_FIELD(number, f.Float("presence_penalty"));
  common.presence_penalty = number.value_or(0.0f);
  ASSIGN_FIELD(number, f.Float("frequency_penalty"));
  common.frequency_penalty = number.value_or(0.0f);
  ASSIGN_FIELD(common.max_new_tokens, f.Int32("max_tokens"));
  if (chat) {
    std::optional<int32_t> completion_tokens;
    ASSIGN_FIELD(completion_tokens, f.Int32("max_completion_tokens"));
    if (completion_tokens.has_value()) common.max_new_tokens = completion_tokens;
  }
  if (const json* stop = f.Get("stop")) {
    if (stop->is_string()) {
      common.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (size_t i = 0; i < stop->size(); ++i) {
        if (!(*stop)[i].is_string())
          return TypeError(absl::StrCat("stop[", i, "]"), "a string", (*stop)[i]);
        common.stop.push_back((*stop)[i].get<std::string>());
      }
    } else {
      return TypeError("stop", "a string or an array of strings", *stop);
    }
  }
  if (const json* ids = f.Get("stop_token_ids")) {
    if (!ids->is_array()) return TypeError("stop_token_ids", "an array of token ids", *ids);
    ASSIGN_FIELD(common.stop_token_ids, TokenIds(*ids, "stop_token_ids"));
  }
  std::optional<bool> flag;
  ASSIGN_FIELD(flag, f.Bool("ignore_eos"));
  common.ignore_eos = flag.value_or(false);
  if (const json* bias = f.Get("logit_bias")) {
    if (!bias->is_object()) return TypeError("logit_bias", "an object {\"token id\": bias}", *bias);
    for (const auto& [key, value] : bias->items()) {
      int32_t id;
      if (!absl::SimpleAtoi(key, &id)) {
        return absl::InvalidArgumentError(
            absl::StrCat("logit_bias: key \"", key, "\" is not a token id"));
      }
      if (!value.is_number())
        return TypeError(absl::StrCat("logit_bias[\"", key, "\"]"), "a number", value);
      common.logit_bias.emplace_back(id, value.get<float>());
    }
    std::sort(common.logit_bias.begin(), common.logit_bias.end());
  }
  // SeqBoat's own: {"activation_bias": b, "layer_activation_bias": [b0, b1, ...]}, as
  // RoutingParams in the gRPC API.
  if (const json* routing = f.Get("routing")) {
    if (!routing->is_object()) return TypeError("routing", "an object", *routing);
    for (const auto& [key, value] : routing->items()) {
      if (key != "activation_bias" && key != "layer_activation_bias") {
        return absl::InvalidArgumentError(absl::StrCat(
            "routing.", key, ": unknown field; expected activation_bias or layer_activation_bias"));
      }
    }
    const Fields r(*routing);
    if (const json* bias = r.Get("activation_bias")) {
      if (!bias->is_number()) return TypeError("routing.activation_bias", "a number", *bias);
      common.activation_bias = bias->get<float>();
    }
    if (const json* list = r.Get("layer_activation_bias")) {
      if (!list->is_array())
        return TypeError("routing.layer_activation_bias", "an array of numbers", *list);
      for (size_t i = 0; i < list->size(); ++i) {
        if (!(*list)[i].is_number()) {
          return TypeError(absl::StrCat("routing.layer_activation_bias[", i, "]"), "a number",
                           (*list)[i]);
        }
        common.layer_activation_bias.push_back((*list)[i].get<float>());
      }
    }
  }
  std::optional<int32_t> n;
  ASSIGN_FIELD(n, f.Int32("n"));
  out.n = n.value_or(1);
  common.n = out.n;
  if (const json* best_of = f.Get("best_of"); best_of != nullptr && *best_of != json(out.n)) {
    return absl::InvalidArgumentError("best_of: only best_of equal to n is supported");
  }
  std::optional<int64_t> seed;
  ASSIGN_FIELD(seed, f.Int("seed"));
  if (seed.has_value()) out.seed = static_cast<uint64_t>(*seed);
  if (const json* user = f.Get("user"); user != nullptr && !user->is_string()) {
    return TypeError("user", "a string", *user);
  }
  ASSIGN_FIELD(flag, f.Bool("stream"));
  out.stream = flag.value_or(false);
  if (const json* options = f.Get("stream_options")) {
    if (!options->is_object()) return TypeError("stream_options", "an object", *options);
    Fields o(*options);
    ASSIGN_FIELD(flag, o.Bool("include_usage"));
    out.include_usage = flag.value_or(false);
  }
  ASSIGN_FIELD(flag, f.Bool("include_stop_str_in_output"));
  out.include_stop = flag.value_or(false);
  ASSIGN_FIELD(flag, f.Bool("return_tokens_as_token_ids"));
  out.tokens_as_ids = flag.value_or(false);
  ASSIGN_FIELD(flag, f.Bool("return_activations"));
  out.return_activations = flag.value_or(false);
  std::optional<int32_t> prompt_logprobs;
  ASSIGN_FIELD(prompt_logprobs, f.Int32("prompt_logprobs"));
  if (prompt_logprobs.has_value()) out.prompt_logprobs = *prompt_logprobs;

  if (chat) {
    std::optional<bool> logprobs;
    ASSIGN_FIELD(logprobs, f.Bool("logprobs"));
    std::optional<int32_t> top;
    ASSIGN_FIELD(top, f.Int32("top_logprobs"));
    if (top.has_value() && !logprobs.value_or(false)) {
      return absl::InvalidArgumentError("top_logprobs: needs logprobs: true");
    }
    if (logprobs.value_or(false)) out.logprobs = top.value_or(0);
    absl::StatusOr<std::string> text = ChatPrompt(f.Get("messages"), chat_template);
    if (!text.ok()) return text.status();
    out.prompts.push_back({GenerationRequest{}, *text});
    out.prompts.back().request.text = *text;
  } else {
    std::optional<int32_t> logprobs;
    ASSIGN_FIELD(logprobs, f.Int32("logprobs"));
    if (logprobs.has_value()) out.logprobs = *logprobs;
    ASSIGN_FIELD(flag, f.Bool("echo"));
    out.echo = flag.value_or(false);
    ASSIGN_FIELD(out.prompts, Prompts(f.Get("prompt")));
  }

  for (OpenAiPrompt& p : out.prompts) {
    GenerationRequest& r = p.request;
    std::optional<std::string> text = std::move(r.text);
    std::optional<std::vector<int32_t>> tokens = std::move(r.tokens);
    r = common;
    r.text = std::move(text);
    r.tokens = std::move(tokens);
    r.return_activations = out.return_activations;
    if (out.logprobs.has_value()) {
      r.logprobs = *out.logprobs;  // a negative value is the builder's to refuse
      r.token_logprobs = true;
    }
    // Echo with logprobs scores the prompt; echo of max_tokens 0 runs only the prompt.
    if (out.prompt_logprobs.has_value()) {
      r.prompt_logprobs = *out.prompt_logprobs;
    } else if (out.echo && out.logprobs.has_value()) {
      r.prompt_logprobs = std::max(0, *out.logprobs);
    } else if (out.echo && r.max_new_tokens == 0) {
      r.prompt_logprobs = 0;
    }
  }
  return out;
}

std::string EchoText(const OpenAiPrompt& prompt, const PromptResult& result,
                     const Tokenizer& tokenizer) {
  return prompt.text.has_value() ? *prompt.text : tokenizer.Decode(result.prompt_tokens);
}

const char* OpenAiFinishReason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return "length";
    case FinishReason::kStop:
    case FinishReason::kStopToken:
    case FinishReason::kEos: return "stop";
    case FinishReason::kCancelled:
    case FinishReason::kDeadline:
    case FinishReason::kError: return "abort";
  }
  return "abort";
}

json CompletionResponse(const OpenAiRequest& request, const std::vector<PromptResult>& results,
                        const Tokenizer& tokenizer, const ResponseIdentity& identity) {
  const bool chat = request.endpoint == OpenAiEndpoint::kChat;
  json choices = json::array();
  for (size_t p = 0; p < results.size(); ++p) {
    const PromptResult& result = results[p];
    for (size_t k = 0; k < result.choices.size(); ++k) {
      const ChoiceResult& choice = result.choices[k];
      json c = {{"index", static_cast<int>(p * request.n + k)},
                {"finish_reason", OpenAiFinishReason(choice.reason)}};
      if (chat) {
        c["message"] = {{"role", "assistant"}, {"content", choice.text}};
        c["logprobs"] = request.logprobs.has_value()
                            ? ChatLogprobs(choice.tokens, tokenizer, request.tokens_as_ids)
                            : json(nullptr);
        if (request.return_activations)
          c["activations"] = Activations(choice.tokens, choice.text_offsets, 0);
      } else {
        const std::string echo =
            request.echo ? EchoText(request.prompts[p], result, tokenizer) : "";
        c["text"] = echo + choice.text;
        if (request.return_activations) {
          c["activations"] = Activations(choice.tokens, choice.text_offsets, CountCodePoints(echo));
        }
        if (request.logprobs.has_value()) {
          std::vector<const GeneratedToken*> tokens;
          std::vector<bool> scored;
          std::vector<GeneratedToken> first;
          if (request.echo) EchoTokens(request.prompts[p], result, &tokens, &scored, &first);
          for (const GeneratedToken& t : choice.tokens) {
            tokens.push_back(&t);
            scored.push_back(true);
          }
          c["logprobs"] = CompletionLogprobs(tokens, scored, c["text"].get<std::string>(),
                                             tokenizer, request.tokens_as_ids);
        } else {
          c["logprobs"] = nullptr;
        }
      }
      if (request.prompt_logprobs.has_value())
        c["prompt_logprobs"] = VllmPromptLogprobs(result, tokenizer);
      choices.push_back(std::move(c));
    }
  }
  json out = Envelope(request, identity, /*chunk=*/false);
  out["choices"] = std::move(choices);
  out["usage"] = Usage(results);
  return out;
}

std::optional<json> StreamStartEvent(const OpenAiRequest& request, int index,
                                     const OpenAiPrompt& prompt, const PromptResult& result,
                                     const Tokenizer& tokenizer, const ResponseIdentity& identity) {
  json c = {{"index", index}, {"finish_reason", nullptr}};
  if (request.endpoint == OpenAiEndpoint::kChat) {
    c["delta"] = {{"role", "assistant"}, {"content", ""}};
    c["logprobs"] = nullptr;
  } else if (request.echo) {
    c["text"] = EchoText(prompt, result, tokenizer);
    if (request.logprobs.has_value()) {
      std::vector<const GeneratedToken*> tokens;
      std::vector<bool> scored;
      std::vector<GeneratedToken> first;
      EchoTokens(prompt, result, &tokens, &scored, &first);
      c["logprobs"] = CompletionLogprobs(tokens, scored, c["text"].get<std::string>(), tokenizer,
                                         request.tokens_as_ids);
    } else {
      c["logprobs"] = nullptr;
    }
  } else {
    return std::nullopt;
  }
  if (request.prompt_logprobs.has_value())
    c["prompt_logprobs"] = VllmPromptLogprobs(result, tokenizer);
  json out = Envelope(request, identity, /*chunk=*/true);
  out["choices"] = json::array({std::move(c)});
  return out;
}

json StreamDeltaEvent(const OpenAiRequest& request, int index, const std::string& text,
                      const std::vector<GeneratedToken>& tokens,
                      const std::vector<int64_t>& token_offsets, int64_t text_offset,
                      const Tokenizer& tokenizer, const ResponseIdentity& identity) {
  json c = {{"index", index}, {"finish_reason", nullptr}};
  if (request.endpoint == OpenAiEndpoint::kChat) {
    c["delta"] = {{"content", text}};
    c["logprobs"] = request.logprobs.has_value()
                        ? ChatLogprobs(tokens, tokenizer, request.tokens_as_ids)
                        : json(nullptr);
  } else {
    c["text"] = text;
    if (request.logprobs.has_value()) {
      std::vector<const GeneratedToken*> pointers;
      for (const GeneratedToken& t : tokens) pointers.push_back(&t);
      json logprobs = CompletionLogprobs(pointers, std::vector<bool>(tokens.size(), true), text,
                                         tokenizer, request.tokens_as_ids);
      for (auto& offset : logprobs["text_offset"]) offset = offset.get<int64_t>() + text_offset;
      c["logprobs"] = std::move(logprobs);
    } else {
      c["logprobs"] = nullptr;
    }
  }
  if (request.return_activations) c["activations"] = Activations(tokens, token_offsets, 0);
  json out = Envelope(request, identity, /*chunk=*/true);
  out["choices"] = json::array({std::move(c)});
  return out;
}

json StreamFinishEvent(const OpenAiRequest& request, int index, FinishReason reason,
                       const ResponseIdentity& identity) {
  json c = {{"index", index}, {"finish_reason", OpenAiFinishReason(reason)}, {"logprobs", nullptr}};
  if (request.endpoint == OpenAiEndpoint::kChat) {
    c["delta"] = json::object();
  } else {
    c["text"] = "";
  }
  json out = Envelope(request, identity, /*chunk=*/true);
  out["choices"] = json::array({std::move(c)});
  return out;
}

json StreamUsageEvent(const OpenAiRequest& request, const std::vector<PromptResult>& results,
                      const ResponseIdentity& identity) {
  json out = Envelope(request, identity, /*chunk=*/true);
  out["choices"] = json::array();
  out["usage"] = Usage(results);
  return out;
}

json ErrorBody(int http_status, const std::string& message, const std::string& param) {
  const char* type = "invalid_request_error";
  if (http_status == 401) type = "authentication_error";
  if (http_status == 404) type = "not_found_error";
  if (http_status == 429) type = "rate_limit_error";
  if (http_status == 503) type = "service_unavailable_error";
  if (http_status >= 500 && http_status != 503) type = "internal_error";
  return {{"error",
           {{"message", EscapeInvalidUtf8(message)},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", http_status}}}};
}

int HttpStatusFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

std::string ErrorParam(const std::string& message) {
  const size_t colon = message.find(": ");
  if (colon == std::string::npos) return "";
  const std::string head = message.substr(0, colon);
  if (head.empty() || head.find(' ') != std::string::npos) return "";
  return head.substr(0, head.find('['));
}

}  // namespace seqboat::server
