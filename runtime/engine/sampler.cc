// Sampler: logits processing and the counter-based draw.
#include "runtime/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "runtime/engine/sampling_kernels.h"
#include "runtime/model/tokenizer.h"

namespace seqboat {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

RequestError FieldError(RequestField field, std::string problem, int64_t index = -1) {
  return RequestError{field, index, std::move(problem)};
}

}  // namespace

std::optional<RequestError> CheckSamplingParams(const SamplingParams& p, int vocab_size,
                                                int32_t max_stop_token_ids) {
  using F = RequestField;
  if (!std::isfinite(p.temperature) || p.temperature < 0.0f) {
    return FieldError(F::kTemperature, absl::StrCat(p.temperature, " is not a finite value >= 0"));
  }
  if (p.top_k < 0)
    return FieldError(F::kTopK, absl::StrCat(p.top_k, " is negative (0 turns it off)"));
  if (p.top_k > vocab_size) {
    return FieldError(F::kTopK, absl::StrCat(p.top_k, " exceeds the vocabulary of ", vocab_size,
                                             " tokens (0 turns it off)"));
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    return FieldError(F::kTopP, absl::StrCat(p.top_p, " is outside (0, 1]"));
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f))
    return FieldError(F::kMinP, absl::StrCat(p.min_p, " is outside [0, 1]"));
  if (!(p.repetition_penalty >= kMinRepetitionPenalty &&
        p.repetition_penalty <= kMaxRepetitionPenalty)) {
    return FieldError(F::kRepetitionPenalty,
                      absl::StrCat(p.repetition_penalty, " is outside [", kMinRepetitionPenalty,
                                   ", ", kMaxRepetitionPenalty, "] (1 turns it off)"));
  }
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f)) {
    return FieldError(F::kPresencePenalty, absl::StrCat(p.presence_penalty, " is outside [-2, 2]"));
  }
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f)) {
    return FieldError(F::kFrequencyPenalty,
                      absl::StrCat(p.frequency_penalty, " is outside [-2, 2]"));
  }
  for (size_t i = 0; i < p.logit_bias.size(); ++i) {
    const auto& [id, bias] = p.logit_bias[i];
    if (id < 0 || id >= vocab_size) {
      return FieldError(F::kLogitBias,
                        absl::StrCat("id ", id, " is outside the vocabulary 0..", vocab_size - 1),
                        static_cast<int64_t>(i));
    }
    if (!(bias >= -100.0f && bias <= 100.0f)) {
      return FieldError(F::kLogitBias,
                        absl::StrCat("bias ", bias, " of id ", id, " is outside [-100, 100]"),
                        static_cast<int64_t>(i));
    }
  }
  if (static_cast<int64_t>(p.stop_token_ids.size()) > max_stop_token_ids) {
    return FieldError(F::kStopTokenIds, absl::StrCat(p.stop_token_ids.size(),
                                                     " stop tokens; at most ", max_stop_token_ids));
  }
  for (size_t i = 0; i < p.stop_token_ids.size(); ++i) {
    const int32_t id = p.stop_token_ids[i];
    if (id < 0 || id >= vocab_size) {
      return FieldError(F::kStopTokenIds,
                        absl::StrCat("id ", id, " is outside the vocabulary 0..", vocab_size - 1),
                        static_cast<int64_t>(i));
    }
  }
  return std::nullopt;
}

Sampler::Sampler(const SamplingParams& params, int vocab_size)
    : params_(params),
      vocab_size_(vocab_size),
      stop_tokens_(params.stop_token_ids.begin(), params.stop_token_ids.end()) {}

void Sampler::ObservePrompt(absl::Span<const int32_t> prompt) {
  seen_.insert(prompt.begin(), prompt.end());
}

void Sampler::ObserveGenerated(int32_t token) {
  seen_.insert(token);
  ++generated_[token];
}

double Sampler::NextUniform() {
  const uint64_t bits = SplitMix64(params_.seed ^ SplitMix64(draws_++));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

int32_t Sampler::Sample(absl::Span<const float> logits) {
  const int V = vocab_size_;
  // The padding id is never a model input, so it is never drawn (as fairseq's generator).
  const int64_t pad = kPadId < V ? kPadId : -1;
  // Penalties work on a copy; without them the row is read in place.
  const bool penalised = !params_.logit_bias.empty() || params_.repetition_penalty != 1.0f ||
                         (!generated_.empty() &&
                          (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f));
  const float* row = logits.data();
  if (penalised) {
    adjusted_.assign(logits.begin(), logits.end());
    // Every penalised logit stays finite: validation keeps the penalties in range, and the
    // clamp keeps an extreme logit from overflowing into inf (then NaN probabilities).
    constexpr float kLargest = std::numeric_limits<float>::max();
    for (const auto& [token, bias] : params_.logit_bias) {
      adjusted_[token] = std::clamp(adjusted_[token] + bias, -kLargest, kLargest);
    }
    if (params_.repetition_penalty != 1.0f) {
      for (int32_t token : seen_) {
        float& x = adjusted_[token];
        x = std::clamp(x > 0.0f ? x / params_.repetition_penalty : x * params_.repetition_penalty,
                       -kLargest, kLargest);
      }
    }
    for (const auto& [token, count] : generated_) {
      float& x = adjusted_[token];
      x = std::clamp(x - (params_.presence_penalty + params_.frequency_penalty * count), -kLargest,
                     kLargest);
    }
    row = adjusted_.data();
  }
  const float top = RowMax(row, V, pad);
  // Greedy: the first maximum (lowest id on ties). A draw is still consumed, so that the
  // i-th draw of a request stays the i-th token whatever its temperature schedule.
  if (params_.temperature == 0.0f) {
    NextUniform();
    const int64_t best = FirstIndexOf(row, V, top, pad);
    return static_cast<int32_t>(best >= 0 ? best
                                          : (pad == 0 ? 1 : 0));  // no finite maximum: any id
  }
  // Probabilities at the temperature, unnormalised: exp((x - max) / T), the maximum's is 1.
  adjusted_.resize(V);
  ExpShifted(row, V, top, params_.temperature, adjusted_.data());
  if (pad >= 0) adjusted_[pad] = 0.0f;
  if ((params_.top_k <= 0 || params_.top_k >= V) && params_.top_p >= 1.0f &&
      params_.min_p <= 0.0f) {
    // No filter: every id in order, through block sums.
    const double total = BlockSums(adjusted_.data(), V, &block_sums_);
    return static_cast<int32_t>(
        DrawFromBlocks(adjusted_.data(), V, block_sums_, NextUniform() * total));
  }
  int64_t kept = V;
  double total = 0.0;
  if (params_.top_k > 0 && params_.top_k < V) {
    kept = params_.top_k;
    MostLikelyIds(adjusted_.data(), V, kept, &candidates_);
    for (int64_t i = 0; i < kept; ++i) total += adjusted_[candidates_[i]];
  } else {
    total = BlockSums(adjusted_.data(), V, &block_sums_);
    if (params_.top_p >= 1.0f) {  // min_p alone: every id, in id order
      candidates_.resize(V);
      std::iota(candidates_.begin(), candidates_.end(), 0);
    }
  }
  if (params_.top_p < 1.0f) {  // smallest prefix (most likely first) holding top_p of the mass
    const double wanted = params_.top_p * total;
    double mass = 0.0;
    int64_t i = 0;
    if (kept < V) {  // after top_k: the kept ids are in order already
      while (i < kept) {
        mass += adjusted_[candidates_[i++]];
        if (mass >= wanted) break;
      }
    } else {
      // The 64 or 256 most likely ids, as far as the prefix needs...
      for (int64_t ordered = 64; ordered <= 256 && ordered < V && mass < wanted; ordered *= 4) {
        MostLikelyIds(adjusted_.data(), V, ordered, &candidates_);
        while (i < ordered) {
          mass += adjusted_[candidates_[i++]];
          if (mass >= wanted) break;
        }
      }
      // ... else the prefix is found by its last probability instead of sorting most of the
      // vocabulary: t = the largest value whose ids at or above it hold `wanted` (bisection on
      // the float's bits; positive floats order as their bits). Every id above t is in, and
      // the ids at t in id order until the mass is reached. Those ids are drawn in id order:
      // the same distribution as the sorted prefix.
      if (mass < wanted && i < V) {
        // MassAtLeast(0) = total >= wanted; above the last id taken so far, less than wanted.
        uint32_t low = 0, high = 0x3f800001u;
        if (i > 0) std::memcpy(&high, &adjusted_[candidates_[i - 1]], sizeof(high));
        high += 1;
        while (high - low > 1) {
          const uint32_t middle = low + (high - low) / 2;
          float t;
          std::memcpy(&t, &middle, sizeof(t));
          (MassAtLeast(adjusted_.data(), V, t) >= wanted ? low : high) = middle;
        }
        float threshold;
        std::memcpy(&threshold, &low, sizeof(threshold));
        candidates_.clear();
        mass = 0.0;
        for (int32_t id = 0; id < V; ++id) {
          if (adjusted_[id] > threshold) {
            candidates_.push_back(id);
            mass += adjusted_[id];
          }
        }
        for (int32_t id = 0; id < V && mass < wanted; ++id) {
          if (adjusted_[id] == threshold && threshold > 0.0f) {
            candidates_.push_back(id);
            mass += adjusted_[id];
          }
        }
        i = static_cast<int64_t>(candidates_.size());
      }
    }
    kept = i;
    total = mass;
  }
  if (params_.min_p > 0.0f) {  // relative to the most likely token (1 after the shift)
    const float threshold = params_.min_p * RowMax(adjusted_.data(), V, -1);
    int64_t write = 0;
    total = 0.0;
    for (int64_t i = 0; i < kept; ++i) {
      if (adjusted_[candidates_[i]] >= threshold) {
        candidates_[write++] = candidates_[i];
        total += adjusted_[candidates_[i]];
      }
    }
    kept = write;
  }
  const double target = NextUniform() * total;
  double cumulative = 0.0;
  for (int64_t i = 0; i < kept; ++i) {
    cumulative += adjusted_[candidates_[i]];
    if (target < cumulative) return candidates_[i];
  }
  return candidates_[kept - 1];  // rounding at the very end of the mass
}

void Sampler::TopLogprobs(absl::Span<const float> logits, int n, int32_t chosen,
                          float* chosen_logprob, std::vector<TokenLogprob>* top) {
  const int64_t V = static_cast<int64_t>(logits.size());
  // log(sum exp(x)) = max + log(sum exp(x - max)), the sum through the sampling loops.
  thread_local std::vector<float> weights;
  thread_local std::vector<double> block_sums;
  const float max_logit = RowMax(logits.data(), V, -1);
  weights.resize(V);
  ExpShifted(logits.data(), V, max_logit, 1.0f, weights.data());
  const double log_normaliser = max_logit + std::log(BlockSums(weights.data(), V, &block_sums));
  *chosen_logprob = static_cast<float>(logits[chosen] - log_normaliser);
  top->clear();
  if (n <= 0) return;
  thread_local std::vector<int32_t> best;
  MostLikelyIds(logits.data(), V, std::min<int64_t>(n, V), &best);
  for (int32_t id : best) top->push_back({id, static_cast<float>(logits[id] - log_normaliser)});
}

}  // namespace seqboat
