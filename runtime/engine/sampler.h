// Per-request token sampling: penalties, temperature, top-k, top-p, min-p, and a
// counter-based RNG so a seeded request draws the same tokens alone or in any batch.
// The padding id is never drawn: it is never a model input.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "runtime/engine/request_error.h"

namespace seqboat {

struct SamplingParams {
  float temperature = 1.0f;         // 0 = greedy
  int32_t top_k = 0;                // 0 = off
  float top_p = 1.0f;               // nucleus mass in (0, 1]
  float min_p = 0.0f;               // drop tokens below min_p * p_max
  float repetition_penalty = 1.0f;  // > 1 discourages tokens of the prompt and the output
  float presence_penalty = 0.0f;    // subtracted once from tokens already generated
  float frequency_penalty = 0.0f;   // subtracted per occurrence in the output
  uint64_t seed = 0;
  std::vector<int32_t> stop_token_ids;
  // Added to the logits of these ids before the penalties, each in [-100, 100] (OpenAI's
  // logit_bias: -100 all but bans a token, +100 all but forces it).
  std::vector<std::pair<int32_t, float>> logit_bias;
};

// The first value out of range (every logit the sampler computes then stays finite), or
// nullopt. At most `max_stop_token_ids` stop tokens.
std::optional<RequestError> CheckSamplingParams(const SamplingParams& params, int vocab_size,
                                                int32_t max_stop_token_ids);

// repetition_penalty's range: beyond it a logit can overflow or vanish in float.
inline constexpr float kMinRepetitionPenalty = 0.01f;
inline constexpr float kMaxRepetitionPenalty = 100.0f;

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

class Sampler {
 public:
  Sampler(const SamplingParams& params, int vocab_size);

  void ObservePrompt(absl::Span<const int32_t> prompt);
  void ObserveGenerated(int32_t token);
  // Draws the next token from logits [V]. The i-th draw's uniform is a function of
  // (seed, i) only.
  int32_t Sample(absl::Span<const float> logits);
  bool IsStopToken(int32_t token) const { return stop_tokens_.contains(token); }

  // Log-softmax of the raw logits: the chosen token's logprob and the top-n alternatives,
  // most likely first (ties by id).
  static void TopLogprobs(absl::Span<const float> logits, int n, int32_t chosen,
                          float* chosen_logprob, std::vector<TokenLogprob>* top);

 private:
  double NextUniform();  // [0, 1)

  const SamplingParams params_;
  const int vocab_size_;
  absl::flat_hash_set<int32_t> seen_;                // prompt and output tokens
  absl::flat_hash_map<int32_t, int32_t> generated_;  // output token -> count
  absl::flat_hash_set<int32_t> stop_tokens_;
  uint64_t draws_ = 0;
  std::vector<float> adjusted_;      // [V] scratch: penalised logits, then probabilities
  std::vector<int32_t> candidates_;  // scratch
  std::vector<double> block_sums_;   // scratch (sampling_kernels.h)
};

}  // namespace seqboat
