// CudaBackend: one forward pass = one upload of the batch's bookkeeping, every layer's kernels
// and cuBLAS products enqueued on one stream (decode shapes replayed from CUDA graphs), one
// download of the outputs. The router's decisions never leave the device: the activated-row
// count is read by the kernels, and the products over compacted rows use the batch's row
// count as an upper bound.
//
// This file: creation and memory, the host side of Forward, CUDA graphs and the state slots.
// The work enqueued on the stream is in cuda_forward.cc.
#include "kernels/cuda_backend.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_backend_impl.h"
#include "kernels/cuda_status.h"
#include "kernels/ema_scan.h"
#include "runtime/util/status_macros.h"

namespace seqboat {
namespace cuda {
namespace {

constexpr size_t kCublasWorkspaceBytes = 32u << 20;
constexpr size_t kMaxCachedGraphs = 64;

}  // namespace

template <typename T>
CudaBackend<T>::~CudaBackend() {
  if (stream_ != nullptr) (void)cudaStreamSynchronize(stream_);
  ClearGraphs();
  if (cublas_ != nullptr) (void)cublasDestroy(cublas_);
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
}

template <typename T>
void CudaBackend<T>::ClearGraphs() {
  for (auto& [key, exec] : graphs_) (void)cudaGraphExecDestroy(exec);
  graphs_.clear();
}

template <typename T>
absl::Status CudaBackend<T>::Init() {
  const int L = config_.layers, D = config_.embed_dim, N = config_.n_dim, Z = config_.z_dim,
            H = config_.hidden_dim;
  const int64_t S = options_.num_slots, cap = capacity_;
  SEQBOAT_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  SEQBOAT_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&multiprocessors_, cudaDevAttrMultiProcessorCount, options_.device));
  int shared_limit = 0;
  SEQBOAT_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(
      &shared_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, options_.device));
  int most_splits = 0, longest_split = 0;
  ChooseAttentionSplits(1, capacity_, multiprocessors_, &most_splits, &longest_split);
  ChooseAttentionSplits(int64_t{1} << 30, capacity_, multiprocessors_, &most_splits,
                        &longest_split);
  const size_t attention_shared = AttentionSharedBytes(longest_split, Z, H);
  if (attention_shared > static_cast<size_t>(shared_limit)) {
    return absl::UnimplementedError(absl::StrCat(
        "the attention kernels need ", attention_shared, " bytes of shared memory for z_dim ", Z,
        ", hidden_dim ", H, "; device ", options_.device, " allows ", shared_limit));
  }

  // Budget first: a clear message before any allocation is tried.
  const size_t per_slot = StateBytesPerSlot();
  const size_t state_bytes = per_slot * static_cast<size_t>(S);
  if (options_.state_memory_budget_bytes > 0 && state_bytes > options_.state_memory_budget_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("state for ", S, " slots needs ", state_bytes, " bytes (", per_slot,
                     " per slot); the state memory budget of ", options_.state_memory_budget_bytes,
                     " bytes holds ", options_.state_memory_budget_bytes / per_slot, " slots"));
  }
  size_t free_bytes = 0, total_bytes = 0;
  SEQBOAT_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
  if (state_bytes > free_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "state for ", S, " slots needs ", state_bytes, " bytes (", per_slot, " per slot); device ",
        options_.device, " has ", free_bytes, " bytes free of ", total_bytes));
  }

  SEQBOAT_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  SEQBOAT_CUBLAS_RETURN_IF_ERROR(cublasCreate(&cublas_));
  SEQBOAT_CUBLAS_RETURN_IF_ERROR(cublasSetStream(cublas_, stream_));
  RETURN_IF_ERROR(cublas_workspace_.Allocate(kCublasWorkspaceBytes, "the cuBLAS workspace"));
  RETURN_IF_ERROR(probe_memory_.Allocate(256, "the health probe"));
  SEQBOAT_CUBLAS_RETURN_IF_ERROR(
      cublasSetWorkspace(cublas_, cublas_workspace_.data(), kCublasWorkspaceBytes));
  // fp32 weights stay fp32 in the products (no TF32), for parity with the CPU backend.
  SEQBOAT_CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));

  ASSIGN_OR_RETURN(weights_, UploadWeights<T>(model_, truncation_, &weight_memory_));

  RETURN_IF_ERROR(ema_memory_.Allocate(S * L * D * N * sizeof(float), "EMA state"));
  RETURN_IF_ERROR(ring_memory_.Allocate(
      S * L * static_cast<size_t>(truncation_) * D * sizeof(float), "trained-horizon input rings"));
  RETURN_IF_ERROR(keys_memory_.Allocate(S * L * cap * Z * sizeof(T), "FIFO keys"));
  RETURN_IF_ERROR(values_memory_.Allocate(S * L * cap * H * sizeof(T), "FIFO values"));
  RETURN_IF_ERROR(positions_memory_.Allocate(S * L * cap * sizeof(int64_t), "FIFO positions"));
  RETURN_IF_ERROR(meta_memory_.Allocate(S * L * sizeof(FifoMeta), "FIFO bookkeeping"));
  ema_state_ = reinterpret_cast<float*>(ema_memory_.data());
  input_ring_ = reinterpret_cast<float*>(ring_memory_.data());
  fifo_keys_ = reinterpret_cast<T*>(keys_memory_.data());
  fifo_values_ = reinterpret_cast<T*>(values_memory_.data());
  fifo_positions_ = reinterpret_cast<int64_t*>(positions_memory_.data());
  fifo_meta_ = reinterpret_cast<FifoMeta*>(meta_memory_.data());
  // Zero everything once (FIFO entries are written before they are read, but zeros keep
  // whole-slot copies and memory checkers quiet).
  for (DeviceMemory* memory : {&ema_memory_, &ring_memory_, &keys_memory_, &values_memory_,
                               &positions_memory_, &meta_memory_}) {
    if (memory->bytes() > 0)
      SEQBOAT_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(memory->data(), 0, memory->bytes(), stream_));
  }
  slot_position_.assign(S, 0);
  RETURN_IF_ERROR(EnsureCapacity({16, 16, 16, 16}));
  SEQBOAT_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

template <typename T>
void CudaBackend<T>::CarveScratch(Carver& carver, const Capacity& c, Scratch* s) const {
  const int64_t D = config_.embed_dim, Z = config_.z_dim, H = config_.hidden_dim,
                F = config_.ffn_dim, V = config_.vocab_size, L = config_.layers, rows = c.rows;
  s->inputs =
      carver.Take<uint8_t>(LayoutInputs(c.rows, c.chunks, c.logit_rows, config_.layers).bytes);
  s->x = carver.Take<float>(rows * D);
  s->norm_stats = carver.Take<float2>(rows);
  s->mx = carver.Take<T>(rows * D);
  s->hx = carver.Take<float>(rows * (2 + D));
  s->projected = carver.Take<float>(rows * (Z + 2 * H));
  s->queries = carver.Take<float>(rows * Z);
  s->keys = carver.Take<T>(rows * Z);
  s->values = carver.Take<T>(rows * H);
  s->gates = carver.Take<float>(rows * H);
  s->partial_h = carver.Take<float>(c.partial_rows * H);
  s->partial_max = carver.Take<float>(c.partial_rows);
  s->partial_sum = carver.Take<float>(c.partial_rows);
  s->row_counters = carver.Take<int32_t>(rows);
  s->attended = carver.Take<T>(rows * H);
  s->gau_out = carver.Take<float>(rows * D);
  s->confidence = carver.Take<float>(rows);
  s->row_active_index = carver.Take<int32_t>(rows);
  s->activated_rows = carver.Take<int32_t>(rows);
  s->chunk_active_begin = carver.Take<int32_t>(L * (c.chunks + 1));
  const bool rotary = config_.position == PositionKind::kRotary;
  s->rotary_cos = carver.Take<float>(rotary ? rows * (Z / 2) : 0);
  s->rotary_sin = carver.Take<float>(rotary ? rows * (Z / 2) : 0);
  s->ffn_in = carver.Take<T>(F > 0 ? rows * D : 0);
  s->ffn_hidden = carver.Take<float>(rows * F);
  s->ffn_act = carver.Take<T>(rows * F);
  s->ffn_out = carver.Take<float>(F > 0 ? rows * D : 0);
  s->final_rows = carver.Take<T>(c.logit_rows * D);
  s->logits = carver.Take<float>(c.logit_rows * V);
  s->activations = carver.Take<uint8_t>(rows * L);
  s->confidences = carver.Take<float>(rows * L);
}

template <typename T>
void CudaBackend<T>::CarveStaging(Carver& carver, const Capacity& c, HostStaging* h) const {
  h->inputs =
      carver.Take<uint8_t>(LayoutInputs(c.rows, c.chunks, c.logit_rows, config_.layers).bytes);
  h->logits = carver.Take<float>(c.logit_rows * config_.vocab_size);
  h->activations = carver.Take<uint8_t>(c.rows * config_.layers);
  h->confidences = carver.Take<float>(c.rows * config_.layers);
}

template <typename T>
absl::Status CudaBackend<T>::EnsureCapacity(const Capacity& need) {
  if (scratch_capacity_.Holds(need)) return absl::OkStatus();
  // Grow geometrically so that a stream of slightly larger batches reallocates rarely.
  Capacity next;
  next.rows = std::max(need.rows, scratch_capacity_.rows * 2);
  next.chunks = std::max(need.chunks, scratch_capacity_.chunks * 2);
  next.logit_rows = std::max(need.logit_rows, scratch_capacity_.logit_rows * 2);
  next.partial_rows = std::max(need.partial_rows, scratch_capacity_.partial_rows * 2);
  if (stream_ != nullptr) SEQBOAT_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  ClearGraphs();  // they point into the old buffers
  scratch_capacity_ = {};
  Carver measure(nullptr);
  Scratch unused;
  CarveScratch(measure, next, &unused);
  RETURN_IF_ERROR(scratch_memory_.Allocate(measure.bytes(), "per-call activations"));
  Carver device(scratch_memory_.data());
  CarveScratch(device, next, &scratch_);
  SEQBOAT_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(scratch_memory_.data(), 0, scratch_memory_.bytes(), stream_));
  Carver measure_host(nullptr);
  HostStaging unused_host;
  CarveStaging(measure_host, next, &unused_host);
  RETURN_IF_ERROR(staging_memory_.Allocate(measure_host.bytes(), "input/output staging"));
  Carver host(staging_memory_.data());
  CarveStaging(host, next, &staging_);
  scratch_capacity_ = next;
  return absl::OkStatus();
}

template <typename T>
absl::Status CudaBackend<T>::CheckSlot(SlotId slot, const char* what) const {
  return CheckSlotId(slot, num_slots(), what);
}

template <typename T>
absl::Status CudaBackend<T>::Forward(absl::Span<const SequenceChunk> batch,
                                     const ForwardOutputs& out) {
  RETURN_IF_ERROR(ValidateForward(batch, out, num_slots(), config_.vocab_size, config_.layers));
  if (batch.empty()) return absl::OkStatus();
  SEQBOAT_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  Shape shape;
  shape.rows = TotalTokens(batch);
  shape.chunks = static_cast<int64_t>(batch.size());
  shape.logit_rows = LogitRows(batch);
  shape.want_activations = !out.activations.empty();
  shape.want_confidences = !out.confidences.empty();
  for (const SequenceChunk& chunk : batch)
    shape.longest_chunk =
        std::max<int64_t>(shape.longest_chunk, static_cast<int64_t>(chunk.tokens.size()));
  ChooseAttentionSplits(shape.rows, capacity_, multiprocessors_, &shape.splits, &shape.split_len);
  shape.tile_splits = ChooseTileSplits(shape.rows, multiprocessors_);
  const int64_t partial_rows =
      std::max(shape.rows * shape.splits, TiledPartialRows(shape.rows, shape.tile_splits));
  RETURN_IF_ERROR(EnsureCapacity({shape.rows, shape.chunks, shape.logit_rows, partial_rows}));

  // Row bookkeeping into the pinned staging area: rows are the batch's tokens in chunk order.
  const InputLayout layout =
      LayoutInputs(shape.rows, shape.chunks, shape.logit_rows, config_.layers);
  uint8_t* host = staging_.inputs;
  auto* positions = reinterpret_cast<int64_t*>(host + layout.positions);
  auto* tokens = reinterpret_cast<int32_t*>(host + layout.tokens);
  auto* row_chunk = reinterpret_cast<int32_t*>(host + layout.row_chunk);
  auto* chunk_slot = reinterpret_cast<int32_t*>(host + layout.chunk_slot);
  auto* chunk_row_begin = reinterpret_cast<int32_t*>(host + layout.chunk_row_begin);
  auto* logit_rows = reinterpret_cast<int32_t*>(host + layout.logit_rows);
  auto* activation_bias = reinterpret_cast<float*>(host + layout.activation_bias);
  int32_t row = 0, logit_row = 0;
  for (size_t c = 0; c < batch.size(); ++c) {
    const SequenceChunk& chunk = batch[c];
    chunk_slot[c] = chunk.slot;
    for (int l = 0; l < config_.layers; ++l)
      activation_bias[c * config_.layers + l] =
          chunk.activation_bias.empty() ? 0.0f : chunk.activation_bias[l];
    chunk_row_begin[c] = row;
    const int64_t start = slot_position_[chunk.slot];
    for (size_t i = 0; i < chunk.tokens.size(); ++i, ++row) {
      tokens[row] = chunk.tokens[i];
      positions[row] = start + static_cast<int64_t>(i);
      row_chunk[row] = static_cast<int32_t>(c);
      if (chunk.all_logits || i + 1 == chunk.tokens.size()) logit_rows[logit_row++] = row;
    }
  }
  chunk_row_begin[batch.size()] = row;

  // Decode steps (one token per chunk) repeat their shape every iteration: replay a graph.
  if (options_.use_cuda_graphs && shape.rows == shape.chunks) {
    RETURN_IF_ERROR(RunGraph(shape));
  } else {
    RETURN_IF_ERROR(Enqueue(shape));
  }
  SEQBOAT_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));

  std::memcpy(out.logits.data(), staging_.logits,
              sizeof(float) * shape.logit_rows * config_.vocab_size);
  const int64_t flags = shape.rows * config_.layers;  // one per token and layer
  if (shape.want_activations) std::memcpy(out.activations.data(), staging_.activations, flags);
  if (shape.want_confidences)
    std::memcpy(out.confidences.data(), staging_.confidences, sizeof(float) * flags);
  for (const SequenceChunk& chunk : batch)
    slot_position_[chunk.slot] += static_cast<int64_t>(chunk.tokens.size());
  return absl::OkStatus();
}

template <typename T>
absl::Status CudaBackend<T>::RunGraph(const Shape& shape) {
  auto it = graphs_.find(shape.Key());
  if (it == graphs_.end()) {
    // The first time a shape runs eagerly: it loads the kernels and lets cuBLAS settle on
    // its choices outside a capture. The second time it is captured.
    if (graph_candidates_.insert(shape.Key()).second) return Enqueue(shape);
    if (graphs_.size() >= kMaxCachedGraphs) ClearGraphs();
    cudaGraph_t graph = nullptr;
    SEQBOAT_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    const absl::Status enqueued = Enqueue(shape);
    const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
    RETURN_IF_ERROR(enqueued);
    SEQBOAT_CUDA_RETURN_IF_ERROR(ended);
    cudaGraphExec_t exec = nullptr;
    const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    SEQBOAT_CUDA_RETURN_IF_ERROR(instantiated);
    it = graphs_.emplace(shape.Key(), exec).first;
  }
  SEQBOAT_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(it->second, stream_));
  return absl::OkStatus();
}

template <typename T>
absl::Status CudaBackend<T>::ResetSlot(SlotId slot) {
  RETURN_IF_ERROR(CheckSlot(slot, "ResetSlot:"));
  SEQBOAT_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  const size_t L = config_.layers, DN = static_cast<size_t>(config_.embed_dim) * config_.n_dim;
  SEQBOAT_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(ema_state_ + slot * L * DN, 0, L * DN * sizeof(float), stream_));
  SEQBOAT_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(fifo_meta_ + slot * L, 0, L * sizeof(FifoMeta), stream_));
  slot_position_[slot] = 0;
  return absl::OkStatus();
}

template <typename T>
absl::Status CudaBackend<T>::CopySlot(SlotId from, SlotId to) {
  RETURN_IF_ERROR(CheckSlot(from, "CopySlot: source"));
  RETURN_IF_ERROR(CheckSlot(to, "CopySlot: destination"));
  if (from == to) return absl::OkStatus();
  SEQBOAT_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  // Each array holds [slots, ...]: one slot's part is contiguous.
  for (const DeviceMemory* memory : {&ema_memory_, &ring_memory_, &keys_memory_, &values_memory_,
                                     &positions_memory_, &meta_memory_}) {
    const size_t per_slot = memory->bytes() / options_.num_slots;
    if (per_slot == 0) continue;
    SEQBOAT_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(memory->data() + per_slot * to,
                                                 memory->data() + per_slot * from, per_slot,
                                                 cudaMemcpyDeviceToDevice, stream_));
  }
  slot_position_[to] = slot_position_[from];
  return absl::OkStatus();
}

template <typename T>
absl::Status CudaBackend<T>::Stats(SlotId slot, SlotStats* stats) const {
  RETURN_IF_ERROR(CheckSlot(slot, "Stats:"));
  SEQBOAT_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  const int L = config_.layers;
  std::vector<FifoMeta> meta(L);
  SEQBOAT_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(meta.data(), fifo_meta_ + static_cast<int64_t>(slot) * L,
                      L * sizeof(FifoMeta), cudaMemcpyDeviceToHost, stream_));
  SEQBOAT_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  stats->tokens = slot_position_[slot];
  stats->activated.clear();
  stats->fifo_entries.clear();
  for (const FifoMeta& m : meta) {
    stats->activated.push_back(m.activated);
    stats->fifo_entries.push_back(m.count);
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status CudaBackend<T>::CheckHealth() {
  SEQBOAT_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  // A failed call may leave an error pending: clear it, unless it is sticky (an illegal
  // address, a kernel fault), which cannot be cleared and comes back from every later call:
  // the context is lost until the process ends. A failed allocation is not sticky.
  (void)cudaGetLastError();
  SEQBOAT_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  // A tiny real operation on the stream, on memory of its own (scratch may be mid-reallocation).
  SEQBOAT_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(probe_memory_.data(), 0, probe_memory_.bytes(), stream_));
  SEQBOAT_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

namespace {

template <typename T>
absl::StatusOr<std::unique_ptr<Backend>> Make(const Model& model, const CudaBackendOptions& options,
                                              const SlotLayout& layout) {
  auto backend = std::make_unique<CudaBackend<T>>(model, options, layout);
  RETURN_IF_ERROR(backend->Init());
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace

template class CudaBackend<float>;
template class CudaBackend<__half>;
template class CudaBackend<__nv_bfloat16>;

}  // namespace cuda

absl::Status CudaDeviceAvailable(int device) {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::FailedPreconditionError(absl::StrCat(
        "no usable CUDA device: ", cudaGetErrorName(error), " (", cudaGetErrorString(error), ")"));
  }
  if (device < 0 || device >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("CUDA device ", device, " does not exist; this machine has ", count));
  }
  return absl::OkStatus();
}

namespace {

// The device dtype the options ask for.
DType DeviceDType(const Model& model, WeightDType requested) {
  switch (requested) {
    case WeightDType::kF32: return DType::kF32;
    case WeightDType::kF16: return DType::kF16;
    case WeightDType::kBF16: return DType::kBF16;
    case WeightDType::kAsStored:
    case WeightDType::kInt8: break;  // refused by CudaLayout
  }
  return model.stored_dtype();
}

// The shared checks and layout, then the limits of the kernels' shared-memory layouts.
absl::StatusOr<SlotLayout> CudaLayout(const ModelConfig& config,
                                      const CudaBackendOptions& options) {
  ASSIGN_OR_RETURN(SlotLayout layout, MakeSlotLayout(config, options));
  if (options.weight_dtype == WeightDType::kInt8) {
    return absl::InvalidArgumentError(
        "weight dtype int8: the CUDA backend keeps matrices in f32, f16 or bf16 (int8 is the CPU "
        "backend's)");
  }
  if (config.n_dim > cuda::kMaxEmaDim) {
    return absl::UnimplementedError(
        absl::StrCat("the CUDA backend supports n_dim <= ", cuda::kMaxEmaDim, "; this model has ",
                     config.n_dim));
  }
  if (config.embed_dim > 8192 || config.z_dim > 1024 || layout.fifo_capacity > 64 * 2048 - 1) {
    return absl::UnimplementedError(
        absl::StrCat("the CUDA backend supports embed_dim <= 8192, z_dim <= 1024 and ",
                     "a FIFO of at most 131071 entries; this model has ", config.embed_dim, ", ",
                     config.z_dim, ", ", layout.fifo_capacity));
  }
  return layout;
}

}  // namespace

absl::StatusOr<size_t> CudaStateBytesPerSlot(const Model& model,
                                             const CudaBackendOptions& options) {
  ASSIGN_OR_RETURN(SlotLayout layout, CudaLayout(model.config(), options));
  const size_t kv_bytes = DTypeSize(DeviceDType(model, options.weight_dtype));
  return StateBytesPerSlot(model.config(), layout, kv_bytes, sizeof(cuda::FifoMeta));
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const Model& model,
                                                           const CudaBackendOptions& options) {
  ASSIGN_OR_RETURN(SlotLayout layout, CudaLayout(model.config(), options));
  RETURN_IF_ERROR(CudaDeviceAvailable(options.device));
  switch (DeviceDType(model, options.weight_dtype)) {
    case DType::kF32: return cuda::Make<float>(model, options, layout);
    case DType::kF16: return cuda::Make<__half>(model, options, layout);
    case DType::kBF16: return cuda::Make<__nv_bfloat16>(model, options, layout);
  }
  return absl::InternalError("unknown weight dtype");
}

}  // namespace seqboat
