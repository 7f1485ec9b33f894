// What a client asks the engine for, and what the engine reports back about it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "runtime/engine/request_error.h"
#include "runtime/engine/sampler.h"
#include "runtime/engine/scheduler.h"

namespace seqboat {

struct GenerationParams {
  std::vector<int32_t> prompt;  // token ids, already validated against the vocabulary
  SamplingParams sampling;
  int32_t max_new_tokens = 16;
  bool ignore_eos = false;
  int32_t top_logprobs = 0;         // alternatives reported per token (0 = none)
  bool logprobs = false;            // each token's own logprob (also on when top_logprobs > 0)
  bool return_activations = false;  // per token, which layers ran the GAU
  absl::Time deadline = absl::InfiniteFuture();
  // Prompt scoring: >= 0 reports the log-probability of every prompt token after the first,
  // with that many alternatives, through RequestSink::OnPromptLogprobs. Such a prompt runs
  // in full (a prefix-cache restore would skip positions whose logits it needs), and may ask
  // for max_new_tokens 0: scored, nothing generated.
  int32_t prompt_logprobs = -1;
  // Forks: n sequences share one prefill of the prompt, then each draws its own tokens; fork k
  // (0-based) draws with seed sampling.seed + k, so a lone request with that seed draws the
  // same tokens. Submit takes one sink per fork.
  int32_t n = 1;
  // Empty, or one finite value per layer: added to each layer's router logit 0 (the "not
  // activated" option) before the temperature (SequenceChunk::activation_bias); positive means
  // fewer GAU activations. Its prefix-cache entries are its own.
  std::vector<float> activation_bias;
};

// The limits the engine holds every request to (EngineOptions carries them).
struct RequestLimits {
  int64_t max_prompt_tokens = 8192;
  int32_t max_new_tokens_limit = 4096;
  int32_t max_top_logprobs = 20;
  int32_t max_stop_token_ids = 256;
  int32_t max_n = 16;                   // forks of one request (at most the slots)
  float max_activation_bias = 1000.0f;  // |activation bias| allowed
};

// Every rule a request must satisfy (prompt ids and length, max_new_tokens, top_logprobs,
// sampling, the activation bias), checked in that order; the first broken one, or nullopt.
std::optional<RequestError> CheckGenerationParams(const GenerationParams& params,
                                                  const RequestLimits& limits, int vocab_size,
                                                  int layers);

// kStop: the sink asked to stop (a stop sequence); kStopToken: a stop token was sampled.
enum class FinishReason { kLength, kStop, kStopToken, kEos, kCancelled, kDeadline, kError };
const char* FinishReasonName(FinishReason reason);

struct GeneratedToken {
  int32_t token = 0;
  float logprob = 0.0f;  // under the model's raw distribution, when top_logprobs > 0 (or scored)
  std::vector<TokenLogprob> top;     // when top_logprobs > 0
  std::vector<uint8_t> activations;  // [L] when return_activations
  int32_t rank = 0;  // a scored prompt token: 1 + the number of tokens the model found likelier
};

struct FinishInfo {
  FinishReason reason = FinishReason::kLength;
  std::string error;  // for kError
  int64_t prompt_tokens = 0;
  int64_t cached_prompt_tokens = 0;  // served from the prefix cache
  int64_t generated_tokens = 0;
  absl::Duration queue_time;
  absl::Duration time_to_first_token;
  absl::Duration total_time;
};

// Receives one request's events on the engine thread. Must not block.
class RequestSink {
 public:
  virtual ~RequestSink() = default;
  // Returns false to stop the request now (e.g. the text reached a stop sequence): the
  // engine then finishes it with FinishReason::kStop.
  virtual bool OnToken(const GeneratedToken& token) = 0;
  // Called exactly once, last.
  virtual void OnFinish(const FinishInfo& info) = 0;
  // With GenerationParams::prompt_logprobs >= 0: prompt tokens [position, position + size),
  // each with its log-probability given the tokens before it (position >= 1; the first prompt
  // token has none), in order, before the first OnToken. Only fork 0's sink gets them.
  virtual void OnPromptLogprobs(int64_t position, const std::vector<GeneratedToken>& tokens) {}
};

// Shared between the submitter and the engine: cancellation is a flag the engine polls
// every iteration.
struct RequestHandle {
  std::atomic<bool> cancelled{false};
  void Cancel() { cancelled.store(true, std::memory_order_relaxed); }
};

}  // namespace seqboat
