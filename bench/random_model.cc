// Random-weight model files: initial values chosen so the network stays in a realistic regime
// (unit-scale activations, EMA decays 0.1..0.98, non-degenerate attention) at any depth.
#include "bench/random_model.h"

#include <cmath>
#include <cstring>
#include <map>
#include <numbers>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "runtime/model/safetensors.h"
#include "runtime/model/vocab.h"
#include "runtime/util/status_macros.h"

namespace seqboat::bench {
namespace {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double Logit(double p) { return std::log(p / (1.0 - p)); }

// FNV-1a: a stable hash of tensor names (std::hash differs between standard libraries).
uint64_t NameHash(absl::string_view name) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : name) hash = (hash ^ c) * 0x100000001b3ull;
  return hash;
}

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

void FillNormal(Rng& rng, double mean, double stddev, std::vector<float>* values) {
  for (float& v : *values) v = static_cast<float>(mean + stddev * rng.Normal());
}

// The generic initial values of one tensor, by its role (the fairseq name's suffix).
// Per-layer couplings (delta with alpha, the router rows) are set afterwards.
void FillByRole(const ModelConfig& config, const ExpectedTensor& spec, Rng& rng,
                std::vector<float>* values) {
  const std::string& name = spec.name;
  const double D = config.embed_dim, H = config.hidden_dim, F = config.ffn_dim;
  auto ends = [&](absl::string_view suffix) { return absl::EndsWith(name, suffix); };
  if (name == "embed_tokens.weight" || name == "output_projection.weight") {
    FillNormal(rng, 0.0, 1.0 / std::sqrt(D), values);
    if (name == "embed_tokens.weight" && config.vocab_size > 1) {
      // fairseq keeps the padding row at zero.
      std::fill(values->begin() + kPadId * config.embed_dim,
                values->begin() + (kPadId + 1) * config.embed_dim, 0.0f);
    }
  } else if (ends("norm.norm.weight")) {
    FillNormal(rng, 1.0, 0.05, values);
  } else if (ends("norm.norm.bias")) {
    FillNormal(rng, 0.0, 0.05, values);
  } else if (ends("norm.norm.scalar")) {
    (*values)[0] = 1.0f;  // scalenorm output rms = scalar
  } else if (ends("move.beta")) {
    // Input gains of either sign, near unit magnitude.
    for (float& v : *values) {
      const double sign = rng.Uniform() < 0.5 ? -1.0 : 1.0;
      v = static_cast<float>(sign + 0.02 * rng.Normal());
    }
  } else if (ends("move.gamma") || ends("move.omega")) {
    FillNormal(rng, 0.0, 1.0, values);
  } else if (ends("q_router.temp")) {
    (*values)[0] = 0.0f;  // temperature exp(0) = 1
  } else if (ends("hx_proj.weight") || ends("mx_proj.weight") || ends("fc1.weight")) {
    FillNormal(rng, 0.0, 1.0 / std::sqrt(D), values);  // fan_in D
  } else if (ends("h_proj.weight")) {
    FillNormal(rng, 0.0, 1.0 / std::sqrt(H), values);
  } else if (ends("fc2.weight")) {
    FillNormal(rng, 0.0, 1.0 / std::sqrt(F), values);
  } else if (ends("slag_layer.gamma")) {
    FillNormal(rng, 1.0, 0.1, values);  // q, k = z * gamma + beta: close to z
  } else {
    // Biases, slag_layer.beta, rel_pos_bias: small.
    FillNormal(rng, 0.0, 0.02, values);
  }
}

// MD-EMA decays q = 1 - p*a with p*a log-uniform in [0.02, 0.9] (q in 0.1..0.98), split
// between p = sigmoid(delta) and a = sigmoid(alpha) at a random ratio.
void FillEmaDecays(Rng& rng, std::vector<float>* delta, std::vector<float>* alpha) {
  const double log_lo = std::log(0.02), log_hi = std::log(0.9);
  for (size_t i = 0; i < delta->size(); ++i) {
    const double pa = std::exp(log_lo + (log_hi - log_lo) * rng.Uniform());
    const double share = 0.3 + 0.4 * rng.Uniform();
    (*delta)[i] = static_cast<float>(Logit(std::pow(pa, share)));
    (*alpha)[i] = static_cast<float>(Logit(std::pow(pa, 1.0 - share)));
  }
}

// The dense router (RouterStyle::kDense): row 1 = w, row 0 = -w, w orthogonal to ones.
void ArrangeDenseRouter(int D, Rng& rng, std::vector<float>* weight, std::vector<float>* bias) {
  std::vector<double> w(D);
  double mean = 0.0;
  for (int d = 0; d < D; ++d) {
    w[d] = rng.Normal() / std::sqrt(static_cast<double>(D));
    mean += w[d];
  }
  mean /= D;
  std::fill(weight->begin(), weight->begin() + 2 * D, 0.0f);
  for (int d = 0; d < D; ++d) {
    (*weight)[D + d] = static_cast<float>(w[d] - mean);
    (*weight)[d] = -(*weight)[D + d];
  }
  (*bias)[0] = 0.0f;
  (*bias)[1] = 0.0f;
}

// RouterStyle::kTokenChannel: the residual-stream channel that layer l's router reads.
int RouterChannel(const ModelConfig& config, int layer) {
  return static_cast<int>(static_cast<int64_t>(layer) * config.embed_dim /
                          std::max(1, config.layers)) %
         config.embed_dim;
}

// Range of the per-(token, layer) values the token channels carry. Positive and away from 0
// so that the SiLU of every layer's residual update passes them on almost unchanged.
constexpr double kChannelLow = 4.0, kChannelHigh = 12.0;

// 64 hex digits naming the generator's inputs. It stands where a checkpoint's sha256 goes but
// is not a digest of any file.
std::string GeneratorId(uint64_t seed, absl::Span<const float> layer_biases) {
  uint64_t state = Mix(seed);
  for (float bias : layer_biases) {
    uint32_t bits;
    std::memcpy(&bits, &bias, sizeof(bits));
    state = Mix(state ^ bits);
  }
  Rng rng(state);
  std::string id;
  for (int i = 0; i < 4; ++i) absl::StrAppendFormat(&id, "%016x", rng.Next());
  return id;
}

}  // namespace

ModelConfig PaperEnwik8Config() {
  ModelConfig config;
  config.embed_dim = 616;
  config.z_dim = 128;
  config.hidden_dim = 1232;
  config.n_dim = 16;
  config.layers = 14;
  config.window = 1024;
  config.vocab_size = 260;
  config.truncation_length = 2048;
  config.max_positions = 8192;  // unused by the rotary bias
  config.attention = AttentionKind::kSoftmax;
  config.position = PositionKind::kRotary;
  config.norm = NormKind::kLayerNorm;
  config.normalize_before = true;
  config.final_norm_affine = false;
  config.normalize_embedding = false;
  config.scale_embedding = true;
  config.tied_embeddings = true;
  config.ffn_dim = 0;
  return config;
}

uint64_t Rng::Next() {
  state_ += kGolden;
  return Mix(state_);
}

double Rng::Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

double Rng::Normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  // Box-Muller; 1 - Uniform() lies in (0, 1], so the log is finite.
  const double radius = std::sqrt(-2.0 * std::log(1.0 - Uniform()));
  const double angle = 2.0 * std::numbers::pi * Uniform();
  spare_ = radius * std::sin(angle);
  has_spare_ = true;
  return radius * std::cos(angle);
}

std::vector<int32_t> RandomTokens(int64_t count, int vocab_size, uint64_t seed) {
  Rng rng(Mix(seed ^ 0x746f6b656e73ull));
  std::vector<int32_t> tokens(count);
  for (int32_t& token : tokens) {
    if (vocab_size > kNumSpecialIds) {
      token = kNumSpecialIds +
              static_cast<int32_t>(rng.Next() % static_cast<uint64_t>(vocab_size - kNumSpecialIds));
    } else {
      constexpr int32_t kReadable[] = {kBosId, kEosId, kUnkId};  // never the padding id
      token = kReadable[rng.Next() % 3];
      if (token >= vocab_size) token = kBosId;
    }
  }
  return tokens;
}

std::string RandomModelTokenizerJson(int vocab_size) {
  nlohmann::ordered_json symbols = nlohmann::ordered_json::array();
  for (int i = 0; i < vocab_size; ++i) {
    symbols.push_back(i < kNumSpecialIds ? std::string(kSpecialSymbols[i])
                                         : std::to_string(i - kNumSpecialIds));
  }
  nlohmann::ordered_json tokenizer;
  tokenizer["style"] = vocab_size <= 4 + 256 ? "byte" : "word";
  tokenizer["symbols"] = std::move(symbols);
  return tokenizer.dump();
}

std::vector<float>& RandomModel::Values(const std::string& name) {
  return tensors_[index_.at(name)].values;
}

absl::StatusOr<std::unique_ptr<RandomModel>> RandomModel::Generate(
    const ModelConfig& config, uint64_t seed, const RandomModelOptions& options) {
  if (config.embed_dim < 1 || config.n_dim < 1 || config.layers < 0 || config.vocab_size < 4 ||
      config.z_dim < 1 || config.hidden_dim < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RandomModel: config needs positive embed_dim, z_dim, hidden_dim, n_dim and vocab_size "
        ">= 4; got D=",
        config.embed_dim, " Z=", config.z_dim, " H=", config.hidden_dim, " N=", config.n_dim,
        " V=", config.vocab_size));
  }
  // Reject what ParseModelConfig would reject, before drawing 39M numbers.
  RETURN_IF_ERROR(ParseModelConfig(ModelConfigToJson(config)).status());
  std::unique_ptr<RandomModel> model(new RandomModel(config, seed));
  for (ExpectedTensor& spec : ExpectedTensors(config)) {
    Tensor tensor;
    tensor.values.resize(NumElements(spec.shape));
    // One stream per tensor: a tensor's values do not depend on which tensors precede it.
    Rng rng(Mix(seed) ^ Mix(NameHash(spec.name)));
    FillByRole(config, spec, rng, &tensor.values);
    model->index_[spec.name] = model->tensors_.size();
    tensor.spec = std::move(spec);
    model->tensors_.push_back(std::move(tensor));
  }
  const int D = config.embed_dim, H = config.hidden_dim;
  auto unit = [](int l) { return absl::StrCat("layers.", l, ".slag_layer."); };
  for (int l = 0; l < config.layers; ++l) {
    Rng rng(Mix(seed + 0x726f75746572ull) ^ Mix(static_cast<uint64_t>(l) + 1));
    FillEmaDecays(rng, &model->Values(unit(l) + "move.delta"),
                  &model->Values(unit(l) + "move.alpha"));
    std::vector<float>& router_weight = model->Values(unit(l) + "hx_proj.weight");
    std::vector<float>& router_bias = model->Values(unit(l) + "hx_proj.bias");
    ArrangeDenseRouter(D, rng, &router_weight, &router_bias);
    if (options.router == RouterStyle::kDense) continue;

    // Token channel c of layer l: per-token values in the embedding; a router that reads c
    // alone; an identity path from the layer's input to mx[c] (norm 1/0, EMA gamma 0,
    // omega 1); and no layer writes c.
    const int c = RouterChannel(config, l);
    const double embed_scale = config.scale_embedding ? std::sqrt(static_cast<double>(D)) : 1.0;
    std::vector<float>& embed = model->Values("embed_tokens.weight");
    Rng values(Mix(seed + 0x6368616e6e656cull) ^ Mix(static_cast<uint64_t>(l) + 1));
    for (int t = 0; t < config.vocab_size; ++t) {
      const double v = kChannelLow + (kChannelHigh - kChannelLow) * values.Uniform();
      if (t != 1) embed[static_cast<size_t>(t) * D + c] = static_cast<float>(v / embed_scale);
    }
    std::fill(router_weight.begin(), router_weight.begin() + 2 * D, 0.0f);
    router_weight[c] = -1.0f;
    router_weight[D + c] = 1.0f;
    // Base 0: a token activates iff mx[c] > -b. How far a layer's normalised channel sits
    // from 0 depends on the layer (the residual stream's spread grows with depth), so rates
    // are set per layer (CalibrateRouterBiases).
    if (config.norm != NormKind::kScaleNorm) {
      model->Values(unit(l) + "norm.norm.weight")[c] = 1.0f;
      if (config.norm == NormKind::kLayerNorm) model->Values(unit(l) + "norm.norm.bias")[c] = 0.0f;
    }
    std::vector<float>& gamma = model->Values(unit(l) + "move.gamma");
    std::fill(gamma.begin() + static_cast<size_t>(c) * config.n_dim,
              gamma.begin() + static_cast<size_t>(c + 1) * config.n_dim, 0.0f);
    model->Values(unit(l) + "move.omega")[c] = 1.0f;
    for (int m = 0; m < config.layers; ++m) {
      std::vector<float>& skip = model->Values(unit(m) + "hx_proj.weight");
      std::fill(skip.begin() + static_cast<size_t>(2 + c) * D,
                skip.begin() + static_cast<size_t>(3 + c) * D, 0.0f);
      model->Values(unit(m) + "hx_proj.bias")[2 + c] = 0.0f;
      std::vector<float>& out = model->Values(unit(m) + "h_proj.weight");
      std::fill(out.begin() + static_cast<size_t>(c) * H,
                out.begin() + static_cast<size_t>(c + 1) * H, 0.0f);
      model->Values(unit(m) + "h_proj.bias")[c] = 0.0f;
      if (config.has_ffn()) {
        const std::string ffn = absl::StrCat("layers.", m, ".nffn.");
        std::vector<float>& fc2 = model->Values(ffn + "fc2.weight");
        std::fill(fc2.begin() + static_cast<size_t>(c) * config.ffn_dim,
                  fc2.begin() + static_cast<size_t>(c + 1) * config.ffn_dim, 0.0f);
        model->Values(ffn + "fc2.bias")[c] = 0.0f;
      }
    }
  }
  return model;
}

int64_t RandomModel::parameter_count() const {
  int64_t count = 0;
  for (const Tensor& tensor : tensors_) count += tensor.values.size();
  return count;
}

absl::Status RandomModel::Write(const std::string& path, float router_bias) const {
  return Write(path, std::vector<float>(config_.layers, router_bias));
}

absl::Status RandomModel::Write(const std::string& path,
                                absl::Span<const float> layer_biases) const {
  if (static_cast<int>(layer_biases.size()) != config_.layers) {
    return absl::InvalidArgumentError(absl::StrCat("RandomModel::Write: ", layer_biases.size(),
                                                   " router biases for ", config_.layers,
                                                   " layers"));
  }
  for (float bias : layer_biases) {
    if (!std::isfinite(bias)) {
      return absl::InvalidArgumentError(
          absl::StrCat("RandomModel::Write: router bias ", bias, " is not finite"));
    }
  }
  std::vector<std::vector<float>> biased;  // patched copies of the hx_proj biases
  biased.reserve(config_.layers);
  std::vector<TensorToWrite> to_write;
  to_write.reserve(tensors_.size());
  for (const Tensor& tensor : tensors_) {
    const float* data = tensor.values.data();
    if (absl::EndsWith(tensor.spec.name, ".hx_proj.bias")) {
      const float bias = layer_biases[biased.size()];  // layers come in order
      biased.push_back(tensor.values);
      biased.back()[0] -= bias;
      biased.back()[1] += bias;
      data = biased.back().data();
    }
    to_write.push_back({tensor.spec.name, DType::kF32, tensor.spec.shape,
                        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data),
                                            tensor.values.size() * sizeof(float))});
  }
  const std::map<std::string, std::string> metadata = {
      {"format", "seqboat"},
      {"format_version", std::to_string(kModelFormatVersion)},
      {"config", ModelConfigToJson(config_)},
      {"tokenizer", RandomModelTokenizerJson(config_.vocab_size)},
      {"source_sha256", GeneratorId(seed_, layer_biases)},
      {"converter_version", "random-model"},
  };
  return WriteSafetensors(path, metadata, to_write);
}

absl::Status WriteRandomModel(const std::string& path, const ModelConfig& config, uint64_t seed,
                              float router_bias, const RandomModelOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<RandomModel> model,
                   RandomModel::Generate(config, seed, options));
  return model->Write(path, router_bias);
}

}  // namespace seqboat::bench
