// Model loading: metadata and config checks, then name/shape/dtype binding of every tensor.
#include "runtime/model/model.h"

#include <cmath>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/util/status_macros.h"

namespace seqboat {
namespace {

using Field = std::function<const float**(ModelWeights&)>;

// A norm's tensors; `norm` picks the NormWeights they bind to.
void AppendNorm(const std::string& prefix, NormKind kind, int64_t dim,
                std::function<NormWeights*(ModelWeights&)> norm, std::vector<ExpectedTensor>* out) {
  auto weight = [norm](ModelWeights& w) { return &norm(w)->weight; };
  auto bias = [norm](ModelWeights& w) { return &norm(w)->bias; };
  switch (kind) {
    case NormKind::kLayerNorm:
      out->push_back({prefix + ".weight", {dim}, weight});
      out->push_back({prefix + ".bias", {dim}, bias});
      return;
    case NormKind::kScaleNorm: out->push_back({prefix + ".scalar", {1}, weight}); return;
    case NormKind::kRmsNorm: out->push_back({prefix + ".weight", {dim}, weight}); return;
  }
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& c) {
  const int64_t D = c.embed_dim, Z = c.z_dim, H = c.hidden_dim, N = c.n_dim, V = c.vocab_size;
  std::vector<ExpectedTensor> out;
  out.push_back({"embed_tokens.weight", {V, D}, [](ModelWeights& w) { return &w.embed; }});
  if (!c.tied_embeddings) {
    out.push_back({"output_projection.weight", {V, D}, [](ModelWeights& w) { return &w.output; }});
  }
  if (c.normalize_embedding)
    AppendNorm(
        "embed_norm.norm", c.norm, D, [](ModelWeights& w) { return &w.embed_norm; }, &out);
  if (c.has_final_norm() && c.final_norm_affine) {
    AppendNorm(
        "final_norm.norm", c.norm, D, [](ModelWeights& w) { return &w.final_norm; }, &out);
  }
  for (int i = 0; i < c.layers; ++i) {
    auto in_layer = [i](const float* LayerWeights::*field) -> Field {
      return [i, field](ModelWeights& w) { return &(w.layers[i].*field); };
    };
    const std::string unit = absl::StrCat("layers.", i, ".slag_layer.");
    AppendNorm(
        unit + "norm.norm", c.norm, D, [i](ModelWeights& w) { return &w.layers[i].norm; }, &out);
    const std::pair<const char*, std::pair<std::vector<int64_t>, const float * LayerWeights::*>>
        unit_tensors[] = {
            {"move.delta", {{D, N, 1}, &LayerWeights::ema_delta}},
            {"move.alpha", {{D, N, 1}, &LayerWeights::ema_alpha}},
            {"move.beta", {{D, N, 1}, &LayerWeights::ema_beta}},
            {"move.gamma", {{D, N}, &LayerWeights::ema_gamma}},
            {"move.omega", {{D}, &LayerWeights::ema_omega}},
            {"hx_proj.weight", {{2 + D, D}, &LayerWeights::hx_proj_weight}},
            {"hx_proj.bias", {{2 + D}, &LayerWeights::hx_proj_bias}},
            {"q_router.temp", {{1}, &LayerWeights::router_log_temp}},
            {"mx_proj.weight", {{Z + 2 * H, D}, &LayerWeights::mx_proj_weight}},
            {"mx_proj.bias", {{Z + 2 * H}, &LayerWeights::mx_proj_bias}},
            {"gamma", {{2, Z}, &LayerWeights::qk_gamma}},
            {"beta", {{2, Z}, &LayerWeights::qk_beta}},
            {"h_proj.weight", {{D, H}, &LayerWeights::h_proj_weight}},
            {"h_proj.bias", {{D}, &LayerWeights::h_proj_bias}},
        };
    for (const auto& [name, shape_field] : unit_tensors) {
      out.push_back({unit + name, shape_field.first, in_layer(shape_field.second)});
    }
    if (c.position == PositionKind::kSimple) {
      out.push_back({unit + "rel_pos_bias.rel_pos_bias",
                     {2 * static_cast<int64_t>(c.max_positions) - 1},
                     in_layer(&LayerWeights::rel_pos_bias)});
    }
    if (c.has_ffn()) {
      const std::string ffn = absl::StrCat("layers.", i, ".nffn.");
      const int64_t F = c.ffn_dim;
      AppendNorm(
          ffn + "norm.norm", c.norm, D, [i](ModelWeights& w) { return &w.layers[i].ffn_norm; },
          &out);
      out.push_back({ffn + "fc1.weight", {F, D}, in_layer(&LayerWeights::fc1_weight)});
      out.push_back({ffn + "fc1.bias", {F}, in_layer(&LayerWeights::fc1_bias)});
      out.push_back({ffn + "fc2.weight", {D, F}, in_layer(&LayerWeights::fc2_weight)});
      out.push_back({ffn + "fc2.bias", {D}, in_layer(&LayerWeights::fc2_bias)});
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& path) {
  std::unique_ptr<Model> model(new Model());
  ASSIGN_OR_RETURN(model->file_, SafetensorsFile::Open(path));
  const auto& meta = model->file_->metadata();
  auto get = [&](const char* key) -> absl::StatusOr<std::string> {
    auto it = meta.find(key);
    if (it == meta.end()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": __metadata__ lacks \"", key,
                                                     "\"; is this a seqboat-convert output?"));
    }
    return it->second;
  };
  ASSIGN_OR_RETURN(std::string format, get("format"));
  if (format != "seqboat") {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": metadata format is \"", format, "\", expected \"seqboat\""));
  }
  ASSIGN_OR_RETURN(std::string version, get("format_version"));
  if (version != std::to_string(kModelFormatVersion)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": format_version \"", version,
                                                   "\" is not supported; this build reads version ",
                                                   kModelFormatVersion));
  }
  ASSIGN_OR_RETURN(std::string config_json, get("config"));
  auto config = ParseModelConfig(config_json);
  if (!config.ok())
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", config.status().message()));
  model->config_ = *config;
  ASSIGN_OR_RETURN(model->tokenizer_json_, get("tokenizer"));
  auto sha = meta.find("source_sha256");
  if (sha != meta.end()) model->source_sha256_ = sha->second;
  RETURN_IF_ERROR(model->Bind());
  return model;
}

absl::Status Model::Bind() {
  const std::string& path = file_->path();
  // Every layer holds at least 15 tensors: refuse a config that cannot fit the file before
  // listing its expected tensors (a hostile layer count must not exhaust memory).
  if (static_cast<int64_t>(config_.layers) * 15 > static_cast<int64_t>(file_->tensors().size())) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the config has ", config_.layers,
                                                   " layers but the file holds only ",
                                                   file_->tensors().size(), " tensors"));
  }
  // Every pointer starts null: a tensor the config does not hold leaves its field unset.
  weights_ = ModelWeights{};
  weights_.layers.assign(config_.layers, LayerWeights{});
  absl::flat_hash_set<std::string> bound;
  for (const ExpectedTensor& expected : ExpectedTensors(config_)) {
    const TensorView* view = file_->Find(expected.name);
    if (view == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": missing tensor \"", expected.name,
                                                     "\" (shape ", ShapeString(expected.shape),
                                                     ") that the config requires"));
    }
    if (view->shape != expected.shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor \"", expected.name, "\" has shape ", ShapeString(view->shape),
          ", the config requires ", ShapeString(expected.shape)));
    }
    const int64_t count = view->NumElements();
    const float* values;
    if (view->dtype == DType::kF32 &&
        reinterpret_cast<uintptr_t>(view->data) % alignof(float) == 0) {
      values = reinterpret_cast<const float*>(view->data);
    } else {
      auto copy = std::make_unique<float[]>(count);
      ConvertToFloat(view->dtype, view->data, count, copy.get());
      values = copy.get();
      converted_.push_back(std::move(copy));
    }
    for (int64_t i = 0; i < count; ++i) {
      if (!std::isfinite(values[i])) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": tensor \"", expected.name, "\" holds a non-finite value at element ", i));
      }
    }
    parameter_count_ += count;
    *expected.field(weights_) = values;
    bound.insert(expected.name);
  }
  for (const TensorView& view : file_->tensors()) {
    if (!bound.contains(view.name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": unexpected tensor \"", view.name, "\" for this config (", config_.layers,
          " layers, ", NormKindName(config_.norm), ", ffn_dim ", config_.ffn_dim, ")"));
    }
  }
  stored_dtype_ = file_->Find("embed_tokens.weight")->dtype;
  if (config_.tied_embeddings) weights_.output = weights_.embed;
  return absl::OkStatus();
}

}  // namespace seqboat
