// The forward pass of CudaBackend enqueued on its stream, without a host synchronisation:
// the upload of the batch's bookkeeping, embedding, every layer (MD-EMA scan, router and
// compaction, GAU, FIFO attention and push, residual, FFN), the FIFO commit, the final norm
// and logits, and the downloads. The number of activated rows stays on the device.
#include <cmath>
#include <cstdint>

#include "kernels/cuda_backend_impl.h"
#include "kernels/cuda_status.h"
#include "kernels/ema_scan.h"
#include "kernels/fifo_attention.h"
#include "kernels/gau_kernels.h"
#include "kernels/gemm.h"
#include "kernels/router.h"
#include "kernels/row_kernels.h"
#include "runtime/util/status_macros.h"

namespace seqboat {
namespace cuda {

template <typename T>
absl::Status CudaBackend<T>::Enqueue(const Shape& shape) {
  const int64_t D = config_.embed_dim, Z = config_.z_dim, V = config_.vocab_size,
                L = config_.layers;
  const int64_t rows = shape.rows;
  Scratch& s = scratch_;
  const InputLayout layout = LayoutInputs(shape.rows, shape.chunks, shape.logit_rows, L);
  SEQBOAT_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(s.inputs, staging_.inputs, layout.bytes, cudaMemcpyHostToDevice, stream_));
  DeviceInputs in;
  in.positions = reinterpret_cast<const int64_t*>(s.inputs + layout.positions);
  in.tokens = reinterpret_cast<const int32_t*>(s.inputs + layout.tokens);
  in.row_chunk = reinterpret_cast<const int32_t*>(s.inputs + layout.row_chunk);
  in.chunk_slot = reinterpret_cast<const int32_t*>(s.inputs + layout.chunk_slot);
  in.chunk_row_begin = reinterpret_cast<const int32_t*>(s.inputs + layout.chunk_row_begin);
  in.logit_rows = reinterpret_cast<const int32_t*>(s.inputs + layout.logit_rows);
  in.activation_bias = reinterpret_cast<const float*>(s.inputs + layout.activation_bias);

  EmbeddingParams<T> embedding;
  embedding.table = weights_.embed;
  embedding.tokens = in.tokens;
  embedding.out = s.x;
  embedding.rows = rows;
  embedding.dim = static_cast<int>(D);
  embedding.scale = config_.scale_embedding ? std::sqrt(static_cast<float>(D)) : 1.0f;
  embedding.embed_norm = weights_.embed_norm;
  if (config_.normalize_before) {
    embedding.stats = s.norm_stats;
    embedding.stats_kind = ToDeviceNorm(config_.norm);
  }
  LaunchEmbedding(embedding, stream_);
  if (config_.position == PositionKind::kRotary) {
    LaunchRotaryTable({in.positions, s.rotary_cos, s.rotary_sin, rows, static_cast<int>(Z)},
                      stream_);
  }
  for (int l = 0; l < L; ++l) RETURN_IF_ERROR(EnqueueLayer(l, shape, in));

  FifoCommitParams commit;
  commit.meta = fifo_meta_;
  commit.chunk_slot = in.chunk_slot;
  commit.chunk_active_begin = s.chunk_active_begin;
  commit.chunks = static_cast<int>(shape.chunks);
  commit.layers = static_cast<int>(L);
  commit.capacity = capacity_;
  LaunchFifoCommit(commit, stream_);

  // Final norm (pre-norm models) over the rows that want logits, then the output product.
  LaunchNormRows<T>({weights_.final_norm, s.x, in.logit_rows, s.final_rows, shape.logit_rows,
                     static_cast<int>(D)},
                    stream_);
  RETURN_IF_ERROR(Linear(
      cublas_, {s.final_rows, weights_.output, s.logits, shape.logit_rows, D, V, kGemmType<T>}));

  SEQBOAT_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(staging_.logits, s.logits,
                                               sizeof(float) * shape.logit_rows * V,
                                               cudaMemcpyDeviceToHost, stream_));
  if (shape.want_activations) {
    SEQBOAT_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(staging_.activations, s.activations, rows * L,
                                                 cudaMemcpyDeviceToHost, stream_));
  }
  if (shape.want_confidences) {
    SEQBOAT_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(staging_.confidences, s.confidences,
                                                 sizeof(float) * rows * L, cudaMemcpyDeviceToHost,
                                                 stream_));
  }
  SEQBOAT_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

template <typename T>
absl::Status CudaBackend<T>::EnqueueLayer(int l, const Shape& shape, const DeviceInputs& in) {
  const int D = config_.embed_dim, Z = config_.z_dim, H = config_.hidden_dim, N = config_.n_dim,
            F = config_.ffn_dim, L = config_.layers;
  const int64_t rows = shape.rows, chunks = shape.chunks, cap = capacity_;
  const DeviceLayerWeights<T>& w = weights_.layers[l];
  Scratch& s = scratch_;
  int32_t* chunk_active_begin = s.chunk_active_begin + static_cast<int64_t>(l) * (chunks + 1);
  const int32_t* activated_count = chunk_active_begin + chunks;

  // 1-3. u = norm(x) (pre-norm, applied inside the scan from the row statistics the previous
  // kernel left), MD-EMA scan, SiLU.
  EmaScanParams<T> ema;
  ema.input = s.x;
  if (config_.normalize_before) {
    ema.norm_stats = s.norm_stats;
    ema.norm = w.norm;
  }
  ema.longest_chunk = static_cast<int>(std::min<int64_t>(shape.longest_chunk, 1 << 30));
  ema.positions = in.positions;
  ema.chunk_row_begin = in.chunk_row_begin;
  ema.chunk_slot = in.chunk_slot;
  ema.ema_state = ema_state_ + static_cast<int64_t>(l) * D * N;
  ema.state_slot_stride = static_cast<int64_t>(L) * D * N;
  if (truncation_ > 0) {
    ema.input_ring = input_ring_ + static_cast<int64_t>(l) * truncation_ * D;
    ema.ring_slot_stride = static_cast<int64_t>(L) * truncation_ * D;
  }
  ema.decay = w.ema_decay;
  ema.input_scale = w.ema_input_scale;
  ema.out_scale = w.ema_out_scale;
  ema.decay_pow_t = w.ema_decay_pow_t;
  ema.omega = w.ema_omega;
  ema.out = s.mx;
  ema.chunks = static_cast<int>(chunks);
  ema.dim = D;
  ema.n_dim = N;
  ema.truncation = truncation_;
  LaunchEmaScan(ema, stream_);

  // 4-5. hx_proj over every row; the router decides and compacts on the device.
  RETURN_IF_ERROR(Linear(cublas_, {s.mx, w.hx_proj_weight, s.hx, rows, D, 2 + D, kGemmType<T>}));
  RouterParams router;
  router.hx = s.hx;
  router.hx_bias = w.hx_proj_bias;
  router.row_stride = 2 + D;
  router.inv_temperature = w.router_inv_temperature;
  router.activation_bias = in.activation_bias;
  router.row_chunk = in.row_chunk;
  router.chunk_row_begin = in.chunk_row_begin;
  router.rows = rows;
  router.chunks = static_cast<int>(chunks);
  router.confidence = s.confidence;
  router.row_active_index = s.row_active_index;
  router.activated_rows = s.activated_rows;
  router.chunk_active_begin = chunk_active_begin;
  router.activations_out = shape.want_activations ? s.activations : nullptr;
  router.confidences_out = shape.want_confidences ? s.confidences : nullptr;
  router.layers = L;
  router.layer = l;
  LaunchRouter(router, stream_);

  // 6. GAU on the activated rows. R lives on the device, so the products take the batch's rows
  // as its bound; mx_proj then reads mx directly (a compacted copy would cost the same product
  // plus a gather) and the kernels after it index the activated rows through the compaction.
  RETURN_IF_ERROR(
      Linear(cublas_, {s.mx, w.mx_proj_weight, s.projected, rows, D, Z + 2 * H, kGemmType<T>}));
  GauInputParams<T> gau;
  gau.projected = s.projected;
  gau.bias = w.mx_proj_bias;
  gau.qk_gamma = w.qk_gamma;
  gau.qk_beta = w.qk_beta;
  if (config_.position == PositionKind::kRotary) {
    gau.rotary_cos = s.rotary_cos;
    gau.rotary_sin = s.rotary_sin;
  }
  gau.activated_rows = s.activated_rows;
  gau.count = activated_count;
  gau.queries = s.queries;
  gau.keys = s.keys;
  gau.values = s.values;
  gau.gates = s.gates;
  gau.max_rows = rows;
  gau.z_dim = Z;
  gau.hidden_dim = H;
  LaunchGauInput(gau, stream_);

  ActivatedRows activated;
  activated.activated_rows = s.activated_rows;
  activated.chunk_active_begin = chunk_active_begin;
  activated.row_chunk = in.row_chunk;
  activated.chunk_slot = in.chunk_slot;
  activated.row_positions = in.positions;
  activated.chunks = static_cast<int>(chunks);
  activated.max_rows = rows;
  FifoView<T> fifo;
  fifo.keys = fifo_keys_ + l * cap * Z;
  fifo.values = fifo_values_ + l * cap * H;
  fifo.positions = fifo_positions_ + l * cap;
  fifo.meta = fifo_meta_ + l;
  fifo.keys_slot_stride = L * cap * Z;
  fifo.values_slot_stride = L * cap * H;
  fifo.positions_slot_stride = L * cap;
  fifo.meta_slot_stride = L;
  fifo.capacity = capacity_;

  FifoAttentionParams<T> attention;
  attention.rows = activated;
  attention.fifo = fifo;
  attention.kind = config_.attention == AttentionKind::kSoftmax ? DeviceAttention::kSoftmax
                   : config_.attention == AttentionKind::kRelu2 ? DeviceAttention::kRelu2
                                                                : DeviceAttention::kLaplace;
  attention.queries = s.queries;
  attention.keys = s.keys;
  attention.values = s.values;
  attention.gates = s.gates;
  attention.rel_pos_bias = w.rel_pos_bias;
  attention.max_positions = config_.max_positions;
  attention.score_scale = layout_.score_scale;
  attention.z_dim = Z;
  attention.hidden_dim = H;
  attention.longest_chunk = shape.longest_chunk;
  attention.splits = shape.splits;
  attention.tile_splits = shape.tile_splits;
  attention.split_len = shape.split_len;
  attention.partial_h = s.partial_h;
  attention.partial_max = s.partial_max;
  attention.partial_sum = s.partial_sum;
  attention.row_counters = s.row_counters;
  attention.out = s.attended;
  LaunchFifoAttention(attention, stream_);
  RETURN_IF_ERROR(
      Linear(cublas_, {s.attended, w.h_proj_weight, s.gau_out, rows, H, D, kGemmType<T>}));

  FifoPushParams<T> push;
  push.rows = activated;
  push.fifo = fifo;
  push.keys = s.keys;
  push.values = s.values;
  push.z_dim = Z;
  push.hidden_dim = H;
  LaunchFifoPush(push, stream_);

  // 7-8. x = SiLU(hx + gau + x), post-norm.
  ResidualParams residual;
  residual.x = s.x;
  residual.rows = rows;
  residual.dim = D;
  residual.hx = s.hx;
  residual.hx_bias = w.hx_proj_bias;
  residual.gau_out = s.gau_out;
  residual.gau_bias = w.h_proj_bias;
  residual.row_active_index = s.row_active_index;
  residual.confidence = s.confidence;
  if (!config_.normalize_before) residual.post_norm = w.norm;
  if (config_.normalize_before && !config_.has_ffn()) {
    residual.next_stats = s.norm_stats;
    residual.stats_kind = ToDeviceNorm(config_.norm);
  }
  LaunchResidual(residual, stream_);

  // 9. Normalised FFN.
  if (config_.has_ffn()) {
    DeviceNormWeights pre = config_.normalize_before ? w.ffn_norm : DeviceNormWeights{};
    LaunchNormRows<T>({pre, s.x, nullptr, s.ffn_in, rows, D}, stream_);
    RETURN_IF_ERROR(
        Linear(cublas_, {s.ffn_in, w.fc1_weight, s.ffn_hidden, rows, D, F, kGemmType<T>}));
    LaunchBiasSilu<T>({s.ffn_hidden, w.fc1_bias, s.ffn_act, rows, F}, stream_);
    RETURN_IF_ERROR(
        Linear(cublas_, {s.ffn_act, w.fc2_weight, s.ffn_out, rows, F, D, kGemmType<T>}));
    ResidualParams closing;
    closing.x = s.x;
    closing.rows = rows;
    closing.dim = D;
    closing.ffn_out = s.ffn_out;
    closing.ffn_bias = w.fc2_bias;
    if (!config_.normalize_before) closing.post_norm = w.ffn_norm;
    if (config_.normalize_before) {
      closing.next_stats = s.norm_stats;
      closing.stats_kind = ToDeviceNorm(config_.norm);
    }
    LaunchResidual(closing, stream_);
  }
  return absl::OkStatus();
}

// The rest of the class is instantiated in cuda_backend.cc.
template absl::Status CudaBackend<float>::Enqueue(const Shape&);
template absl::Status CudaBackend<float>::EnqueueLayer(int, const Shape&, const DeviceInputs&);
template absl::Status CudaBackend<__half>::Enqueue(const Shape&);
template absl::Status CudaBackend<__half>::EnqueueLayer(int, const Shape&, const DeviceInputs&);
template absl::Status CudaBackend<__nv_bfloat16>::Enqueue(const Shape&);
template absl::Status CudaBackend<__nv_bfloat16>::EnqueueLayer(int, const Shape&,
                                                               const DeviceInputs&);

}  // namespace cuda
}  // namespace seqboat
