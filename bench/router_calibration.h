// GAU activation rates of random models on the CPU backend, and the per-layer router biases
// that give a wanted rate (a few probe passes over model files written by RandomModel).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/random_model.h"
#include "runtime/model/model.h"

namespace seqboat::bench {

// Random warm-up tokens, then the probe's own tokens, prefilled on a fresh one-slot CPU
// backend; only the latter are counted. The warm-up carries the state past the first
// positions, where the random model's residual stream is still settling (its spread, which
// scales every router margin, grows over the first ~2k tokens). The counted tokens cover the
// byte ids 4..V-1 equally often (in random order), so a rate measured on them is the rate
// over uniformly random tokens without sampling noise from the ids.
struct ActivationProbe {
  int warmup_tokens = 2048;
  int tokens = 512;
  uint64_t token_seed = 7;
  int num_threads = 0;  // 0 = all hardware threads
};

struct ProbeResult {
  double rate = 0.0;                // activated (token, layer) pairs / all
  std::vector<double> layer_rates;  // [L]
  // [L][tokens] the router's margin (g1 - g0) / 2 in logit units (times the temperature),
  // recovered from each decision and its confidence c = sigmoid(|g1 - g0| / tau). A token
  // activates iff its margin is > 0, and adding b to a layer's router bias adds b to every
  // margin of that layer. |margin| saturates near 8.3 tau, where c rounds to 1 in float.
  std::vector<std::vector<float>> margins;
};

absl::StatusOr<ProbeResult> RunActivationProbe(const Model& model, const ActivationProbe& probe);

struct CalibrationOptions {
  ActivationProbe probe;
  double tolerance = 0.01;  // stop once every layer's probe rate is within this of the target
  int max_passes = 5;
};

struct RouterCalibration {
  double target_rate = 0.0;
  std::vector<float> layer_biases;  // [L] the best pass's
  double probe_rate = 0.0;          // measured on the probe with layer_biases
  std::vector<double> layer_rates;  // [L] likewise
  int passes = 0;
};

// Finds per-layer router biases that make every layer activate `target_rate` (in (0, 1)) of
// the probe's tokens. Each pass writes the model with the current biases at `path`, runs the
// probe, and moves each layer's bias to the target quantile of its margins. A layer's margins
// depend on the biases below it only through the spread of the residual stream, so a pass or
// two more settles them. Leaves the best pass's model file at `path`.
absl::StatusOr<RouterCalibration> CalibrateRouterBiases(const RandomModel& random_model,
                                                        const std::string& path, double target_rate,
                                                        const CalibrationOptions& options);

}  // namespace seqboat::bench
