// The one request builder every front-end uses: a generation request as a front-end has read
// it (API-neutral) becomes the engine's request, with every rule applied once. Each
// front-end names the fields in its own API, so that an error says `stopping.max_new_tokens`
// on gRPC and `max_tokens` over HTTP for the same broken rule.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "runtime/engine/request.h"
#include "runtime/model/config.h"
#include "runtime/model/tokenizer.h"

namespace seqboat::server {

// What a client asked for, before any rule is applied. Absent optionals take the defaults.
struct GenerationRequest {
  // The prompt: a text (encoded after fairseq's start token) or token ids used as given.
  std::optional<std::string> text;
  std::optional<std::vector<int32_t>> tokens;
  std::optional<float> temperature;  // absent: 1 (0 is greedy)
  int32_t top_k = 0;
  std::optional<float> top_p;  // absent: 1
  float min_p = 0.0f;
  std::optional<float> repetition_penalty;  // absent: 1
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::optional<int32_t> max_new_tokens;  // absent: RequestRules::default_max_new_tokens
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int32_t logprobs = 0;         // alternatives per token
  bool token_logprobs = false;  // each token's own logprob, with no alternatives
  bool return_activations = false;
  int32_t prompt_logprobs = -1;  // -1: the prompt is not scored
  int32_t n = 1;                 // forks
  std::vector<std::pair<int32_t, float>> logit_bias;
  // The router's activation control: one bias for every layer (absent: the server's
  // default), or one per layer, which overrides it.
  std::optional<float> activation_bias;
  std::vector<float> layer_activation_bias;
};

// The rules of the server (the engine's among them).
struct RequestRules {
  int32_t max_stop_sequences = 16;
  int32_t max_stop_bytes = 256;
  int32_t default_max_new_tokens = 16;
  // A text prompt, refused by size before it is read.
  int64_t max_text_bytes = 256 << 10;
  float default_activation_bias = 0.0f;  // of a request that gives none
  RequestLimits engine;                  // prompt length, max_new_tokens, logprobs, sampling ranges
};

// Every field an error can name.
enum class ApiField {
  kPrompt,  // neither a text nor tokens
  kText,
  kTokens,
  kTemperature,
  kTopK,
  kTopP,
  kMinP,
  kRepetitionPenalty,
  kPresencePenalty,
  kFrequencyPenalty,
  kMaxNewTokens,
  kStop,
  kStopTokenIds,
  kLogprobs,
  kPromptLogprobs,
  kN,
  kLogitBias,
  kActivationBias,
  kLayerActivationBias,
};
// A front-end's name for each field (its path in that API's request).
using FieldNames = std::function<std::string(ApiField)>;

// Fills `params` (the seed taken as given) and `stop_sequences`; InvalidArgument whose
// message starts with the field's name and says what is wrong and what was expected.
absl::Status BuildGeneration(const GenerationRequest& request, const Tokenizer& tokenizer,
                             const ModelConfig& config, const RequestRules& rules,
                             const FieldNames& names, uint64_t seed, GenerationParams* params,
                             std::vector<std::string>* stop_sequences);

}  // namespace seqboat::server
