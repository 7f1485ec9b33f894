// The rules every request is held to, and the names the engine gives its fields.
#include "runtime/engine/request.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "runtime/model/vocab.h"

namespace seqboat {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop_sequence";
    case FinishReason::kStopToken: return "stop_token";
    case FinishReason::kEos: return "eos";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kDeadline: return "deadline";
    case FinishReason::kError: return "error";
  }
  return "?";
}

const char* RequestFieldName(RequestField field) {
  switch (field) {
    case RequestField::kPrompt: return "prompt";
    case RequestField::kMaxNewTokens: return "max_new_tokens";
    case RequestField::kTopLogprobs: return "top_logprobs";
    case RequestField::kTemperature: return "temperature";
    case RequestField::kTopK: return "top_k";
    case RequestField::kTopP: return "top_p";
    case RequestField::kMinP: return "min_p";
    case RequestField::kRepetitionPenalty: return "repetition_penalty";
    case RequestField::kPresencePenalty: return "presence_penalty";
    case RequestField::kFrequencyPenalty: return "frequency_penalty";
    case RequestField::kStopTokenIds: return "stop_token_ids";
    case RequestField::kPromptLogprobs: return "prompt_logprobs";
    case RequestField::kN: return "n";
    case RequestField::kLogitBias: return "logit_bias";
    case RequestField::kActivationBias: return "activation_bias";
  }
  return "?";
}

absl::Status InvalidField(const std::string& name, const RequestError& error) {
  const std::string index = error.index >= 0 ? absl::StrCat("[", error.index, "]") : "";
  return absl::InvalidArgumentError(absl::StrCat(name, index, ": ", error.problem));
}

absl::Status InvalidField(const RequestError& error) {
  return InvalidField(RequestFieldName(error.field), error);
}

std::optional<RequestError> CheckGenerationParams(const GenerationParams& params,
                                                  const RequestLimits& limits, int vocab_size,
                                                  int layers) {
  const std::vector<int32_t>& prompt = params.prompt;
  if (prompt.empty())
    return RequestError{RequestField::kPrompt, -1, "empty; give at least one token"};
  if (static_cast<int64_t>(prompt.size()) > limits.max_prompt_tokens) {
    return RequestError{RequestField::kPrompt, -1,
                        absl::StrCat(prompt.size(), " tokens; at most ", limits.max_prompt_tokens)};
  }
  if (std::optional<BadTokenId> bad = FindBadTokenId(prompt, vocab_size)) {
    return RequestError{RequestField::kPrompt, bad->index, bad->problem};
  }
  // Scoring a prompt may generate nothing; forks need something to draw.
  const int32_t least = params.prompt_logprobs >= 0 && params.n == 1 ? 0 : 1;
  if (params.max_new_tokens < least || params.max_new_tokens > limits.max_new_tokens_limit) {
    return RequestError{RequestField::kMaxNewTokens, -1,
                        absl::StrCat(params.max_new_tokens, " is outside ", least, "..",
                                     limits.max_new_tokens_limit)};
  }
  if (params.top_logprobs < 0 || params.top_logprobs > limits.max_top_logprobs) {
    return RequestError{
        RequestField::kTopLogprobs, -1,
        absl::StrCat(params.top_logprobs, " is outside 0..", limits.max_top_logprobs)};
  }
  if (params.prompt_logprobs < -1 || params.prompt_logprobs > limits.max_top_logprobs) {
    return RequestError{RequestField::kPromptLogprobs, -1,
                        absl::StrCat(params.prompt_logprobs, " is outside -1..",
                                     limits.max_top_logprobs, " (-1: none)")};
  }
  if (params.n < 1 || params.n > limits.max_n) {
    return RequestError{RequestField::kN, -1,
                        absl::StrCat(params.n, " is outside 1..", limits.max_n)};
  }
  if (std::optional<RequestError> error =
          CheckSamplingParams(params.sampling, vocab_size, limits.max_stop_token_ids)) {
    return error;
  }
  const std::vector<float>& bias = params.activation_bias;
  if (!bias.empty() && static_cast<int64_t>(bias.size()) != layers) {
    return RequestError{
        RequestField::kActivationBias, -1,
        absl::StrCat(bias.size(), " values; expected one per layer (", layers, ") or none")};
  }
  for (size_t l = 0; l < bias.size(); ++l) {
    // Written so that NaN fails too.
    if (!(std::fabs(bias[l]) <= limits.max_activation_bias)) {
      return RequestError{RequestField::kActivationBias, static_cast<int64_t>(l),
                          absl::StrCat(bias[l], " is outside -", limits.max_activation_bias, "..",
                                       limits.max_activation_bias)};
    }
  }
  return std::nullopt;
}

}  // namespace seqboat
