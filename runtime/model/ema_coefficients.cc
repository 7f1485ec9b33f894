// MD-EMA coefficients from a layer's trained parameters.
#include "runtime/model/ema_coefficients.h"

#include <cmath>

namespace seqboat {

EmaCoefficients MakeEmaCoefficients(const LayerWeights& layer, int D, int N, bool trained, int T) {
  EmaCoefficients ema;
  const size_t size = static_cast<size_t>(D) * N;
  ema.decay.resize(size);
  ema.input_scale.resize(size);
  ema.out_scale.resize(size);
  if (trained) ema.decay_pow_t.resize(size);
  const double scale = std::sqrt(1.0 / N);
  for (size_t i = 0; i < size; ++i) {
    const double p = 1.0 / (1.0 + std::exp(-static_cast<double>(layer.ema_delta[i])));
    const double a = 1.0 / (1.0 + std::exp(-static_cast<double>(layer.ema_alpha[i])));
    const double q = 1.0 - p * a;
    const double in = p * layer.ema_beta[i];
    const double out = layer.ema_gamma[i] * scale;
    ema.decay[i] = static_cast<float>(q);
    ema.input_scale[i] = static_cast<float>(in);
    ema.out_scale[i] = static_cast<float>(trained ? in * out : out);
    if (trained) ema.decay_pow_t[i] = static_cast<float>(std::pow(q, T));
  }
  return ema;
}

}  // namespace seqboat
