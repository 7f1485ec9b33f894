// Weight upload (see device_weights.h): the arrays are packed into one host buffer with the
// device layout, copied once, then the recorded offsets become device pointers.
#include "kernels/device_weights.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstring>
#include <functional>

#include "runtime/model/ema_coefficients.h"
#include "runtime/util/dtype.h"
#include "runtime/util/status_macros.h"

namespace seqboat::cuda {
namespace {

template <typename T>
void StoreAs(float value, uint8_t* dst);
template <>
void StoreAs<float>(float value, uint8_t* dst) {
  std::memcpy(dst, &value, 4);
}
template <>
void StoreAs<__half>(float value, uint8_t* dst) {
  const uint16_t bits = FloatToF16(value);
  std::memcpy(dst, &bits, 2);
}
template <>
void StoreAs<__nv_bfloat16>(float value, uint8_t* dst) {
  const uint16_t bits = FloatToBf16(value);
  std::memcpy(dst, &bits, 2);
}

// Appends arrays to a host image of the device allocation and remembers which pointer
// fields to point at them once the allocation exists.
class Packer {
 public:
  template <typename X>
  void Add(const float* src, int64_t count, const X** field) {
    if (src == nullptr) {
      *field = nullptr;
      return;
    }
    const size_t offset = Align();
    bytes_.resize(offset + count * sizeof(X));
    for (int64_t i = 0; i < count; ++i) StoreAs<X>(src[i], bytes_.data() + offset + i * sizeof(X));
    fixups_.push_back(
        [field, offset](uint8_t* base) { *field = reinterpret_cast<const X*>(base + offset); });
  }
  void AddNorm(NormKind kind, const NormWeights& weights, int64_t dim, DeviceNormWeights* out) {
    out->kind = ToDeviceNorm(kind);
    Add<float>(weights.weight, kind == NormKind::kScaleNorm ? 1 : dim, &out->weight);
    Add<float>(weights.bias, dim, &out->bias);
  }
  absl::Status Upload(DeviceMemory* memory) {
    RETURN_IF_ERROR(memory->Allocate(Align(), "model weights"));
    SEQBOAT_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(memory->data(), bytes_.data(), bytes_.size(), cudaMemcpyHostToDevice));
    for (auto& fixup : fixups_) fixup(memory->data());
    return absl::OkStatus();
  }

 private:
  size_t Align() {
    const size_t aligned = (bytes_.size() + 255) & ~size_t{255};
    bytes_.resize(aligned);
    return aligned;
  }
  std::vector<uint8_t> bytes_;
  std::vector<std::function<void(uint8_t*)>> fixups_;
};

}  // namespace

DeviceNorm ToDeviceNorm(NormKind kind) {
  switch (kind) {
    case NormKind::kLayerNorm: return DeviceNorm::kLayerNorm;
    case NormKind::kScaleNorm: return DeviceNorm::kScaleNorm;
    case NormKind::kRmsNorm: return DeviceNorm::kRmsNorm;
  }
  return DeviceNorm::kNone;
}

template <typename T>
absl::StatusOr<DeviceModelWeights<T>> UploadWeights(const Model& model, int trained_truncation,
                                                    DeviceMemory* memory) {
  const ModelConfig& c = model.config();
  const ModelWeights& w = model.weights();
  const int64_t D = c.embed_dim, Z = c.z_dim, H = c.hidden_dim, N = c.n_dim, V = c.vocab_size,
                F = c.ffn_dim;
  DeviceModelWeights<T> out;
  out.layers.resize(c.layers);  // sized up front: the packer keeps pointers into it
  Packer packer;
  packer.Add<T>(w.embed, V * D, &out.embed);
  if (c.tied_embeddings) {
    out.output = nullptr;  // set after the upload
  } else {
    packer.Add<T>(w.output, V * D, &out.output);
  }
  if (c.normalize_embedding) packer.AddNorm(c.norm, w.embed_norm, D, &out.embed_norm);
  // Pre-norm models always normalise before the output (affine only when stored).
  if (c.has_final_norm()) packer.AddNorm(c.norm, w.final_norm, D, &out.final_norm);
  std::vector<EmaCoefficients> ema(c.layers);
  for (int l = 0; l < c.layers; ++l) {
    const LayerWeights& layer = w.layers[l];
    DeviceLayerWeights<T>& dst = out.layers[l];
    // The same derived coefficients as the CPU backend, so both start from identical floats.
    ema[l] = MakeEmaCoefficients(layer, static_cast<int>(D), static_cast<int>(N),
                                 trained_truncation > 0, trained_truncation);
    packer.AddNorm(c.norm, layer.norm, D, &dst.norm);
    // Transposed to [N, D]: the scan's threads are channels, and read these coalesced.
    auto transpose = [&](const std::vector<float>& dn) {
      std::vector<float> nd(dn.size());
      for (int64_t d = 0; d < D; ++d)
        for (int64_t n = 0; n < N; ++n) nd[n * D + d] = dn[d * N + n];
      return nd;
    };
    const std::vector<float> decay = transpose(ema[l].decay),
                             input_scale = transpose(ema[l].input_scale),
                             out_scale = transpose(ema[l].out_scale);
    packer.Add<float>(decay.data(), D * N, &dst.ema_decay);
    packer.Add<float>(input_scale.data(), D * N, &dst.ema_input_scale);
    packer.Add<float>(out_scale.data(), D * N, &dst.ema_out_scale);
    if (trained_truncation > 0) {
      const std::vector<float> decay_pow_t = transpose(ema[l].decay_pow_t);
      packer.Add<float>(decay_pow_t.data(), D * N, &dst.ema_decay_pow_t);
    } else {
      dst.ema_decay_pow_t = nullptr;
    }
    packer.Add<float>(layer.ema_omega, D, &dst.ema_omega);
    packer.Add<T>(layer.hx_proj_weight, (2 + D) * D, &dst.hx_proj_weight);
    packer.Add<float>(layer.hx_proj_bias, 2 + D, &dst.hx_proj_bias);
    dst.router_inv_temperature = std::exp(-static_cast<double>(layer.router_log_temp[0]));
    packer.Add<T>(layer.mx_proj_weight, (Z + 2 * H) * D, &dst.mx_proj_weight);
    packer.Add<float>(layer.mx_proj_bias, Z + 2 * H, &dst.mx_proj_bias);
    packer.Add<float>(layer.qk_gamma, 2 * Z, &dst.qk_gamma);
    packer.Add<float>(layer.qk_beta, 2 * Z, &dst.qk_beta);
    packer.Add<T>(layer.h_proj_weight, D * H, &dst.h_proj_weight);
    packer.Add<float>(layer.h_proj_bias, D, &dst.h_proj_bias);
    packer.Add<float>(layer.rel_pos_bias, 2 * static_cast<int64_t>(c.max_positions) - 1,
                      &dst.rel_pos_bias);
    if (c.has_ffn()) {
      packer.AddNorm(c.norm, layer.ffn_norm, D, &dst.ffn_norm);  // before fc1 or after fc2
      packer.Add<T>(layer.fc1_weight, F * D, &dst.fc1_weight);
      packer.Add<float>(layer.fc1_bias, F, &dst.fc1_bias);
      packer.Add<T>(layer.fc2_weight, D * F, &dst.fc2_weight);
      packer.Add<float>(layer.fc2_bias, D, &dst.fc2_bias);
    } else {
      dst.fc1_weight = dst.fc2_weight = nullptr;
      dst.fc1_bias = dst.fc2_bias = nullptr;
    }
  }
  RETURN_IF_ERROR(packer.Upload(memory));
  if (c.tied_embeddings) out.output = out.embed;
  out.bytes = memory->bytes();
  return out;
}

template absl::StatusOr<DeviceModelWeights<float>> UploadWeights<float>(const Model&, int,
                                                                        DeviceMemory*);
template absl::StatusOr<DeviceModelWeights<__half>> UploadWeights<__half>(const Model&, int,
                                                                          DeviceMemory*);
template absl::StatusOr<DeviceModelWeights<__nv_bfloat16>> UploadWeights<__nv_bfloat16>(
    const Model&, int, DeviceMemory*);

}  // namespace seqboat::cuda
