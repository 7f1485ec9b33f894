// Router-bias calibration: per pass, write a model file, load it, prefill the probe, and move
// every layer's bias to the quantile of its router margins that gives the target rate.
#include "bench/router_calibration.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/util/status_macros.h"

namespace seqboat::bench {
namespace {

// The probe's tokens: ids 4..V-1 repeated to `count`, shuffled (Fisher-Yates).
std::vector<int32_t> BalancedTokens(int64_t count, int vocab_size, uint64_t seed) {
  if (vocab_size <= 4) return RandomTokens(count, vocab_size, seed);  // specials only
  std::vector<int32_t> tokens(count);
  for (int64_t i = 0; i < count; ++i) tokens[i] = 4 + static_cast<int32_t>(i % (vocab_size - 4));
  Rng rng(seed ^ 0x70726f6265ull);
  for (int64_t i = count - 1; i > 0; --i) {
    std::swap(tokens[i], tokens[rng.Next() % static_cast<uint64_t>(i + 1)]);
  }
  return tokens;
}

// The bias shift that makes `target` of `margins` positive (ties count as not activated):
// the midpoint between the margins just below and just above the cut.
float QuantileShift(std::vector<float> margins, double target) {
  std::sort(margins.begin(), margins.end());
  const int64_t n = margins.size();
  const int64_t active = std::clamp<int64_t>(std::llround(target * n), 0, n);
  if (active == 0) return -margins.back() - 0.5f;
  if (active == n) return -margins.front() + 0.5f;
  return -0.5f * (margins[n - active - 1] + margins[n - active]);
}

}  // namespace

absl::StatusOr<ProbeResult> RunActivationProbe(const Model& model, const ActivationProbe& probe) {
  if (probe.tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("ActivationProbe: tokens is ", probe.tokens, "; expected >= 1"));
  }
  const ModelConfig& config = model.config();
  const int L = config.layers;
  CpuBackendOptions options;
  options.num_slots = 1;
  options.num_threads = probe.num_threads;
  ASSIGN_OR_RETURN(std::unique_ptr<CpuBackend> backend, CpuBackend::Create(model, options));
  std::vector<float> logits(config.vocab_size);
  if (probe.warmup_tokens > 0) {
    const std::vector<int32_t> warmup =
        RandomTokens(probe.warmup_tokens, config.vocab_size, probe.token_seed + 1);
    const SequenceChunk chunk{0, warmup, false};
    ForwardOutputs out;
    out.logits = absl::MakeSpan(logits);
    RETURN_IF_ERROR(backend->Forward({&chunk, 1}, out));
  }
  const std::vector<int32_t> tokens =
      BalancedTokens(probe.tokens, config.vocab_size, probe.token_seed);
  std::vector<uint8_t> activations(tokens.size() * L);
  std::vector<float> confidences(tokens.size() * L);
  const SequenceChunk chunk{0, tokens, false};
  ForwardOutputs out;
  out.logits = absl::MakeSpan(logits);
  out.activations = absl::MakeSpan(activations);
  out.confidences = absl::MakeSpan(confidences);
  RETURN_IF_ERROR(backend->Forward({&chunk, 1}, out));

  ProbeResult result;
  result.layer_rates.assign(L, 0.0);
  result.margins.assign(L, std::vector<float>(tokens.size()));
  constexpr double kMaxConfidence = 1.0 - 0x1.0p-24;  // the largest float below 1
  int64_t activated = 0;
  for (int l = 0; l < L; ++l) {
    const double temperature =
        std::exp(static_cast<double>(model.weights().layers[l].router_log_temp[0]));
    for (size_t t = 0; t < tokens.size(); ++t) {
      const bool active = activations[t * L + l] != 0;
      const double c = std::clamp<double>(confidences[t * L + l], 0.5, kMaxConfidence);
      const double margin = 0.5 * temperature * std::log(c / (1.0 - c));
      result.margins[l][t] = static_cast<float>(active ? margin : -margin);
      activated += active;
      result.layer_rates[l] += active;
    }
    result.layer_rates[l] /= tokens.size();
  }
  result.rate = L > 0 ? static_cast<double>(activated) / (tokens.size() * L) : 0.0;
  return result;
}

absl::StatusOr<RouterCalibration> CalibrateRouterBiases(const RandomModel& random_model,
                                                        const std::string& path, double target_rate,
                                                        const CalibrationOptions& options) {
  if (!(target_rate > 0.0 && target_rate < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CalibrateRouterBiases: target_rate ", target_rate,
        " is outside (0, 1); rates 0 and 1 need no search (use a huge negative/positive bias)"));
  }
  if (options.max_passes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("CalibrateRouterBiases: max_passes is ", options.max_passes));
  }
  const int L = random_model.config().layers;
  std::vector<float> biases(L, 0.0f), last_written;
  RouterCalibration best;
  best.target_rate = target_rate;
  double best_error = 2.0;
  for (int pass = 0; pass < options.max_passes; ++pass) {
    RETURN_IF_ERROR(random_model.Write(path, biases));
    last_written = biases;
    ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Load(path));
    ASSIGN_OR_RETURN(ProbeResult probe, RunActivationProbe(*model, options.probe));
    double error = 0.0;
    for (double rate : probe.layer_rates) error = std::max(error, std::abs(rate - target_rate));
    best.passes = pass + 1;
    if (error < best_error) {
      best_error = error;
      best.layer_biases = biases;
      best.probe_rate = probe.rate;
      best.layer_rates = probe.layer_rates;
    }
    if (error <= options.tolerance) break;
    for (int l = 0; l < L; ++l) biases[l] += QuantileShift(probe.margins[l], target_rate);
  }
  if (best.layer_biases != last_written)
    RETURN_IF_ERROR(random_model.Write(path, best.layer_biases));
  return best;
}

}  // namespace seqboat::bench
