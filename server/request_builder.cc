// BuildGeneration: the prompt, the defaults, the engine's rules and the stop sequences.
#include "server/request_builder.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/util/utf8.h"

namespace seqboat::server {
namespace {

ApiField ToApiField(RequestField field) {
  switch (field) {
    case RequestField::kPrompt: return ApiField::kPrompt;
    case RequestField::kMaxNewTokens: return ApiField::kMaxNewTokens;
    case RequestField::kTopLogprobs: return ApiField::kLogprobs;
    case RequestField::kTemperature: return ApiField::kTemperature;
    case RequestField::kTopK: return ApiField::kTopK;
    case RequestField::kTopP: return ApiField::kTopP;
    case RequestField::kMinP: return ApiField::kMinP;
    case RequestField::kRepetitionPenalty: return ApiField::kRepetitionPenalty;
    case RequestField::kPresencePenalty: return ApiField::kPresencePenalty;
    case RequestField::kFrequencyPenalty: return ApiField::kFrequencyPenalty;
    case RequestField::kStopTokenIds: return ApiField::kStopTokenIds;
    case RequestField::kPromptLogprobs: return ApiField::kPromptLogprobs;
    case RequestField::kN: return ApiField::kN;
    case RequestField::kLogitBias: return ApiField::kLogitBias;
    case RequestField::kActivationBias: return ApiField::kActivationBias;
  }
  return ApiField::kPrompt;
}

absl::Status Invalid(const FieldNames& names, ApiField field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(names(field), ": ", problem));
}

}  // namespace

absl::Status BuildGeneration(const GenerationRequest& request, const Tokenizer& tokenizer,
                             const ModelConfig& config, const RequestRules& rules,
                             const FieldNames& names, uint64_t seed, GenerationParams* params,
                             std::vector<std::string>* stop_sequences) {
  if (request.text.has_value()) {
    const std::string& text = *request.text;
    if (text.empty()) return Invalid(names, ApiField::kText, "empty; give a prompt");
    if (static_cast<int64_t>(text.size()) > rules.max_text_bytes) {
      return Invalid(names, ApiField::kText,
                     absl::StrCat(text.size(), " bytes; at most ", rules.max_text_bytes));
    }
    absl::StatusOr<std::vector<int32_t>> ids =
        tokenizer.EncodePrompt(text, rules.engine.max_prompt_tokens);
    if (!ids.ok()) return Invalid(names, ApiField::kText, ids.status().message());
    params->prompt = *std::move(ids);
  } else if (request.tokens.has_value()) {
    if (request.tokens->empty()) {
      return Invalid(names, ApiField::kTokens, "empty; give at least one token id");
    }
    params->prompt = *request.tokens;
  } else {
    return Invalid(names, ApiField::kPrompt, "give a text or token ids");
  }

  SamplingParams& s = params->sampling;
  s.temperature = request.temperature.value_or(1.0f);
  s.top_k = request.top_k;
  s.top_p = request.top_p.value_or(1.0f);
  s.min_p = request.min_p;
  s.repetition_penalty = request.repetition_penalty.value_or(1.0f);
  s.presence_penalty = request.presence_penalty;
  s.frequency_penalty = request.frequency_penalty;
  s.seed = seed;
  s.stop_token_ids = request.stop_token_ids;
  s.logit_bias = request.logit_bias;
  params->max_new_tokens = request.max_new_tokens.value_or(rules.default_max_new_tokens);
  params->ignore_eos = request.ignore_eos;
  params->top_logprobs = request.logprobs;
  params->logprobs = request.token_logprobs || request.logprobs > 0;
  params->return_activations = request.return_activations;
  params->prompt_logprobs = request.prompt_logprobs;
  params->n = request.n;
  // The per-layer list, or the one value (the request's or the default) for every layer.
  const bool per_layer = !request.layer_activation_bias.empty();
  if (per_layer) {
    params->activation_bias = request.layer_activation_bias;
  } else {
    params->activation_bias.assign(config.layers,
                                   request.activation_bias.value_or(rules.default_activation_bias));
  }
  if (std::optional<RequestError> error =
          CheckGenerationParams(*params, rules.engine, config.vocab_size, config.layers)) {
    ApiField field = ToApiField(error->field);
    if (error->field == RequestField::kPrompt)
      field = request.text.has_value() ? ApiField::kText : ApiField::kTokens;
    if (error->field == RequestField::kActivationBias) {
      if (per_layer) {
        field = ApiField::kLayerActivationBias;
      } else {
        error->index = -1;  // one value, not a list
      }
    }
    return InvalidField(names(field), *error);
  }
  // No bias is the model's own routing: the same batches, cache entries and arithmetic.
  if (std::all_of(params->activation_bias.begin(), params->activation_bias.end(),
                  [](float b) { return b == 0.0f; })) {
    params->activation_bias.clear();
  }

  if (static_cast<int>(request.stop.size()) > rules.max_stop_sequences) {
    return Invalid(
        names, ApiField::kStop,
        absl::StrCat(request.stop.size(), " stop sequences; at most ", rules.max_stop_sequences));
  }
  for (size_t i = 0; i < request.stop.size(); ++i) {
    const std::string& stop = request.stop[i];
    const std::string name = absl::StrCat(names(ApiField::kStop), "[", i, "]");
    if (stop.empty() || static_cast<int>(stop.size()) > rules.max_stop_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": ", stop.size(), " bytes; expected 1..", rules.max_stop_bytes));
    }
    if (!IsValidUtf8(stop))
      return absl::InvalidArgumentError(absl::StrCat(name, ": not valid UTF-8"));
    stop_sequences->push_back(stop);
  }
  return absl::OkStatus();
}

}  // namespace seqboat::server
