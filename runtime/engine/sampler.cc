// Sampler: logits processing and the counter-based draw.
#include "runtime/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "runtime/model/tokenizer.h"

namespace seqboat {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

absl::Status FieldError(const char* field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p, int vocab_size) {
  if (!std::isfinite(p.temperature) || p.temperature < 0.0f) {
    return FieldError("temperature", absl::StrCat(p.temperature, " is not a finite value >= 0"));
  }
  if (p.top_k < 0) return FieldError("top_k", absl::StrCat(p.top_k, " is negative (0 turns it off)"));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return FieldError("top_p", absl::StrCat(p.top_p, " is outside (0, 1]"));
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return FieldError("min_p", absl::StrCat(p.min_p, " is outside [0, 1]"));
  if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0.0f) {
    return FieldError("repetition_penalty", absl::StrCat(p.repetition_penalty, " is not a finite value > 0"));
  }
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f)) {
    return FieldError("presence_penalty", absl::StrCat(p.presence_penalty, " is outside [-2, 2]"));
  }
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f)) {
    return FieldError("frequency_penalty", absl::StrCat(p.frequency_penalty, " is outside [-2, 2]"));
  }
  for (int32_t id : p.stop_token_ids) {
    if (id < 0 || id >= vocab_size) {
      return FieldError("stop_token_ids", absl::StrCat("id ", id, " is outside 0..", vocab_size - 1));
    }
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params, int vocab_size)
    : params_(params), vocab_size_(vocab_size), stop_tokens_(params.stop_token_ids.begin(), params.stop_token_ids.end()) {}

void Sampler::ObservePrompt(absl::Span<const int32_t> prompt) { seen_.insert(prompt.begin(), prompt.end()); }

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
  adjusted_.assign(logits.begin(), logits.end());
  if (params_.repetition_penalty != 1.0f) {
    for (int32_t token : seen_) {
      float& x = adjusted_[token];
      x = x > 0.0f ? x / params_.repetition_penalty : x * params_.repetition_penalty;
    }
  }
  for (const auto& [token, count] : generated_) {
    adjusted_[token] -= params_.presence_penalty + params_.frequency_penalty * count;
  }
  // The padding id is never a model input, so it is never drawn (as fairseq's generator).
  if (kPadId < V) adjusted_[kPadId] = -std::numeric_limits<float>::infinity();
  // Greedy: the first maximum (lowest id on ties). A draw is still consumed, so that the
  // i-th draw of a request stays the i-th token whatever its temperature schedule.
  if (params_.temperature == 0.0f) {
    NextUniform();
    return static_cast<int32_t>(std::max_element(adjusted_.begin(), adjusted_.end()) - adjusted_.begin());
  }
  // Probabilities at the temperature, unnormalised (exp(x - max)).
  const float top = *std::max_element(adjusted_.begin(), adjusted_.end());
  for (float& x : adjusted_) x = std::exp((x - top) / params_.temperature);
  if ((params_.top_k <= 0 || params_.top_k >= V) && params_.top_p >= 1.0f && params_.min_p <= 0.0f) {
    // No filter: the same sums and scan as below over every id in order, without the
    // candidate list (large vocabularies spend most of their sampling time here).
    double total = 0.0;
    for (float x : adjusted_) total += x;
    const double target = NextUniform() * total;
    double cumulative = 0.0;
    for (int i = 0; i < V; ++i) {
      cumulative += adjusted_[i];
      if (target < cumulative) return i;
    }
    return V - 1;  // rounding at the very end of the mass
  }
  auto more_likely = [&](int32_t a, int32_t b) {
    return adjusted_[a] != adjusted_[b] ? adjusted_[a] > adjusted_[b] : a < b;
  };
  candidates_.resize(V);
  std::iota(candidates_.begin(), candidates_.end(), 0);
  int64_t kept = V;
  if (params_.top_k > 0 && params_.top_k < V) {
    kept = params_.top_k;
    std::partial_sort(candidates_.begin(), candidates_.begin() + kept, candidates_.end(), more_likely);
  } else if (params_.top_p < 1.0f) {
    std::sort(candidates_.begin(), candidates_.end(), more_likely);
  }
  double total = 0.0;
  for (int64_t i = 0; i < kept; ++i) total += adjusted_[candidates_[i]];
  if (params_.top_p < 1.0f) {  // smallest prefix (most likely first) holding top_p of the mass
    double mass = 0.0;
    int64_t i = 0;
    while (i < kept) {
      mass += adjusted_[candidates_[i++]];
      if (mass >= params_.top_p * total) break;
    }
    kept = i;
    total = mass;
  }
  if (params_.min_p > 0.0f) {  // relative to the most likely token (exp(0) = 1 before scaling)
    const float p_max = *std::max_element(adjusted_.begin(), adjusted_.end());
    const float threshold = params_.min_p * p_max;
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

void Sampler::TopLogprobs(absl::Span<const float> logits, int n, int32_t chosen, float* chosen_logprob,
                          std::vector<TokenLogprob>* top) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max_logit);
  const double log_normaliser = max_logit + std::log(sum);
  *chosen_logprob = static_cast<float>(logits[chosen] - log_normaliser);
  top->clear();
  if (n <= 0) return;
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  const int64_t count = std::min<int64_t>(n, logits.size());
  std::partial_sort(order.begin(), order.begin() + count, order.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  for (int64_t i = 0; i < count; ++i) {
    top->push_back({order[i], static_cast<float>(logits[order[i]] - log_normaliser)});
  }
}

}  // namespace seqboat
