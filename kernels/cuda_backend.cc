// CudaBackend: one forward pass = one upload of the batch's bookkeeping, every layer's kernels
// and cuBLAS products enqueued on one stream (decode shapes replayed from CUDA graphs), one
// download of the outputs. The router's decisions never leave the device: the activated-row
// count is read by the kernels, and the products over compacted rows use the batch's row
// count as an upper bound.
#include "kernels/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda_status.h"
#include "kernels/device_memory.h"
#include "kernels/device_weights.h"
#include "kernels/ema_scan.h"
#include "kernels/fifo_attention.h"
#include "kernels/gau_kernels.h"
#include "kernels/gemm.h"
#include "kernels/router.h"
#include "kernels/row_kernels.h"
#include "runtime/util/status_macros.h"

namespace seqboat {
namespace cuda {
namespace {

constexpr int32_t kPadId = 1;
constexpr size_t kCublasWorkspaceBytes = 32u << 20;
constexpr size_t kMaxCachedGraphs = 64;

template <typename T>
constexpr cudaDataType_t kGemmType = CUDA_R_32F;
template <>
constexpr cudaDataType_t kGemmType<__half> = CUDA_R_16F;
template <>
constexpr cudaDataType_t kGemmType<__nv_bfloat16> = CUDA_R_16BF;

// The sizes one forward pass is enqueued for; decode shapes (one token per chunk) are
// captured as graphs keyed by this.
struct Shape {
  int64_t rows = 0;
  int64_t chunks = 0;
  int64_t logit_rows = 0;
  int64_t longest_chunk = 1;
  int splits = 1;
  int split_len = 0;
  int tile_splits = 1;
  bool want_decisions = false;
  bool want_confidences = false;
  auto Key() const {
    return std::tuple(rows, chunks, logit_rows, want_decisions, want_confidences);
  }
};

// Where the uploaded bookkeeping sits (byte offsets), packed for one copy.
struct InputLayout {
  size_t positions, tokens, row_chunk, chunk_slot, chunk_row_begin, logit_rows, bytes;
};
InputLayout LayoutInputs(int64_t rows, int64_t chunks, int64_t logit_rows) {
  Carver carver(nullptr);
  InputLayout layout;
  layout.positions = carver.TakeOffset<int64_t>(rows);
  layout.tokens = carver.TakeOffset<int32_t>(rows);
  layout.row_chunk = carver.TakeOffset<int32_t>(rows);
  layout.chunk_slot = carver.TakeOffset<int32_t>(chunks);
  layout.chunk_row_begin = carver.TakeOffset<int32_t>(chunks + 1);
  layout.logit_rows = carver.TakeOffset<int32_t>(logit_rows);
  layout.bytes = carver.bytes();
  return layout;
}

struct Capacity {
  int64_t rows = 0, chunks = 0, logit_rows = 0, partial_rows = 0;
  bool Holds(const Capacity& need) const {
    return need.rows <= rows && need.chunks <= chunks && need.logit_rows <= logit_rows &&
           need.partial_rows <= partial_rows;
  }
};

template <typename T>
class CudaBackend final : public Backend {
 public:
  CudaBackend(const Model& model, const CudaBackendOptions& options, int fifo_capacity,
              int truncation)
      : model_(model),
        config_(model.config()),
        options_(options),
        capacity_(fifo_capacity),
        truncation_(truncation) {}
  ~CudaBackend() override;

  absl::Status Init();

  int num_slots() const override { return options_.num_slots; }
  const char* name() const override { return "cuda"; }
  size_t state_bytes_per_slot() const override { return StateBytesPerSlot(); }

  absl::Status Forward(absl::Span<const SequenceChunk> batch, const ForwardOutputs& out) override;
  absl::Status ResetSlot(SlotId slot) override;
  absl::Status CopySlot(SlotId from, SlotId to) override;
  absl::Status Stats(SlotId slot, SlotStats* stats) const override;

  size_t StateBytesPerSlot() const {
    const size_t L = config_.layers, D = config_.embed_dim, N = config_.n_dim, Z = config_.z_dim,
                 H = config_.hidden_dim, cap = capacity_;
    return L * (D * N * sizeof(float) + static_cast<size_t>(truncation_) * D * sizeof(float) +
                cap * (Z + H) * sizeof(T) + cap * sizeof(int64_t) + sizeof(FifoMeta));
  }

 private:
  // Per-call arrays (rows = tokens of the call, R = its activated rows, R <= rows).
  struct Scratch {
    uint8_t* inputs;              // the uploaded bookkeeping (InputLayout)
    float* x;                     // [rows, D] residual stream
    float2* norm_stats;           // [rows] statistics of x for the next pre-norm
    T* mx;                        // [rows, D] SiLU(MD-EMA output)
    float* hx;                    // [rows, 2 + D]
    float* projected;             // [rows, Z + 2H] mx_proj of every row (see EnqueueLayer)
    float* queries;               // [rows, Z]
    T* keys;                      // [rows, Z]
    T* values;                    // [rows, H]
    float* gates;                 // [rows, H]
    float* partial_h;             // [partial_rows, H]
    float* partial_max;           // [partial_rows]
    float* partial_sum;           // [partial_rows]
    int32_t* row_counters;        // [rows] split-attention merge counters (kept zero)
    T* attended;                  // [rows, H] h * r
    float* gau_out;               // [rows, D]
    float* confidence;            // [rows]
    int32_t* row_active_index;    // [rows]
    int32_t* activated_rows;      // [rows]
    int32_t* chunk_active_begin;  // [L, chunks + 1]
    float* rotary_cos;            // [rows, Z/2]
    float* rotary_sin;            // [rows, Z/2]
    T* ffn_in;                    // [rows, D]
    float* ffn_hidden;            // [rows, F]
    T* ffn_act;                   // [rows, F]
    float* ffn_out;               // [rows, D]
    T* final_rows;                // [logit_rows, D]
    float* logits;                // [logit_rows, V]
    uint8_t* decisions;           // [rows, L]
    float* confidences;           // [rows, L]
  };
  // Pinned host mirrors of what travels.
  struct HostStaging {
    uint8_t* inputs;
    float* logits;
    uint8_t* decisions;
    float* confidences;
  };
  struct DeviceInputs {
    const int64_t* positions;
    const int32_t* tokens;
    const int32_t* row_chunk;
    const int32_t* chunk_slot;
    const int32_t* chunk_row_begin;
    const int32_t* logit_rows;
  };

  void CarveScratch(Carver& carver, const Capacity& c, Scratch* s) const;
  void CarveStaging(Carver& carver, const Capacity& c, HostStaging* h) const;
  absl::Status EnsureCapacity(const Capacity& need);
  absl::Status CheckSlot(SlotId slot, const char* what) const;
  // Everything from the upload to the downloads, on stream_; no host synchronisation.
  absl::Status Enqueue(const Shape& shape);
  absl::Status EnqueueLayer(int l, const Shape& shape, const DeviceInputs& in);
  absl::Status RunGraph(const Shape& shape);
  void ClearGraphs();

  const Model& model_;
  const ModelConfig config_;
  const CudaBackendOptions options_;
  const int capacity_;    // FIFO entries per layer
  const int truncation_;  // T in the trained horizon, else 0
  int multiprocessors_ = 1;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  DeviceMemory cublas_workspace_;

  DeviceMemory weight_memory_;
  DeviceModelWeights<T> weights_;

  // State slots: [slots, L, ...] per array, allocated once.
  DeviceMemory ema_memory_, ring_memory_, keys_memory_, values_memory_, positions_memory_,
      meta_memory_;
  float* ema_state_ = nullptr;          // [slots, L, N, D]
  float* input_ring_ = nullptr;         // [slots, L, T, D] (trained horizon)
  T* fifo_keys_ = nullptr;              // [slots, L, cap, Z]
  T* fifo_values_ = nullptr;            // [slots, L, cap, H]
  int64_t* fifo_positions_ = nullptr;   // [slots, L, cap]
  FifoMeta* fifo_meta_ = nullptr;       // [slots, L]
  std::vector<int64_t> slot_position_;  // tokens consumed per slot (host knows these)

  Capacity scratch_capacity_;
  DeviceMemory scratch_memory_;
  PinnedMemory staging_memory_;
  Scratch scratch_{};
  HostStaging staging_{};
  std::map<std::tuple<int64_t, int64_t, int64_t, bool, bool>, cudaGraphExec_t> graphs_;
  std::set<std::tuple<int64_t, int64_t, int64_t, bool, bool>>
      graph_candidates_;  // shapes seen once
};

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
  s->inputs = carver.Take<uint8_t>(LayoutInputs(c.rows, c.chunks, c.logit_rows).bytes);
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
  s->decisions = carver.Take<uint8_t>(rows * L);
  s->confidences = carver.Take<float>(rows * L);
}

template <typename T>
void CudaBackend<T>::CarveStaging(Carver& carver, const Capacity& c, HostStaging* h) const {
  h->inputs = carver.Take<uint8_t>(LayoutInputs(c.rows, c.chunks, c.logit_rows).bytes);
  h->logits = carver.Take<float>(c.logit_rows * config_.vocab_size);
  h->decisions = carver.Take<uint8_t>(c.rows * config_.layers);
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
  shape.want_decisions = !out.activations.empty();
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
  const InputLayout layout = LayoutInputs(shape.rows, shape.chunks, shape.logit_rows);
  uint8_t* host = staging_.inputs;
  auto* positions = reinterpret_cast<int64_t*>(host + layout.positions);
  auto* tokens = reinterpret_cast<int32_t*>(host + layout.tokens);
  auto* row_chunk = reinterpret_cast<int32_t*>(host + layout.row_chunk);
  auto* chunk_slot = reinterpret_cast<int32_t*>(host + layout.chunk_slot);
  auto* chunk_row_begin = reinterpret_cast<int32_t*>(host + layout.chunk_row_begin);
  auto* logit_rows = reinterpret_cast<int32_t*>(host + layout.logit_rows);
  int32_t row = 0, logit_row = 0;
  for (size_t c = 0; c < batch.size(); ++c) {
    const SequenceChunk& chunk = batch[c];
    chunk_slot[c] = chunk.slot;
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
  const int64_t decisions = shape.rows * config_.layers;
  if (shape.want_decisions) std::memcpy(out.activations.data(), staging_.decisions, decisions);
  if (shape.want_confidences)
    std::memcpy(out.confidences.data(), staging_.confidences, sizeof(float) * decisions);
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
absl::Status CudaBackend<T>::Enqueue(const Shape& shape) {
  const int64_t D = config_.embed_dim, Z = config_.z_dim, V = config_.vocab_size,
                L = config_.layers;
  const int64_t rows = shape.rows;
  Scratch& s = scratch_;
  const InputLayout layout = LayoutInputs(shape.rows, shape.chunks, shape.logit_rows);
  SEQBOAT_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(s.inputs, staging_.inputs, layout.bytes, cudaMemcpyHostToDevice, stream_));
  DeviceInputs in;
  in.positions = reinterpret_cast<const int64_t*>(s.inputs + layout.positions);
  in.tokens = reinterpret_cast<const int32_t*>(s.inputs + layout.tokens);
  in.row_chunk = reinterpret_cast<const int32_t*>(s.inputs + layout.row_chunk);
  in.chunk_slot = reinterpret_cast<const int32_t*>(s.inputs + layout.chunk_slot);
  in.chunk_row_begin = reinterpret_cast<const int32_t*>(s.inputs + layout.chunk_row_begin);
  in.logit_rows = reinterpret_cast<const int32_t*>(s.inputs + layout.logit_rows);

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
  if (shape.want_decisions) {
    SEQBOAT_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(staging_.decisions, s.decisions, rows * L,
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
  router.row_chunk = in.row_chunk;
  router.chunk_row_begin = in.chunk_row_begin;
  router.rows = rows;
  router.chunks = static_cast<int>(chunks);
  router.confidence = s.confidence;
  router.row_active_index = s.row_active_index;
  router.activated_rows = s.activated_rows;
  router.chunk_active_begin = chunk_active_begin;
  router.decisions_out = shape.want_decisions ? s.decisions : nullptr;
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
  // relu2 and laplace divide by w (the parallel pass that trained the model; MODEL.md).
  attention.score_scale = config_.attention == AttentionKind::kSoftmax
                              ? 1.0f / std::sqrt(static_cast<float>(Z))
                              : 1.0f / static_cast<float>(cap);
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
absl::StatusOr<std::unique_ptr<Backend>> Make(const Model& model, const CudaBackendOptions& options,
                                              int capacity, int truncation) {
  auto backend = std::make_unique<CudaBackend<T>>(model, options, capacity, truncation);
  RETURN_IF_ERROR(backend->Init());
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace
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

absl::StatusOr<CudaWeightDType> ParseCudaWeightDType(const std::string& name) {
  if (name == "as_stored") return CudaWeightDType::kAsStored;
  if (name == "f32") return CudaWeightDType::kF32;
  if (name == "f16") return CudaWeightDType::kF16;
  if (name == "bf16") return CudaWeightDType::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("weight dtype \"", name, "\" is not one of as_stored, f32, f16, bf16"));
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const Model& model,
                                                           const CudaBackendOptions& options) {
  const ModelConfig& config = model.config();
  if (options.num_slots < 1 || options.num_slots > (1 << 16)) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_slots is ", options.num_slots, "; expected 1..65536"));
  }
  if (options.fifo_capacity < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("fifo_capacity is ", options.fifo_capacity, "; expected >= 0"));
  }
  if (config.chunk_size <= 0 && options.fifo_capacity == 0) {
    return absl::InvalidArgumentError(
        "this is a SeqBoat-full model (chunk_size <= 0: attention over every activated token); "
        "serving it needs an explicit FIFO bound (fifo_capacity > 0)");
  }
  if (config.chunk_size > 0 && options.fifo_capacity != 0 &&
      options.fifo_capacity != config.chunk_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "fifo_capacity ", options.fifo_capacity, " differs from the model's chunk_size ",
        config.chunk_size, "; leave it 0 for this model"));
  }
  const int capacity = config.chunk_size > 0 ? config.chunk_size : options.fifo_capacity;
  // Limits of the kernels' shared-memory layouts.
  if (config.n_dim > cuda::kMaxEmaDim) {
    return absl::UnimplementedError(
        absl::StrCat("the CUDA backend supports n_dim <= ", cuda::kMaxEmaDim, "; this model has ",
                     config.n_dim));
  }
  if (config.embed_dim > 8192 || config.z_dim > 1024 || capacity > 64 * 2048 - 1) {
    return absl::UnimplementedError(
        absl::StrCat("the CUDA backend supports embed_dim <= 8192, z_dim <= 1024 and ",
                     "a FIFO of at most 131071 entries; this model has ", config.embed_dim, ", ",
                     config.z_dim, ", ", capacity));
  }
  RETURN_IF_ERROR(CudaDeviceAvailable(options.device));
  const int truncation = options.ema_horizon == EmaHorizon::kTrained && config.truncation_length > 0
                             ? config.truncation_length
                             : 0;
  const DType dtype = [&] {
    switch (options.weight_dtype) {
      case CudaWeightDType::kF32:
        return DType::kF32;
      case CudaWeightDType::kF16:
        return DType::kF16;
      case CudaWeightDType::kBF16:
        return DType::kBF16;
      case CudaWeightDType::kAsStored:
        break;
    }
    return model.stored_dtype();
  }();
  switch (dtype) {
    case DType::kF32:
      return cuda::Make<float>(model, options, capacity, truncation);
    case DType::kF16:
      return cuda::Make<__half>(model, options, capacity, truncation);
    case DType::kBF16:
      return cuda::Make<__nv_bfloat16>(model, options, capacity, truncation);
  }
  return absl::InternalError("unknown weight dtype");
}

}  // namespace seqboat
