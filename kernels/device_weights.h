// The model's weights on the device: matrices in the backend's dtype T, everything small
// (norms, EMA coefficients, biases, q/k affine, relative bias) in fp32. One allocation.
#pragma once

#include <cuda_runtime.h>

#include <vector>

#include "absl/status/statusor.h"
#include "kernels/device_memory.h"
#include "kernels/kernel_types.h"
#include "runtime/model/model.h"

namespace seqboat::cuda {

template <typename T>
struct DeviceLayerWeights {
  DeviceNormWeights norm;         // the unit's norm (pre or post)
  const float* ema_decay;         // [N, D] q = 1 - p*a (n-major: see ema_scan.h)
  const float* ema_input_scale;   // [N, D] p*beta
  const float* ema_out_scale;     // [N, D] (see EmaCoefficients)
  const float* ema_decay_pow_t;   // [N, D] q^T, trained horizon only (else null)
  const float* ema_omega;         // [D]
  const T* hx_proj_weight;        // [2 + D, D]
  const float* hx_proj_bias;      // [2 + D]
  double router_inv_temperature;  // exp(-q_router.temp)
  const T* mx_proj_weight;        // [Z + 2H, D]
  const float* mx_proj_bias;      // [Z + 2H]
  const float* qk_gamma;          // [2, Z]
  const float* qk_beta;           // [2, Z]
  const T* h_proj_weight;         // [D, H]
  const float* h_proj_bias;       // [D]
  const float* rel_pos_bias;      // [2P - 1] simple bias, else null
  DeviceNormWeights ffn_norm;
  const T* fc1_weight;  // [F, D]
  const float* fc1_bias;
  const T* fc2_weight;  // [D, F]
  const float* fc2_bias;
};

template <typename T>
struct DeviceModelWeights {
  const T* embed;                // [V, D]
  const T* output;               // [V, D]; == embed when tied
  DeviceNormWeights embed_norm;  // kind kNone unless normalize_embedding
  DeviceNormWeights final_norm;  // kind kNone unless pre-norm (affine or not)
  std::vector<DeviceLayerWeights<T>> layers;
  size_t bytes = 0;
};

DeviceNorm ToDeviceNorm(NormKind kind);

// Converts (from the model's fp32 views) and uploads every weight; synchronous.
// `trained_truncation` > 0 adds the trained horizon's q^T coefficients.
template <typename T>
absl::StatusOr<DeviceModelWeights<T>> UploadWeights(const Model& model, int trained_truncation,
                                                    DeviceMemory* memory);

}  // namespace seqboat::cuda
