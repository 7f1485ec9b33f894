// The backend interface: one object owns the weights' device copy and every state slot.
//
// A backend runs whole-model forward passes over a batch of sequence chunks. A chunk appends
// one or more tokens to one slot's sequence (a decode step is a one-token chunk, a prefill
// chunk has many), so one call can mix prefill and decode. Everything between the token ids
// in and the logits out stays inside the backend: a GPU implementation keeps all state on the
// device and synchronises with the host once per call, never per layer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "runtime/model/config.h"

namespace seqboat {

using SlotId = int32_t;

// State slots one backend holds, request slots and prefix-cache slots together.
inline constexpr int kMaxSlots = 1 << 16;

// How the MD-EMA sees the past (MODEL.md, "EMA horizon").
enum class EmaHorizon {
  kExact,    // the untruncated recurrence (default)
  kTrained,  // the kernel truncated to truncation_length taps, as in training
};
// "exact" | "trained".
absl::StatusOr<EmaHorizon> ParseEmaHorizon(absl::string_view name);
const char* EmaHorizonName(EmaHorizon horizon);

// The dtype of a backend's matrices (and, on the CUDA backend, of its FIFO keys/values and
// activations). Accumulation is always fp32, and so is the EMA state. Each backend takes
// some: CUDA as_stored, f32, f16 and bf16; CPU as_stored (= f32), f32, bf16 and int8.
enum class WeightDType {
  kAsStored,  // the model file's (embed_tokens.weight)
  kF32,
  kF16,
  kBF16,
  kInt8,  // symmetric int8 in groups of 32 weights with an fp32 scale each
};
// "as_stored" | "f32" | "f16" | "bf16" | "int8".
absl::StatusOr<WeightDType> ParseWeightDType(absl::string_view name);
const char* WeightDTypeName(WeightDType dtype);

// The options every backend takes.
struct BackendOptions {
  int num_slots = 1;  // 1..kMaxSlots
  EmaHorizon ema_horizon = EmaHorizon::kExact;
  // FIFO slots per layer. 0 takes the model's window; required (> 0) for SeqBoat-full models
  // (window <= 0), whose unbounded memory must be bounded explicitly.
  int fifo_capacity = 0;
  WeightDType weight_dtype = WeightDType::kAsStored;
  // The FIFO keys and values. as_stored: the backend's own (CPU f32; CUDA its weight dtype);
  // the CPU backend also keeps them in bf16 on request. A backend refuses any other.
  WeightDType fifo_dtype = WeightDType::kAsStored;
};

// What every backend derives from the model and its options (MODEL.md), written once here so
// that the backends agree.
struct SlotLayout {
  int fifo_capacity = 0;  // w: FIFO entries per layer (the model's window, or the option)
  int truncation = 0;     // T: the EMA taps kept in the trained horizon; 0 = the exact recurrence
  float score_scale = 1.0f;  // attention scores: 1/sqrt(Z) for softmax, 1/w for relu2 and laplace
};
// Checks the options (the number of slots, the FIFO bound the model needs) and derives the
// layout. The weight dtype is each backend's to check.
absl::StatusOr<SlotLayout> MakeSlotLayout(const ModelConfig& config, const BackendOptions& options);
// Bytes of one slot: per layer the EMA state [D, N] and the trained horizon's input ring
// [T, D] in fp32, the FIFO keys and values [w, Z + H] of `kv_element_bytes` each, the FIFO
// positions (int64), and `layer_metadata_bytes` of the backend's own.
size_t StateBytesPerSlot(const ModelConfig& config, const SlotLayout& layout,
                         size_t kv_element_bytes, size_t layer_metadata_bytes = 0);

struct SequenceChunk {
  SlotId slot = 0;
  absl::Span<const int32_t> tokens;  // >= 1 ids, in [0, V), never the padding id
  bool all_logits = false;           // logits for every token (teacher forcing) or the last only
  // Empty, or [L] finite values: layer l's router adds activation_bias[l] to its logit 0 (the
  // "not activated" option) before the temperature, for every token of the chunk, as the
  // official code's act_bias: (p0, p1) = softmax([g0 + b, g1] / tau), and the confidence that
  // scales the GAU comes from these. Positive: fewer GAU activations. Chunks of one batch may
  // differ.
  absl::Span<const float> activation_bias = {};
};

struct ForwardOutputs {
  // Rows in chunk order: a chunk contributes tokens.size() rows when all_logits, else one.
  absl::Span<float> logits;  // [rows, V]
  // Optional (empty = not wanted); rows = every token of every chunk, in chunk order.
  absl::Span<uint8_t> activations;  // [tokens, L] 1 where the GAU ran
  absl::Span<float> confidences;    // [tokens, L] the router's max(p0, p1)
};

struct SlotStats {
  int64_t tokens = 0;                 // tokens consumed since the last reset
  std::vector<int64_t> activated;     // [L] tokens that activated each layer's GAU
  std::vector<int32_t> fifo_entries;  // [L] entries now in each layer's FIFO
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual int num_slots() const = 0;
  virtual const char* name() const = 0;
  // Bytes of state one slot holds (EMA state, FIFOs and, in the trained horizon, input rings).
  virtual size_t state_bytes_per_slot() const = 0;
  // The dtypes in use, resolved ("f32", "bf16", ...; never "as_stored"): of the weight
  // matrices, and of the FIFO keys and values.
  virtual const char* weight_dtype() const { return "f32"; }
  virtual const char* fifo_dtype() const { return "f32"; }

  // Appends each chunk's tokens to its slot and writes the requested outputs. A slot appears
  // at most once per call. Fails (and changes no slot) on a bad batch; see the implementation.
  virtual absl::Status Forward(absl::Span<const SequenceChunk> batch,
                               const ForwardOutputs& out) = 0;
  virtual absl::Status ResetSlot(SlotId slot) = 0;  // zero EMA state, empty FIFOs, position 0
  virtual absl::Status CopySlot(SlotId from, SlotId to) = 0;  // state snapshot (prefix reuse)
  virtual absl::Status Stats(SlotId slot, SlotStats* stats) const = 0;

  // Asked after a failed Forward: OK when the backend can still run forward passes (the
  // failure was that call's alone, an out-of-memory say), else why not (a CUDA context lost
  // to a sticky error: every later call would fail too, until the process restarts).
  virtual absl::Status CheckHealth() { return absl::OkStatus(); }
};

// InvalidArgument unless `slot` names one of `num_slots` slots; `what` prefixes the message.
absl::Status CheckSlotId(SlotId slot, int num_slots, absl::string_view what);
// The checks every backend makes before Forward touches a slot: slots in range and unique,
// chunks non-empty, token ids in [0, V) and never the padding id, output buffers sized.
absl::Status ValidateForward(absl::Span<const SequenceChunk> batch, const ForwardOutputs& out,
                             int num_slots, int vocab_size, int layers);

// Rows of ForwardOutputs::logits that a batch produces.
int64_t LogitRows(absl::Span<const SequenceChunk> batch);
// Total tokens of a batch (rows of activations / confidences).
int64_t TotalTokens(absl::Span<const SequenceChunk> batch);

}  // namespace seqboat
