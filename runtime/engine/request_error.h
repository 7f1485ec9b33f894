// What is wrong with a request, said once by the engine's rules and named by each front-end
// in its own API: the engine says kMaxNewTokens, gRPC says "stopping.max_new_tokens", the
// HTTP API says "max_tokens".
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace seqboat {

enum class RequestField {
  kPrompt,
  kMaxNewTokens,
  kTopLogprobs,
  kTemperature,
  kTopK,
  kTopP,
  kMinP,
  kRepetitionPenalty,
  kPresencePenalty,
  kFrequencyPenalty,
  kStopTokenIds,
  kPromptLogprobs,
  kN,
  kLogitBias,
  kActivationBias,
};

// The field's name in GenerationParams / SamplingParams ("max_new_tokens", "top_p").
const char* RequestFieldName(RequestField field);

struct RequestError {
  RequestField field;
  int64_t index = -1;   // the element of a list field at fault, or -1
  std::string problem;  // what is wrong and what was expected, without the field's name
};

// InvalidArgument "name[index]: problem", with `name` as given (a front-end's own path).
absl::Status InvalidField(const std::string& name, const RequestError& error);
// The same with the engine's own names (RequestFieldName).
absl::Status InvalidField(const RequestError& error);

}  // namespace seqboat
