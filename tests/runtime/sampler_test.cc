// Sampler: validation, greedy, the empirical distribution of every filter against an
// independently computed target distribution, seeding, penalties, logprobs.
#include "runtime/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"

namespace seqboat {
namespace {

const std::vector<float> kLogits = {1.0f, 2.5f, 0.3f, 2.5f, -1.0f, 1.7f, 0.0f, 3.1f};

void ExpectFieldError(SamplingParams params, RequestField field) {
  std::optional<RequestError> error = CheckSamplingParams(params, 8, /*max_stop_token_ids=*/4);
  ASSERT_TRUE(error.has_value()) << RequestFieldName(field);
  EXPECT_EQ(error->field, field) << RequestFieldName(field) << ": " << error->problem;
}

TEST(Sampler, ValidationNamesTheField) {
  using F = RequestField;
  EXPECT_FALSE(CheckSamplingParams({}, 8, 4).has_value());
  SamplingParams p;
  p.temperature = -0.1f;
  ExpectFieldError(p, F::kTemperature);
  p = {};
  p.temperature = NAN;
  ExpectFieldError(p, F::kTemperature);
  p = {};
  p.top_k = -1;
  ExpectFieldError(p, F::kTopK);
  p.top_k = 9;  // more than the vocabulary
  ExpectFieldError(p, F::kTopK);
  p.top_k = 8;
  EXPECT_FALSE(CheckSamplingParams(p, 8, 4).has_value());
  for (float bad : {0.0f, 1.01f, NAN}) {
    p = {};
    p.top_p = bad;
    ExpectFieldError(p, F::kTopP);
  }
  p = {};
  p.min_p = 1.5f;
  ExpectFieldError(p, F::kMinP);
  // A denormal, an overflow to inf, and finite values outside [0.01, 100].
  for (float bad :
       {0.0f, 1e-40f, 0.0099f, 100.5f, 1e38f, std::numeric_limits<float>::infinity(), NAN}) {
    p = {};
    p.repetition_penalty = bad;
    ExpectFieldError(p, F::kRepetitionPenalty);
  }
  for (float good : {kMinRepetitionPenalty, 1.3f, kMaxRepetitionPenalty}) {
    p.repetition_penalty = good;
    EXPECT_FALSE(CheckSamplingParams(p, 8, 4).has_value()) << good;
  }
  p = {};
  p.presence_penalty = 3.0f;
  ExpectFieldError(p, F::kPresencePenalty);
  p = {};
  p.frequency_penalty = -2.5f;
  ExpectFieldError(p, F::kFrequencyPenalty);
  p = {};
  p.stop_token_ids = {3, 8};
  ExpectFieldError(p, F::kStopTokenIds);
  EXPECT_EQ(CheckSamplingParams(p, 8, 4)->index, 1);
  p.stop_token_ids = {1, 2, 3, 4, 5};  // more than max_stop_token_ids
  ExpectFieldError(p, F::kStopTokenIds);
}

// Penalties past the validated range (as a caller that skipped validation would pass them)
// still leave every logit finite: no NaN probabilities, no garbage draws.
TEST(Sampler, ExtremePenaltiesKeepEveryLogitFinite) {
  // id 0 is the least likely: a NaN row made the old sampler return id 0 every time.
  const std::vector<float> logits = {-3e38f, 1.0f, 3e38f, 2.0f, -1.0f, 0.5f, 3e38f, -2.0f};
  SamplingParams p;
  p.repetition_penalty = 1e-40f;  // positive logits / 1e-40 overflow
  p.seed = 3;
  Sampler tiny(p, 8);
  tiny.ObservePrompt({0, 1, 2, 3, 4, 5, 6, 7});
  std::map<int32_t, int> counts;
  for (int i = 0; i < 400; ++i) ++counts[tiny.Sample(logits)];
  for (const auto& [id, count] : counts) {
    EXPECT_TRUE(id == 2 || id == 3 || id == 5 || id == 6)
        << "drew id " << id << " (not a positive logit)";
  }
  EXPECT_GE(counts.size(), 2u);  // the clamped maxima tie

  p.repetition_penalty = 1e38f;  // negative logits * 1e38 overflow
  const std::vector<float> negative = {-5.0f, -6.0f, -4.0f, -7.0f, -3.5f, -4.0f, -9.0f, -8.0f};
  Sampler huge(p, 8);
  huge.ObservePrompt({0, 1, 2, 3, 4, 5, 6, 7});
  counts.clear();
  for (int i = 0; i < 400; ++i) ++counts[huge.Sample(negative)];
  EXPECT_EQ(counts.count(1), 0u) << "the padding id is never drawn";
  EXPECT_GE(counts.size(), 5u);  // every logit clamps to the same finite value: a uniform draw
}

TEST(Sampler, GreedyIsArgmaxWithLowestIdOnTies) {
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler sampler(p, 8);
  EXPECT_EQ(sampler.Sample(kLogits), 7);
  std::vector<float> tie = {0.0f, 1.0f, 5.0f, 5.0f};
  Sampler tie_sampler(p, 4);
  EXPECT_EQ(tie_sampler.Sample(tie), 2);
  SamplingParams k1;
  k1.top_k = 1;
  k1.temperature = 3.0f;
  Sampler top1(k1, 8);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(top1.Sample(kLogits), 7);
}

TEST(Sampler, NeverDrawsThePaddingId) {
  // The padding id (1) is far the most likely here, yet neither greedy nor sampling takes it.
  const std::vector<float> logits = {0.0f, 30.0f, 0.5f, -1.0f};
  SamplingParams p;
  p.temperature = 0.0f;
  EXPECT_EQ(Sampler(p, 4).Sample(logits), 2);
  p.temperature = 2.0f;
  p.seed = 5;
  Sampler sampler(p, 4);
  std::vector<int> counts(4);
  for (int i = 0; i < 2000; ++i) ++counts[sampler.Sample(logits)];
  EXPECT_EQ(counts[1], 0);
  EXPECT_GT(counts[0], 0);
  EXPECT_GT(counts[2], 0);
}

// The exact target distribution, computed here independently of the sampler.
std::vector<double> Target(const SamplingParams& p, const std::vector<float>& logits) {
  const int V = logits.size();
  std::vector<double> prob(V);
  double total = 0.0;
  // The padding id (1) is never drawn: probability 0 before any filter.
  for (int i = 0; i < V; ++i) total += prob[i] = i == 1 ? 0.0 : std::exp(logits[i] / p.temperature);
  for (double& x : prob) x /= total;
  std::vector<int> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return prob[a] > prob[b]; });
  std::vector<bool> keep(V, true);
  if (p.top_k > 0) {
    for (int i = p.top_k; i < V; ++i) keep[order[i]] = false;
  }
  if (p.top_p < 1.0f) {
    double kept_mass = 0.0;
    for (int i = 0; i < V; ++i) kept_mass += keep[i] ? prob[i] : 0.0;
    double mass = 0.0;
    bool reached = false;
    for (int i : order) {
      if (!keep[i]) continue;
      if (reached) {
        keep[i] = false;
        continue;
      }
      mass += prob[i];
      reached = mass >= p.top_p * kept_mass;
    }
  }
  const double p_max = prob[order[0]];
  for (int i = 0; i < V; ++i) {
    if (prob[i] < p.min_p * p_max) keep[i] = false;
  }
  double kept_total = 0.0;
  for (int i = 0; i < V; ++i) kept_total += keep[i] ? prob[i] : 0.0;
  std::vector<double> out(V);
  for (int i = 0; i < V; ++i) out[i] = keep[i] ? prob[i] / kept_total : 0.0;
  return out;
}

void ExpectDistribution(const SamplingParams& p, const std::vector<float>& logits = kLogits,
                        int draws = 20000) {
  const int kDraws = draws;
  const std::vector<double> target = Target(p, logits);
  Sampler sampler(p, logits.size());
  std::vector<int> counts(logits.size());
  for (int i = 0; i < kDraws; ++i) ++counts[sampler.Sample(logits)];
  for (size_t t = 0; t < target.size(); ++t) {
    if (target[t] == 0.0) {
      EXPECT_EQ(counts[t], 0) << "token " << t << " must be filtered out";
      continue;
    }
    const double expected = target[t] * kDraws;
    const double sigma = std::sqrt(kDraws * target[t] * (1 - target[t]));
    EXPECT_NEAR(counts[t], expected, 5 * sigma + 1) << "token " << t;
  }
}

TEST(Sampler, DistributionsMatchTheFilteredSoftmax) {
  SamplingParams p;
  p.seed = 11;
  ExpectDistribution(p);
  p.temperature = 0.5f;
  ExpectDistribution(p);
  p.temperature = 1.3f;
  p.top_k = 3;
  ExpectDistribution(p);
  p.top_k = 0;
  p.top_p = 0.7f;
  ExpectDistribution(p);
  p.top_p = 1.0f;
  p.min_p = 0.3f;
  ExpectDistribution(p);
  p.top_k = 5;
  p.top_p = 0.9f;
  p.min_p = 0.1f;
  ExpectDistribution(p);
}

TEST(Sampler, LargeVocabularyDistributionsMatchTheFilteredSoftmax) {
  // 1100 ids span three draw blocks (sampling_kernels.h); a flat body with peaks and dips,
  // so that top_p = 0.9 needs most of them as candidates (the sort proceeds 64, 256, 1024...).
  std::vector<float> logits(1100);
  for (int i = 0; i < 1100; ++i) {
    logits[i] = 0.002f * static_cast<float>(i % 97) - (i % 7 == 0 ? 3.0f : 0.0f) +
                (i % 400 == 200 ? 4.0f : 0.0f);
  }
  SamplingParams p;
  p.seed = 21;
  ExpectDistribution(p, logits, 20000);
  p.top_p = 0.9f;
  ExpectDistribution(p, logits, 20000);
  p.top_p = 1.0f;
  p.top_k = 200;
  p.min_p = 0.5f;
  ExpectDistribution(p, logits, 20000);
  p.top_k = 0;
  p.min_p = 0.0f;
  p.temperature = 0.3f;
  p.top_p = 0.5f;
  ExpectDistribution(p, logits, 20000);
}

TEST(Sampler, TopPWithAPrefixOfThousandsOfIdsAndTiesAtItsEnd) {
  // 5000 ids in 10 tiers of equal logits: top_p = 0.63 ends inside a tier, past the 256 most
  // likely ids (the prefix is then found by its last probability; ties taken in id order).
  std::vector<float> logits(5000);
  for (int i = 0; i < 5000; ++i) logits[i] = 0.05f * static_cast<float>(i % 10);
  SamplingParams p;
  p.seed = 8;
  p.top_p = 0.63f;
  ExpectDistribution(p, logits, 10000);
  p.top_p = 0.999f;
  ExpectDistribution(p, logits, 10000);
}

TEST(Sampler, GreedyOnALargeVocabularyFindsTheFirstMaximum) {
  std::vector<float> logits(1003, -2.0f);
  logits[1] = 50.0f;  // the padding id: never
  logits[517] = 7.0f;
  logits[1002] = 7.0f;  // a tie in the tail: the lower id wins
  SamplingParams p;
  p.temperature = 0.0f;
  EXPECT_EQ(Sampler(p, 1003).Sample(logits), 517);
  logits[517] = 6.0f;
  EXPECT_EQ(Sampler(p, 1003).Sample(logits), 1002);
}

TEST(Sampler, SeedDeterminesTheSequence) {
  auto draw = [](uint64_t seed) {
    SamplingParams p;
    p.seed = seed;
    Sampler sampler(p, kLogits.size());
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(sampler.Sample(kLogits));
    return out;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(Sampler, PenaltiesAdjustLogitsAsSpecified) {
  // Vocabulary of 4 (id 1 is the padding id, never drawn), greedy: check which token wins
  // after hand-computed penalties.
  const std::vector<float> logits = {2.0f, -3.0f, 1.9f, -0.5f};
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 1.1f;  // token 0 seen: 2.0 / 1.1 = 1.818 < 1.9
  Sampler repetition(p, 4);
  repetition.ObservePrompt(std::vector<int32_t>{0});
  EXPECT_EQ(repetition.Sample(logits), 2);
  p.repetition_penalty = 1.0f;
  p.presence_penalty = 0.05f;  // token 0 generated once: 2.0 - 0.05 = 1.95 > 1.9
  Sampler presence(p, 4);
  presence.ObserveGenerated(0);
  EXPECT_EQ(presence.Sample(logits), 0);
  p.frequency_penalty = 0.04f;  // twice: 2.0 - 0.05 - 0.08 = 1.87 < 1.9
  Sampler frequency(p, 4);
  frequency.ObserveGenerated(0);
  frequency.ObserveGenerated(0);
  EXPECT_EQ(frequency.Sample(logits), 2);
  // Presence/frequency ignore prompt tokens.
  Sampler prompt_only(p, 4);
  prompt_only.ObservePrompt(std::vector<int32_t>{0, 0, 0});
  EXPECT_EQ(prompt_only.Sample(logits), 0);
  // Positive logits are divided by the penalty, negative ones multiplied: 0.2, 0.19, -5.
  SamplingParams neg;
  neg.temperature = 0.0f;
  neg.repetition_penalty = 10.0f;
  Sampler negative(neg, 4);
  negative.ObservePrompt(std::vector<int32_t>{0, 2, 3});
  EXPECT_EQ(negative.Sample(logits), 0);
}

TEST(Sampler, TopLogprobsAgainstDirectComputation) {
  double total = 0.0;
  for (float x : kLogits) total += std::exp(static_cast<double>(x));
  float chosen = 0.0f;
  std::vector<TokenLogprob> top;
  Sampler::TopLogprobs(kLogits, 3, 5, &chosen, &top);
  EXPECT_NEAR(chosen, kLogits[5] - std::log(total), 1e-6);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].token, 7);
  EXPECT_EQ(top[1].token, 1);  // ties (1 and 3) by id
  EXPECT_EQ(top[2].token, 3);
  EXPECT_NEAR(top[0].logprob, kLogits[7] - std::log(total), 1e-6);
  Sampler::TopLogprobs(kLogits, 0, 7, &chosen, &top);
  EXPECT_TRUE(top.empty());
}

TEST(Sampler, TopLogprobsOnALargeVocabulary) {
  std::vector<float> logits(3001);
  for (int i = 0; i < 3001; ++i) logits[i] = 0.37f * static_cast<float>((i * 7919) % 101) - 20.0f;
  logits[2500] = logits[17];  // a tie among the most likely: the lower id first
  double total = 0.0;
  for (float x : logits) total += std::exp(static_cast<double>(x));
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  float chosen = 0.0f;
  std::vector<TokenLogprob> top;
  Sampler::TopLogprobs(logits, 20, 1234, &chosen, &top);
  EXPECT_NEAR(chosen, logits[1234] - std::log(total), 1e-5);
  ASSERT_EQ(top.size(), 20u);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(top[i].token, order[i]) << i;
    EXPECT_NEAR(top[i].logprob, logits[order[i]] - std::log(total), 1e-5) << i;
  }
}

TEST(Sampler, StopTokens) {
  SamplingParams p;
  p.stop_token_ids = {4, 6};
  Sampler sampler(p, 8);
  EXPECT_TRUE(sampler.IsStopToken(4));
  EXPECT_FALSE(sampler.IsStopToken(5));
}

}  // namespace
}  // namespace seqboat
