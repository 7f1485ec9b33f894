// CpuBackend: one forward pass over a batch of chunks, layer by layer, with Sparse Modular
// Activation (only the router-activated rows go through mx_proj, attention and h_proj).
#include "runtime/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <thread>

#include "absl/strings/str_cat.h"
#include "runtime/util/dtype.h"
#include "runtime/util/status_macros.h"

namespace seqboat {

namespace {
// Below this many multiply-adds a parallel loop costs more than it saves.
constexpr int64_t kMinParallelWork = 1 << 15;
// Consecutive activated rows of a prefill chunk attend as one block of BLAS products when
// there are at least kMinBlockRows of them; blocks hold at most kAttentionBlock rows.
constexpr int64_t kAttentionBlock = 64;
constexpr int64_t kMinBlockRows = 4;
// Fewer single queries than threads (a decode step of one or a few sequences) split each
// query's value sums over the pool in columns of this width (a multiple of 16: AttendColumns).
constexpr int64_t kAttentionColumns = 64;
}  // namespace

absl::StatusOr<cpu::MatrixDType> CpuBackend::MatrixDTypeOf(WeightDType dtype) {
  switch (dtype) {
    case WeightDType::kAsStored:
    case WeightDType::kF32: return cpu::MatrixDType::kF32;
    case WeightDType::kBF16: return cpu::MatrixDType::kBF16;
    case WeightDType::kInt8: return cpu::MatrixDType::kInt8;
    case WeightDType::kF16: break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("weight dtype ", WeightDTypeName(dtype),
                   ": the CPU backend keeps matrices in f32 (as_stored), bf16 or int8"));
}

absl::StatusOr<bool> CpuBackend::FifoIsBf16(WeightDType dtype) {
  switch (dtype) {
    case WeightDType::kAsStored:
    case WeightDType::kF32: return false;
    case WeightDType::kBF16: return true;
    case WeightDType::kF16:
    case WeightDType::kInt8: break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("FIFO dtype ", WeightDTypeName(dtype),
                   ": the CPU backend keeps FIFO keys and values in f32 (as_stored) or bf16"));
}

absl::StatusOr<SlotLayout> CpuBackend::Layout(const ModelConfig& config,
                                              const CpuBackendOptions& options) {
  RETURN_IF_ERROR(MatrixDTypeOf(options.weight_dtype).status());
  RETURN_IF_ERROR(FifoIsBf16(options.fifo_dtype).status());
  return MakeSlotLayout(config, options);
}

absl::StatusOr<size_t> CpuBackend::StateBytesPerSlot(const ModelConfig& config,
                                                     const CpuBackendOptions& options) {
  ASSIGN_OR_RETURN(SlotLayout layout, Layout(config, options));
  ASSIGN_OR_RETURN(bool fifo_bf16, FifoIsBf16(options.fifo_dtype));
  return seqboat::StateBytesPerSlot(config, layout, FifoElementBytes(fifo_bf16));
}

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(const Model& model,
                                                               const CpuBackendOptions& options) {
  ASSIGN_OR_RETURN(SlotLayout layout, Layout(model.config(), options));
  ASSIGN_OR_RETURN(cpu::MatrixDType matrix_dtype, MatrixDTypeOf(options.weight_dtype));
  ASSIGN_OR_RETURN(bool fifo_bf16, FifoIsBf16(options.fifo_dtype));
  std::unique_ptr<CpuBackend> backend(
      new CpuBackend(model, options, layout, matrix_dtype, fifo_bf16));
  RETURN_IF_ERROR(backend->AllocateSlots(options.num_slots));
  return backend;
}

CpuBackend::CpuBackend(const Model& model, const CpuBackendOptions& options,
                       const SlotLayout& layout, cpu::MatrixDType matrix_dtype, bool fifo_bf16)
    : model_(model),
      config_(model.config()),
      layout_(layout),
      trained_horizon_(layout.truncation > 0),
      truncation_(layout.truncation),
      fifo_capacity_(layout.fifo_capacity),
      matrix_dtype_(matrix_dtype),
      fifo_bf16_(fifo_bf16),
      pool_(options.num_threads > 0
                ? options.num_threads
                : std::max(1, static_cast<int>(std::thread::hardware_concurrency()))) {
  cpu::UseSingleThreadedBlas();  // the pool is the one set of threads (attention's sgemm too)
  const int D = config_.embed_dim, Z = config_.z_dim, H = config_.hidden_dim, N = config_.n_dim;
  const int64_t cap = fifo_capacity_;
  const int F = config_.ffn_dim, P = Z + 2 * H;
  const auto matrix = [&](const float* w, int64_t out, int64_t in) {
    return cpu::Matrix::Make(w, out, in, matrix_dtype);
  };
  for (const LayerWeights& layer : model.weights().layers) {
    ema_.push_back(MakeEmaCoefficients(layer, D, N, trained_horizon_, truncation_));
    LayerMatrices m;
    m.hx_proj = matrix(layer.hx_proj_weight, 2 + D, D);
    m.mx_proj = matrix(layer.mx_proj_weight, P, D);
    m.h_proj = matrix(layer.h_proj_weight, D, H);
    if (F > 0) {
      m.fc1 = matrix(layer.fc1_weight, F, D);
      m.fc2 = matrix(layer.fc2_weight, D, F);
    }
    matrices_.push_back(std::move(m));
  }
  output_ = matrix(model.weights().output, config_.vocab_size, D);
  attention_.kind = config_.attention;
  attention_.z_dim = Z;
  attention_.hidden_dim = H;
  attention_.score_scale = layout.score_scale;
  attention_.max_positions = config_.max_positions;
  // The slot's floats: per layer the EMA state, the fp32 FIFO keys and values, the input ring.
  const size_t layer_floats = static_cast<size_t>(D) * N + (fifo_bf16_ ? 0 : cap * (Z + H)) +
                              static_cast<size_t>(truncation_) * D;
  state_floats_per_slot_ = layer_floats * config_.layers;
}

size_t CpuBackend::matrix_bytes() const {
  size_t bytes = output_.bytes();
  for (const LayerMatrices& m : matrices_) {
    bytes +=
        m.hx_proj.bytes() + m.mx_proj.bytes() + m.h_proj.bytes() + m.fc1.bytes() + m.fc2.bytes();
  }
  return bytes;
}

absl::Status CpuBackend::AllocateSlots(int count) {
  const int D = config_.embed_dim, Z = config_.z_dim, H = config_.hidden_dim, N = config_.n_dim;
  const int64_t cap = fifo_capacity_;
  const size_t layer_floats = state_floats_per_slot_ / config_.layers;
  slots_.resize(count);
  for (Slot& slot : slots_) {
    // Left uninitialised: only the EMA state needs zeros (ResetSlot); FIFO entries and ring
    // rows are written before they are read, so untouched pages cost no memory.
    slot.floats.reset(new (std::nothrow) float[state_floats_per_slot_]);
    slot.positions.reset(new (std::nothrow) int64_t[cap * config_.layers]);
    if (fifo_bf16_)
      slot.fifo_bf16.reset(new (std::nothrow) uint16_t[cap * (Z + H) * config_.layers]);
    if (slot.floats == nullptr || slot.positions == nullptr ||
        (fifo_bf16_ && slot.fifo_bf16 == nullptr)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "cannot allocate ", count, " state slots of ", state_bytes_per_slot(), " bytes each"));
    }
    float* cursor = slot.floats.get();
    for (int l = 0; l < config_.layers; ++l) {
      LayerState state;
      state.ema_state = cursor;
      float* after_fifo = state.ema_state + static_cast<size_t>(D) * N;
      if (fifo_bf16_) {
        state.fifo_keys = state.fifo_values = nullptr;
        state.fifo_keys_bf16 = slot.fifo_bf16.get() + cap * (Z + H) * l;
        state.fifo_values_bf16 = state.fifo_keys_bf16 + cap * Z;
      } else {
        state.fifo_keys_bf16 = state.fifo_values_bf16 = nullptr;
        state.fifo_keys = after_fifo;
        state.fifo_values = state.fifo_keys + cap * Z;
        after_fifo = state.fifo_values + cap * H;
      }
      state.input_ring = truncation_ > 0 ? after_fifo : nullptr;
      state.fifo_positions = slot.positions.get() + cap * l;
      cursor += layer_floats;
      slot.layers.push_back(state);
    }
  }
  for (int s = 0; s < num_slots(); ++s) RETURN_IF_ERROR(ResetSlot(s));
  return absl::OkStatus();
}

absl::Status CpuBackend::CheckSlot(SlotId slot, const char* what) const {
  return CheckSlotId(slot, num_slots(), what);
}

absl::Status CpuBackend::ResetSlot(SlotId slot_id) {
  RETURN_IF_ERROR(CheckSlot(slot_id, "ResetSlot:"));
  Slot& slot = slots_[slot_id];
  for (LayerState& layer : slot.layers) {
    std::memset(layer.ema_state, 0, sizeof(float) * config_.embed_dim * config_.n_dim);
    layer.fifo_head = 0;
    layer.fifo_count = 0;
    layer.activated = 0;
  }
  slot.position = 0;
  return absl::OkStatus();
}

absl::Status CpuBackend::CopySlot(SlotId from, SlotId to) {
  RETURN_IF_ERROR(CheckSlot(from, "CopySlot: source"));
  RETURN_IF_ERROR(CheckSlot(to, "CopySlot: destination"));
  if (from == to) return absl::OkStatus();
  Slot& source = slots_[from];
  Slot& dest = slots_[to];
  const int D = config_.embed_dim, Z = config_.z_dim, H = config_.hidden_dim, N = config_.n_dim;
  for (int l = 0; l < config_.layers; ++l) {
    const LayerState& s = source.layers[l];
    LayerState& d = dest.layers[l];
    std::memcpy(d.ema_state, s.ema_state, sizeof(float) * D * N);
    // Copy the used ring entries only (a fresh slot's FIFO may be mostly empty).
    for (int32_t i = 0; i < s.fifo_count; ++i) {
      const int64_t p = (s.fifo_head + i) % fifo_capacity_;
      if (fifo_bf16_) {
        std::memcpy(d.fifo_keys_bf16 + p * Z, s.fifo_keys_bf16 + p * Z, sizeof(uint16_t) * Z);
        std::memcpy(d.fifo_values_bf16 + p * H, s.fifo_values_bf16 + p * H, sizeof(uint16_t) * H);
      } else {
        std::memcpy(d.fifo_keys + p * Z, s.fifo_keys + p * Z, sizeof(float) * Z);
        std::memcpy(d.fifo_values + p * H, s.fifo_values + p * H, sizeof(float) * H);
      }
      d.fifo_positions[p] = s.fifo_positions[p];
    }
    if (truncation_ > 0) {
      const int64_t rows = std::min<int64_t>(source.position, truncation_);
      for (int64_t t = source.position - rows; t < source.position; ++t) {
        const int64_t r = t % truncation_;
        std::memcpy(d.input_ring + r * D, s.input_ring + r * D, sizeof(float) * D);
      }
    }
    d.fifo_head = s.fifo_head;
    d.fifo_count = s.fifo_count;
    d.activated = s.activated;
  }
  dest.position = source.position;
  return absl::OkStatus();
}

absl::Status CpuBackend::Stats(SlotId slot_id, SlotStats* stats) const {
  RETURN_IF_ERROR(CheckSlot(slot_id, "Stats:"));
  const Slot& slot = slots_[slot_id];
  stats->tokens = slot.position;
  stats->activated.clear();
  stats->fifo_entries.clear();
  for (const LayerState& layer : slot.layers) {
    stats->activated.push_back(layer.activated);
    stats->fifo_entries.push_back(layer.fifo_count);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Forward(absl::Span<const SequenceChunk> batch, const ForwardOutputs& out) {
  RETURN_IF_ERROR(ValidateForward(batch, out, num_slots(), config_.vocab_size, config_.layers));
  if (batch.empty()) return absl::OkStatus();
  const int D = config_.embed_dim, Z = config_.z_dim;
  const ModelWeights& weights = model_.weights();

  // Row bookkeeping: rows are the batch's tokens in chunk order.
  const int64_t rows = TotalTokens(batch);
  row_position_.resize(rows);
  row_chunk_.resize(rows);
  chunk_begin_.assign(batch.size() + 1, 0);
  for (size_t c = 0; c < batch.size(); ++c) {
    chunk_begin_[c + 1] = chunk_begin_[c] + batch[c].tokens.size();
    const int64_t start = slots_[batch[c].slot].position;
    for (size_t i = 0; i < batch[c].tokens.size(); ++i) {
      row_position_[chunk_begin_[c] + i] = start + i;
      row_chunk_[chunk_begin_[c] + i] = static_cast<int32_t>(c);
    }
  }

  // Embedding (scaled), then the optional embedding norm.
  x_.resize(rows * D);
  const float embed_scale = config_.scale_embedding ? std::sqrt(static_cast<float>(D)) : 1.0f;
  for (size_t c = 0; c < batch.size(); ++c) {
    for (size_t i = 0; i < batch[c].tokens.size(); ++i) {
      const float* row = weights.embed + static_cast<int64_t>(batch[c].tokens[i]) * D;
      float* dst = x_.data() + (chunk_begin_[c] + i) * D;
      for (int d = 0; d < D; ++d) dst[d] = row[d] * embed_scale;
    }
  }
  if (config_.normalize_embedding)
    cpu::Norm(config_.norm, weights.embed_norm, x_.data(), rows, D, x_.data());

  if (config_.position == PositionKind::kRotary) {
    rotary_cos_.resize(rows * (Z / 2));
    rotary_sin_.resize(rows * (Z / 2));
    for (int64_t r = 0; r < rows; ++r) {
      cpu::RotaryTable(row_position_[r], Z, rotary_cos_.data() + r * (Z / 2),
                       rotary_sin_.data() + r * (Z / 2));
    }
  }

  for (int l = 0; l < config_.layers; ++l) RunLayer(l, batch, out);

  // Final norm and output projection over the rows that want logits.
  std::vector<int64_t> logit_rows;
  for (size_t c = 0; c < batch.size(); ++c) {
    if (batch[c].all_logits) {
      for (int64_t r = chunk_begin_[c]; r < chunk_begin_[c + 1]; ++r) logit_rows.push_back(r);
    } else {
      logit_rows.push_back(chunk_begin_[c + 1] - 1);
    }
  }
  std::vector<float> final_rows(logit_rows.size() * D);
  for (size_t i = 0; i < logit_rows.size(); ++i) {
    std::memcpy(final_rows.data() + i * D, x_.data() + logit_rows[i] * D, sizeof(float) * D);
  }
  if (config_.has_final_norm()) {
    cpu::Norm(config_.norm, weights.final_norm, final_rows.data(), logit_rows.size(), D,
              final_rows.data());
  }
  cpu::Linear(final_rows.data(), logit_rows.size(), output_, nullptr, out.logits.data(), &pool_);

  for (const SequenceChunk& chunk : batch) slots_[chunk.slot].position += chunk.tokens.size();
  return absl::OkStatus();
}

void CpuBackend::RunLayer(int l, absl::Span<const SequenceChunk> batch, const ForwardOutputs& out) {
  const int D = config_.embed_dim;
  const int64_t rows = row_position_.size();
  const LayerWeights& layer = model_.weights().layers[l];

  // 1. u = norm(x) (pre-norm) or x.
  u_.resize(rows * D);
  if (config_.normalize_before) {
    cpu::Norm(config_.norm, layer.norm, x_.data(), rows, D, u_.data());
  } else {
    std::memcpy(u_.data(), x_.data(), sizeof(float) * rows * D);
  }
  // 2-3. MD-EMA scan per chunk, mx = SiLU(m).
  RunEma(l, batch);
  // 4. hx_proj over every row: router logits and the skip projection.
  hx_.resize(rows * (2 + D));
  cpu::Linear(mx_.data(), rows, matrices_[l].hx_proj, layer.hx_proj_bias, hx_.data(), &pool_);
  // 5. Router: tempered softmax over two logits, the chunk's activation bias added to logit 0
  // first; ties go to "not activated".
  const double inv_temp = std::exp(-static_cast<double>(layer.router_log_temp[0]));
  router_confidence_.resize(rows);
  activated_rows_.clear();
  chunk_activated_begin_.assign(batch.size() + 1, 0);
  for (int64_t r = 0; r < rows; ++r) {
    const absl::Span<const float> bias = batch[row_chunk_[r]].activation_bias;
    const double b0 = bias.empty() ? 0.0 : static_cast<double>(bias[l]);
    const double g0 = (hx_[r * (2 + D)] + b0) * inv_temp, g1 = hx_[r * (2 + D) + 1] * inv_temp;
    const double top = std::max(g0, g1);
    const double e0 = std::exp(g0 - top), e1 = std::exp(g1 - top);
    const double p0 = e0 / (e0 + e1), p1 = e1 / (e0 + e1);
    const bool active = p1 > p0;
    router_confidence_[r] = static_cast<float>(std::max(p0, p1));
    if (active) {
      activated_rows_.push_back(static_cast<int32_t>(r));
      ++chunk_activated_begin_[row_chunk_[r] + 1];
    }
    if (!out.activations.empty()) out.activations[r * config_.layers + l] = active ? 1 : 0;
    if (!out.confidences.empty()) out.confidences[r * config_.layers + l] = router_confidence_[r];
  }
  for (size_t c = 0; c < batch.size(); ++c)
    chunk_activated_begin_[c + 1] += chunk_activated_begin_[c];
  // 6. GAU on the activated rows only (compress, attend, extract).
  gau_.assign(rows * D, 0.0f);
  if (!activated_rows_.empty()) RunGau(l, batch);
  // 7. x = SiLU(hx + gau + x_in); 8. post-norm.
  for (int64_t r = 0; r < rows; ++r) {
    const float* skip = hx_.data() + r * (2 + D) + 2;
    float* x = x_.data() + r * D;
    const float* gau = gau_.data() + r * D;
    for (int d = 0; d < D; ++d) x[d] += skip[d] + gau[d];
    cpu::SiluInPlace(x, D);
  }
  if (!config_.normalize_before) cpu::Norm(config_.norm, layer.norm, x_.data(), rows, D, x_.data());
  // 9. Normalised FFN.
  if (config_.has_ffn()) RunFfn(l);
}

void CpuBackend::RunEma(int l, absl::Span<const SequenceChunk> batch) {
  const int D = config_.embed_dim, N = config_.n_dim;
  const int64_t rows = row_position_.size();
  const EmaCoefficients& ema = ema_[l];
  const float* omega = model_.weights().layers[l].ema_omega;
  mx_.resize(rows * D);
  // Channels are independent: split them over threads; each thread scans every chunk in order.
  auto scan = [&](int64_t d_begin64, int64_t d_end64) {
    const int d_begin = static_cast<int>(d_begin64), d_end = static_cast<int>(d_end64);
    for (size_t c = 0; c < batch.size(); ++c) {
      LayerState& state = slots_[batch[c].slot].layers[l];
      for (int64_t r = chunk_begin_[c]; r < chunk_begin_[c + 1]; ++r) {
        const float* u = u_.data() + r * D;
        float* m = mx_.data() + r * D;
        if (truncation_ > 0) {
          const int64_t t = row_position_[r];
          float* ring_row = state.input_ring + (t % truncation_) * D;
          // The ring row of t is the row of t - T: read the old input before overwriting it.
          cpu::EmaStepTrained(ema, omega, u, t >= truncation_ ? ring_row : nullptr, N, d_begin,
                              d_end, state.ema_state, m);
          std::memcpy(ring_row + d_begin, u + d_begin, sizeof(float) * (d_end - d_begin));
        } else {
          cpu::EmaStepExact(ema, omega, u, N, d_begin, d_end, state.ema_state, m);
        }
        cpu::SiluInPlace(m + d_begin, d_end - d_begin);
      }
    }
  };
  if (rows * D * N < kMinParallelWork) {
    scan(0, D);
  } else {
    pool_.ParallelFor(D, scan);
  }
}

void CpuBackend::RunGau(int l, absl::Span<const SequenceChunk> batch) {
  const int D = config_.embed_dim, Z = config_.z_dim, H = config_.hidden_dim;
  const int64_t P = Z + 2 * H;  // projected row width [z, r, v]
  const int64_t R = activated_rows_.size();
  const int64_t cap = fifo_capacity_;
  const LayerWeights& layer = model_.weights().layers[l];

  // Compress: gather the activated rows, project, SiLU.
  compact_.resize(R * D);
  for (int64_t a = 0; a < R; ++a) {
    std::memcpy(compact_.data() + a * D, mx_.data() + static_cast<int64_t>(activated_rows_[a]) * D,
                sizeof(float) * D);
  }
  projected_.resize(R * P);
  cpu::Linear(compact_.data(), R, matrices_[l].mx_proj, layer.mx_proj_bias, projected_.data(),
              &pool_);
  cpu::SiluInPlace(projected_.data(), R * P);
  queries_.resize(R * Z);
  keys_.resize(R * Z);
  activated_positions_.resize(R);
  for (int64_t a = 0; a < R; ++a) {
    const float* z = projected_.data() + a * P;
    float* q = queries_.data() + a * Z;
    float* k = keys_.data() + a * Z;
    for (int i = 0; i < Z; ++i) {
      q[i] = z[i] * layer.qk_gamma[i] + layer.qk_beta[i];
      k[i] = z[i] * layer.qk_gamma[Z + i] + layer.qk_beta[Z + i];
    }
    activated_positions_[a] = row_position_[activated_rows_[a]];
    if (config_.position == PositionKind::kRotary) {
      const int64_t r = activated_rows_[a];
      const float* cos_table = rotary_cos_.data() + r * (Z / 2);
      const float* sin_table = rotary_sin_.data() + r * (Z / 2);
      cpu::ApplyRotary(cos_table, sin_table, Z, q);
      cpu::ApplyRotary(cos_table, sin_table, Z, k);
    }
    if (fifo_bf16_) {  // what the FIFO will hold, attended to in this chunk as well
      cpu::RoundToBf16(k, Z);
      cpu::RoundToBf16(projected_.data() + a * P + Z + H, H);
    }
  }

  // Attend: each activated row sees the last `cap` earlier activated tokens of its sequence
  // (the slot's FIFO, then its chunk's earlier activated rows) and itself. Logical index of
  // an entry: FIFO entries 0..fifo-1 (oldest first), then the chunk's activated rows fifo + j.
  cpu::AttentionSpec spec = attention_;
  spec.rel_pos_bias = layer.rel_pos_bias;
  attended_.resize(R * H);
  // Segments covering logical entries [begin, fifo + chunk_end) of chunk c.
  auto build_segments = [&](int32_t c, int64_t begin, int64_t chunk_end, cpu::KvSegment* segments) {
    const LayerState& state = slots_[batch[c].slot].layers[l];
    const int64_t fifo = state.fifo_count;
    int num_segments = 0;
    for (int64_t logical = begin; logical < fifo;) {  // FIFO part, possibly wrapping the ring
      const int64_t physical = (state.fifo_head + logical) % cap;
      const int64_t run = std::min(fifo - logical, cap - physical);
      cpu::KvSegment& seg = segments[num_segments++];
      seg = {.positions = state.fifo_positions + physical,
             .count = run,
             .key_stride = Z,
             .value_stride = H};
      if (fifo_bf16_) {
        seg.keys_bf16 = state.fifo_keys_bf16 + physical * Z;
        seg.values_bf16 = state.fifo_values_bf16 + physical * H;
      } else {
        seg.keys = state.fifo_keys + physical * Z;
        seg.values = state.fifo_values + physical * H;
      }
      logical += run;
    }
    const int64_t first = chunk_activated_begin_[c] + std::max<int64_t>(0, begin - fifo);
    const int64_t last = chunk_activated_begin_[c] + chunk_end;
    segments[num_segments++] = {keys_.data() + first * Z,
                                projected_.data() + first * P + Z + H,
                                activated_positions_.data() + first,
                                last - first,
                                Z,
                                P};
    return num_segments;
  };
  // Blocks of consecutive activated rows of one chunk; a decode step is a block of one.
  struct Block {
    int32_t chunk;
    int64_t first;  // chunk-local index of the first activated row
    int64_t count;
  };
  std::vector<Block> singles, blocks;
  for (size_t c = 0; c < batch.size(); ++c) {
    const int64_t n = chunk_activated_begin_[c + 1] - chunk_activated_begin_[c];
    for (int64_t first = 0; first < n; first += kAttentionBlock) {
      Block block{static_cast<int32_t>(c), first, std::min(kAttentionBlock, n - first)};
      (block.count >= kMinBlockRows ? blocks : singles).push_back(block);
    }
  }
  // Small blocks: one query at a time, rows spread over the thread pool.
  std::vector<std::pair<int32_t, int64_t>> single_rows;  // (chunk, chunk-local index)
  for (const Block& block : singles) {
    for (int64_t i = 0; i < block.count; ++i) single_rows.push_back({block.chunk, block.first + i});
  }
  // The segments of single row i; returns their number.
  auto row_segments = [&](int64_t i, cpu::KvSegment* segments) {
    const auto [c, index] = single_rows[i];
    const int64_t fifo = slots_[batch[c].slot].layers[l].fifo_count;
    return build_segments(c, std::max<int64_t>(0, fifo + index - cap), index + 1, segments);
  };
  auto row_activated = [&](int64_t i) {
    return chunk_activated_begin_[single_rows[i].first] + single_rows[i].second;
  };
  auto attend_rows = [&](int64_t begin, int64_t end) {
    std::vector<float> scores(cap + 1);
    cpu::KvSegment segments[3];
    for (int64_t i = begin; i < end; ++i) {
      const int num_segments = row_segments(i, segments);
      const int64_t a = row_activated(i);
      cpu::Attend(spec, queries_.data() + a * Z, activated_positions_[a], segments, num_segments,
                  scores.data(), attended_.data() + a * H);
    }
  };
  const int64_t rows = static_cast<int64_t>(single_rows.size());
  const int64_t single_work = rows * (cap + 1) * (Z + H);
  if (single_work >= kMinParallelWork && rows < pool_.num_threads() && H > kAttentionColumns) {
    // Weights on this thread (the keys are the small part), then the value sums by columns.
    std::vector<float> weights(cap + 1);
    cpu::KvSegment segments[3];
    for (int64_t i = 0; i < rows; ++i) {
      const int num_segments = row_segments(i, segments);
      const int64_t a = row_activated(i);
      cpu::AttentionWeights(spec, queries_.data() + a * Z, activated_positions_[a], segments,
                            num_segments, weights.data());
      float* h = attended_.data() + a * H;
      pool_.ParallelFor((H + kAttentionColumns - 1) / kAttentionColumns, [&](int64_t begin,
                                                                             int64_t end) {
        cpu::AttendColumns(spec, weights.data(), segments, num_segments, begin * kAttentionColumns,
                           std::min<int64_t>(H, end * kAttentionColumns), h);
      });
    }
  } else if (single_work < kMinParallelWork || rows == 1) {
    attend_rows(0, rows);
  } else {
    pool_.ParallelFor(rows, attend_rows);
  }
  // Large blocks: BLAS products over each block's union window, blocks spread over the pool.
  auto attend_blocks = [&](int64_t begin, int64_t end) {
    std::vector<float> block_scores;
    std::vector<int64_t> window_begin, window_end;
    for (int64_t i = begin; i < end; ++i) {
      const Block& block = blocks[i];
      const int64_t fifo = slots_[batch[block.chunk].slot].layers[l].fifo_count;
      const int64_t union_begin = std::max<int64_t>(0, fifo + block.first - cap);
      cpu::KvSegment segments[3];
      const int num_segments =
          build_segments(block.chunk, union_begin, block.first + block.count, segments);
      const int64_t columns = fifo + block.first + block.count - union_begin;
      window_begin.resize(block.count);
      window_end.resize(block.count);
      for (int64_t b = 0; b < block.count; ++b) {
        const int64_t self = fifo + block.first + b;  // logical index of the query's own entry
        window_begin[b] = std::max<int64_t>(0, self - cap) - union_begin;
        window_end[b] = self + 1 - union_begin;
      }
      block_scores.resize(block.count * columns);
      const int64_t a = chunk_activated_begin_[block.chunk] + block.first;
      cpu::AttendBlock(spec, queries_.data() + a * Z, block.count, activated_positions_.data() + a,
                       segments, num_segments, window_begin.data(), window_end.data(),
                       block_scores.data(), attended_.data() + a * H);
    }
  };
  if (blocks.size() == 1) {
    attend_blocks(0, 1);
  } else if (!blocks.empty()) {
    pool_.ParallelFor(blocks.size(), attend_blocks);
  }
  // Gate: h * r.
  for (int64_t a = 0; a < R; ++a) {
    float* h = attended_.data() + a * H;
    const float* gate = projected_.data() + a * P + Z;
    for (int i = 0; i < H; ++i) h[i] *= gate[i];
  }

  // Extract: h_proj, scale by the router's confidence, scatter back to the rows.
  gau_out_.resize(R * D);
  cpu::Linear(attended_.data(), R, matrices_[l].h_proj, layer.h_proj_bias, gau_out_.data(), &pool_);
  for (int64_t a = 0; a < R; ++a) {
    const int64_t row = activated_rows_[a];
    const float confidence = router_confidence_[row];
    float* dst = gau_.data() + row * D;
    const float* src = gau_out_.data() + a * D;
    for (int d = 0; d < D; ++d) dst[d] = confidence * src[d];
  }

  // Push each chunk's activated (k, v, position) into its slot's FIFO, evicting the oldest.
  for (size_t c = 0; c < batch.size(); ++c) {
    LayerState& state = slots_[batch[c].slot].layers[l];
    const int64_t first = chunk_activated_begin_[c], end = chunk_activated_begin_[c + 1];
    state.activated += end - first;
    for (int64_t a = std::max(first, end - cap); a < end; ++a) {
      int64_t physical;
      if (state.fifo_count < cap) {
        physical = (state.fifo_head + state.fifo_count) % cap;
        ++state.fifo_count;
      } else {
        physical = state.fifo_head;
        state.fifo_head = static_cast<int32_t>((state.fifo_head + 1) % cap);
      }
      const float* value = projected_.data() + a * P + Z + H;
      if (fifo_bf16_) {  // exact: RunGau rounded both to bf16
        FloatsToBf16(keys_.data() + a * Z, Z, state.fifo_keys_bf16 + physical * Z);
        FloatsToBf16(value, H, state.fifo_values_bf16 + physical * H);
      } else {
        std::memcpy(state.fifo_keys + physical * Z, keys_.data() + a * Z, sizeof(float) * Z);
        std::memcpy(state.fifo_values + physical * H, value, sizeof(float) * H);
      }
      state.fifo_positions[physical] = activated_positions_[a];
    }
  }
}

void CpuBackend::RunFfn(int l) {
  const int D = config_.embed_dim, F = config_.ffn_dim;
  const int64_t rows = row_position_.size();
  const LayerWeights& layer = model_.weights().layers[l];
  ffn_in_.resize(rows * D);
  if (config_.normalize_before) {
    cpu::Norm(config_.norm, layer.ffn_norm, x_.data(), rows, D, ffn_in_.data());
  } else {
    std::memcpy(ffn_in_.data(), x_.data(), sizeof(float) * rows * D);
  }
  ffn_hidden_.resize(rows * F);
  cpu::Linear(ffn_in_.data(), rows, matrices_[l].fc1, layer.fc1_bias, ffn_hidden_.data(), &pool_);
  cpu::SiluInPlace(ffn_hidden_.data(), rows * F);
  cpu::Linear(ffn_hidden_.data(), rows, matrices_[l].fc2, layer.fc2_bias, ffn_in_.data(), &pool_);
  for (int64_t i = 0; i < rows * D; ++i) x_[i] += ffn_in_[i];
  if (!config_.normalize_before)
    cpu::Norm(config_.norm, layer.ffn_norm, x_.data(), rows, D, x_.data());
}

}  // namespace seqboat
