// Model loading: metadata and config checks, then name/shape/dtype binding of every tensor.
#include "runtime/model/model.h"

#include <cmath>
#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/util/status_macros.h"

namespace seqboat {
namespace {

std::vector<ExpectedTensor> NormTensors(const std::string& prefix, NormKind kind, int64_t dim) {
  switch (kind) {
    case NormKind::kLayerNorm:
      return {{prefix + ".weight", {dim}}, {prefix + ".bias", {dim}}};
    case NormKind::kScaleNorm:
      return {{prefix + ".scalar", {1}}};
    case NormKind::kRmsNorm:
      return {{prefix + ".weight", {dim}}};
  }
  return {};
}

void Append(std::vector<ExpectedTensor>* out, std::vector<ExpectedTensor> more) {
  for (auto& tensor : more) out->push_back(std::move(tensor));
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& c) {
  const int64_t D = c.embed_dim, Z = c.z_dim, H = c.hidden_dim, N = c.n_dim, V = c.vocab_size;
  std::vector<ExpectedTensor> out;
  out.push_back({"embed_tokens.weight", {V, D}});
  if (!c.tied_embeddings) out.push_back({"output_projection.weight", {V, D}});
  if (c.normalize_embedding) Append(&out, NormTensors("embed_norm.norm", c.norm, D));
  if (c.has_final_norm() && c.final_norm_affine) {
    Append(&out, NormTensors("final_norm.norm", c.norm, D));
  }
  for (int i = 0; i < c.layers; ++i) {
    const std::string unit = absl::StrCat("layers.", i, ".slag_layer.");
    Append(&out, NormTensors(unit + "norm.norm", c.norm, D));
    Append(&out, {{unit + "move.delta", {D, N, 1}},
                  {unit + "move.alpha", {D, N, 1}},
                  {unit + "move.beta", {D, N, 1}},
                  {unit + "move.gamma", {D, N}},
                  {unit + "move.omega", {D}},
                  {unit + "hx_proj.weight", {2 + D, D}},
                  {unit + "hx_proj.bias", {2 + D}},
                  {unit + "q_router.temp", {1}},
                  {unit + "mx_proj.weight", {Z + 2 * H, D}},
                  {unit + "mx_proj.bias", {Z + 2 * H}},
                  {unit + "gamma", {2, Z}},
                  {unit + "beta", {2, Z}},
                  {unit + "h_proj.weight", {D, H}},
                  {unit + "h_proj.bias", {D}}});
    if (c.position == PositionKind::kSimple) {
      out.push_back(
          {unit + "rel_pos_bias.rel_pos_bias", {2 * static_cast<int64_t>(c.max_positions) - 1}});
    }
    if (c.has_ffn()) {
      const std::string ffn = absl::StrCat("layers.", i, ".nffn.");
      const int64_t F = c.ffn_dim;
      Append(&out, NormTensors(ffn + "norm.norm", c.norm, D));
      Append(&out, {{ffn + "fc1.weight", {F, D}},
                    {ffn + "fc1.bias", {F}},
                    {ffn + "fc2.weight", {D, F}},
                    {ffn + "fc2.bias", {D}}});
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
    return absl::InvalidArgumentError(absl::StrCat(path, ": the config has ", config_.layers, " layers but the file holds only ",
                                                   file_->tensors().size(), " tensors"));
  }
  absl::flat_hash_map<std::string, const float*> bound;
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
    bound[expected.name] = values;
  }
  for (const TensorView& view : file_->tensors()) {
    if (!bound.contains(view.name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": unexpected tensor \"", view.name, "\" for this config (", config_.layers,
          " layers, ", NormKindName(config_.norm), ", ffn_dim ", config_.ffn_dim, ")"));
    }
  }
  stored_dtype_ = file_->Find("embed_tokens.weight")->dtype;

  auto at = [&](const std::string& name) -> const float* {
    auto it = bound.find(name);
    return it == bound.end() ? nullptr : it->second;
  };
  auto norm = [&](const std::string& prefix) {
    NormWeights weights;
    weights.weight = at(prefix + (config_.norm == NormKind::kScaleNorm ? ".scalar" : ".weight"));
    weights.bias = at(prefix + ".bias");
    return weights;
  };
  weights_.embed = at("embed_tokens.weight");
  weights_.output = config_.tied_embeddings ? weights_.embed : at("output_projection.weight");
  weights_.embed_norm = norm("embed_norm.norm");
  weights_.final_norm = norm("final_norm.norm");
  for (int i = 0; i < config_.layers; ++i) {
    const std::string unit = absl::StrCat("layers.", i, ".slag_layer.");
    const std::string ffn = absl::StrCat("layers.", i, ".nffn.");
    LayerWeights layer;
    layer.norm = norm(unit + "norm.norm");
    layer.ema_delta = at(unit + "move.delta");
    layer.ema_alpha = at(unit + "move.alpha");
    layer.ema_beta = at(unit + "move.beta");
    layer.ema_gamma = at(unit + "move.gamma");
    layer.ema_omega = at(unit + "move.omega");
    layer.hx_proj_weight = at(unit + "hx_proj.weight");
    layer.hx_proj_bias = at(unit + "hx_proj.bias");
    layer.router_log_temp = at(unit + "q_router.temp");
    layer.mx_proj_weight = at(unit + "mx_proj.weight");
    layer.mx_proj_bias = at(unit + "mx_proj.bias");
    layer.qk_gamma = at(unit + "gamma");
    layer.qk_beta = at(unit + "beta");
    layer.h_proj_weight = at(unit + "h_proj.weight");
    layer.h_proj_bias = at(unit + "h_proj.bias");
    layer.rel_pos_bias = at(unit + "rel_pos_bias.rel_pos_bias");
    layer.ffn_norm = norm(ffn + "norm.norm");
    layer.fc1_weight = at(ffn + "fc1.weight");
    layer.fc1_bias = at(ffn + "fc1.bias");
    layer.fc2_weight = at(ffn + "fc2.weight");
    layer.fc2_bias = at(ffn + "fc2.bias");
    weights_.layers.push_back(layer);
  }
  return absl::OkStatus();
}

}  // namespace seqboat
