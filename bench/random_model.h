// Random-weight SeqBoat model files for benchmarks: valid model files (docs/MODEL_FILE.md) whose
// router rows are arranged so that one scalar, the router bias, sets the GAU activation rate.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/model/config.h"
#include "runtime/model/model.h"

namespace seqboat::bench {

// The paper's enwik8 model (arch slag_lm_enwik8_base_v2; MODEL.md): L=14, D=616, Z=128,
// H=1232, N=16, w=1024, V=260 bytes, rotary, softmax, layernorm pre-norm, tied embeddings,
// non-affine final norm, no FFN, T=2048.
ModelConfig PaperEnwik8Config();

// A small deterministic generator (SplitMix64 with Box-Muller normals), so that a seed gives
// the same model on every platform, unlike std::normal_distribution.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next();
  double Uniform();  // [0, 1)
  double Normal();   // N(0, 1)

 private:
  uint64_t state_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

// `count` ids drawn uniformly from the symbols of a byte vocabulary (ids 4..V-1), never the
// padding id; for a vocabulary of 4 or fewer ids, from {0, 2, 3}.
std::vector<int32_t> RandomTokens(int64_t count, int vocab_size, uint64_t seed);

// How the router rows (rows 0 and 1 of each layer's hx_proj) are arranged. In both styles
// row 0 = -row 1 and the router bias b is added to row 1's bias and subtracted from row 0's,
// so the logit difference is g1 - g0 = 2 (row1 . mx + base + b) and the activation rate grows
// monotonically with b, from 0 (b -> -inf) to 1 (b -> +inf).
enum class RouterStyle {
  // Controlled rates. Layer l's router reads one channel c_l of the residual stream alone.
  // The embedding puts in c_l a value drawn for each (token id, layer) uniformly from
  // [4, 12], and no layer writes c_l (its rows of hx_proj, h_proj and fc2 are zero), so a
  // token activates layer l iff its value passes a threshold that b moves. Decisions are
  // independent across tokens and layers, steady over positions, and alike across layers.
  kTokenChannel,
  // The random network's own routing: row 1 ~ N(0, 1/D) over every channel (made orthogonal
  // to the all-ones vector, so the common mean of SiLU outputs does not tilt it), base 0.
  // Decisions follow the network's slow internal dynamics: rates differ between layers and
  // swing over hundreds of tokens. Its rate at b = 0 is the "natural" rate.
  kDense,
};

struct RandomModelOptions {
  RouterStyle router = RouterStyle::kTokenChannel;
};

// The weights of one random model, drawn once and written as often as needed with different
// router biases (calibration writes a file per bisection step).
class RandomModel {
 public:
  static absl::StatusOr<std::unique_ptr<RandomModel>> Generate(
      const ModelConfig& config, uint64_t seed, const RandomModelOptions& options = {});

  const ModelConfig& config() const { return config_; }
  uint64_t seed() const { return seed_; }
  int64_t parameter_count() const;

  // Writes an F32 model file with `router_bias` added to every layer's router row 1 bias and
  // subtracted from row 0's.
  absl::Status Write(const std::string& path, float router_bias) const;
  // The same with one bias per layer.
  absl::Status Write(const std::string& path, absl::Span<const float> layer_biases) const;

 private:
  struct Tensor {
    ExpectedTensor spec;
    std::vector<float> values;
  };
  RandomModel(const ModelConfig& config, uint64_t seed) : config_(config), seed_(seed) {}
  std::vector<float>& Values(const std::string& name);

  ModelConfig config_;
  uint64_t seed_;
  std::vector<Tensor> tensors_;          // in ExpectedTensors order
  std::map<std::string, size_t> index_;  // name -> position in tensors_
};

// Generates and writes in one call (see RandomModel).
absl::Status WriteRandomModel(const std::string& path, const ModelConfig& config, uint64_t seed,
                              float router_bias, const RandomModelOptions& options = {});

// The tokenizer metadata of a random model: byte style, symbols "<s>", "<pad>", "</s>",
// "<unk>", "0", "1", ... filling the vocabulary ("word" style past 256 byte symbols).
std::string RandomModelTokenizerJson(int vocab_size);

}  // namespace seqboat::bench
