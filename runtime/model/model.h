// A loaded model file: config, tokenizer description, and fp32 weight views bound by name.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/config.h"
#include "runtime/model/safetensors.h"

namespace seqboat {

inline constexpr int kModelFormatVersion = 1;

// Parameters of one norm; which pointers are set depends on NormKind.
struct NormWeights {
  const float* weight = nullptr;  // [D] layernorm / rmsnorm; [1] scalenorm (its scalar)
  const float* bias = nullptr;    // [D] layernorm only
  bool affine() const { return weight != nullptr; }
};

struct LayerWeights {
  NormWeights norm;              // the unit's (pre or post) norm
  const float* ema_delta;        // [D, N]  p = sigmoid(delta)
  const float* ema_alpha;        // [D, N]  a = sigmoid(alpha)
  const float* ema_beta;         // [D, N]
  const float* ema_gamma;        // [D, N]
  const float* ema_omega;        // [D]
  const float* hx_proj_weight;   // [2 + D, D]  rows 0-1 router logits, rows 2.. skip projection
  const float* hx_proj_bias;     // [2 + D]
  const float* router_log_temp;  // [1]
  const float* mx_proj_weight;   // [Z + 2H, D]  split [z, r, v]
  const float* mx_proj_bias;     // [Z + 2H]
  const float* qk_gamma;         // [2, Z]  row 0 -> q, row 1 -> k
  const float* qk_beta;          // [2, Z]
  const float* h_proj_weight;    // [D, H]
  const float* h_proj_bias;      // [D]
  const float* rel_pos_bias;     // [2P - 1], simple bias only (else null)
  // Normalised FFN (all null when ffn_dim == 0).
  NormWeights ffn_norm;
  const float* fc1_weight;  // [F, D]
  const float* fc1_bias;    // [F]
  const float* fc2_weight;  // [D, F]
  const float* fc2_bias;    // [D]
};

struct ModelWeights {
  const float* embed;      // [V, D]
  const float* output;     // [V, D]; == embed when tied
  NormWeights embed_norm;  // unset unless normalize_embedding
  NormWeights final_norm;  // unset unless pre-norm with an affine final norm
  std::vector<LayerWeights> layers;
};

struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
  // The ModelWeights field the tensor binds to (ModelWeights::layers already sized).
  std::function<const float**(ModelWeights&)> field;
};
// Every tensor a model file of this config holds, in canonical order, and where it binds:
// the one list of tensor names (the converter, the tests and Model::Bind use it).
std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& config);

class Model {
 public:
  // Opens, validates (metadata, config, every tensor's name, dtype, shape, finiteness) and
  // binds fp32 views. F32 tensors are used in place; F16/BF16 are converted once.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& path);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const SafetensorsFile& file() const { return *file_; }
  const std::string& tokenizer_json() const { return tokenizer_json_; }
  const std::string& source_sha256() const { return source_sha256_; }
  DType stored_dtype() const { return stored_dtype_; }  // dtype of embed_tokens.weight
  int64_t parameter_count() const { return parameter_count_; }

 private:
  Model() = default;
  absl::Status Bind();

  std::unique_ptr<SafetensorsFile> file_;
  ModelConfig config_;
  ModelWeights weights_;
  std::string tokenizer_json_;
  std::string source_sha256_;
  DType stored_dtype_ = DType::kF32;
  int64_t parameter_count_ = 0;
  std::vector<std::unique_ptr<float[]>> converted_;  // fp32 copies of F16/BF16/unaligned data
};

}  // namespace seqboat
