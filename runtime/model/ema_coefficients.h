// The MD-EMA coefficients of one layer, derived once from its delta/alpha/beta/gamma (in
// double; MODEL.md, "MD-EMA"). Both backends start from these: the CPU in this [D, N]
// layout, the CUDA backend transposed to [N, D] for its kernels.
#pragma once

#include <vector>

#include "runtime/model/model.h"

namespace seqboat {

struct EmaCoefficients {
  std::vector<float> decay;        // [D, N] q = 1 - p*a
  std::vector<float> input_scale;  // [D, N] p*beta: exact state gains p*beta*u
  std::vector<float>
      out_scale;  // [D, N] gamma*sqrt(1/N) (exact) or p*beta*gamma*sqrt(1/N) (trained)
  std::vector<float> decay_pow_t;  // [D, N] q^T (trained horizon only)
};

// `trained`: the truncated horizon of T taps (MODEL.md, "EMA horizon").
EmaCoefficients MakeEmaCoefficients(const LayerWeights& layer, int D, int N, bool trained, int T);

}  // namespace seqboat
