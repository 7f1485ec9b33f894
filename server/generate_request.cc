#include "server/generate_request.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace seqboat::server {

namespace v1 = ::seqboat::v1;

std::string GrpcFieldPath(ApiField field) {
  switch (field) {
    case ApiField::kPrompt: return "prompt";
    case ApiField::kText: return "text";
    case ApiField::kTokens: return "tokens.ids";
    case ApiField::kTemperature: return "sampling.temperature";
    case ApiField::kTopK: return "sampling.top_k";
    case ApiField::kTopP: return "sampling.top_p";
    case ApiField::kMinP: return "sampling.min_p";
    case ApiField::kRepetitionPenalty: return "sampling.repetition_penalty";
    case ApiField::kPresencePenalty: return "sampling.presence_penalty";
    case ApiField::kFrequencyPenalty: return "sampling.frequency_penalty";
    case ApiField::kMaxNewTokens: return "stopping.max_new_tokens";
    case ApiField::kStop: return "stopping.stop";
    case ApiField::kStopTokenIds: return "stopping.stop_token_ids";
    case ApiField::kLogprobs: return "logprobs";
    case ApiField::kPromptLogprobs: return "prompt_logprobs";
    case ApiField::kN: return "n";
    case ApiField::kLogitBias: return "sampling.logit_bias";
    case ApiField::kActivationBias: return "routing.activation_bias";
    case ApiField::kLayerActivationBias: return "routing.layer_activation_bias";
  }
  return "?";
}

GenerationRequest FromProto(const v1::GenerateRequest& r) {
  GenerationRequest out;
  if (r.has_text()) out.text = r.text();
  if (r.has_tokens()) out.tokens.emplace(r.tokens().ids().begin(), r.tokens().ids().end());
  const v1::SamplingParams& s = r.sampling();
  if (s.has_temperature()) out.temperature = s.temperature();
  out.top_k = s.top_k();
  if (s.has_top_p()) out.top_p = s.top_p();
  out.min_p = s.min_p();
  if (s.has_repetition_penalty()) out.repetition_penalty = s.repetition_penalty();
  out.presence_penalty = s.presence_penalty();
  out.frequency_penalty = s.frequency_penalty();
  const v1::StoppingParams& stopping = r.stopping();
  if (stopping.has_max_new_tokens()) out.max_new_tokens = stopping.max_new_tokens();
  out.stop.assign(stopping.stop().begin(), stopping.stop().end());
  out.stop_token_ids.assign(stopping.stop_token_ids().begin(), stopping.stop_token_ids().end());
  out.ignore_eos = stopping.ignore_eos();
  out.logprobs = r.logprobs();
  out.return_activations = r.return_activations();
  out.n = r.n() == 0 ? 1 : r.n();
  if (r.has_prompt_logprobs()) out.prompt_logprobs = r.prompt_logprobs();
  // In id order: the same request draws the same tokens whatever the map's order.
  out.logit_bias.assign(s.logit_bias().begin(), s.logit_bias().end());
  std::sort(out.logit_bias.begin(), out.logit_bias.end());
  if (r.routing().has_activation_bias()) out.activation_bias = r.routing().activation_bias();
  out.layer_activation_bias.assign(r.routing().layer_activation_bias().begin(),
                                   r.routing().layer_activation_bias().end());
  return out;
}

absl::Status BuildGenerationParams(const v1::GenerateRequest& request, const Tokenizer& tokenizer,
                                   const ModelConfig& config, const RequestRules& rules,
                                   uint64_t seed, GenerationParams* params,
                                   std::vector<std::string>* stop_sequences) {
  if (request.request_id().size() > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("request_id: ", request.request_id().size(), " bytes; at most 256"));
  }
  return BuildGeneration(FromProto(request), tokenizer, config, rules, GrpcFieldPath, seed, params,
                         stop_sequences);
}

}  // namespace seqboat::server
