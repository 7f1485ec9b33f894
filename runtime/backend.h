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
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace seqboat {

using SlotId = int32_t;

// How the MD-EMA sees the past (MODEL.md, "EMA horizon").
enum class EmaHorizon {
  kExact,    // the untruncated recurrence (default)
  kTrained,  // the kernel truncated to truncation_length taps, as in training
};

struct SequenceChunk {
  SlotId slot = 0;
  absl::Span<const int32_t> tokens;  // >= 1 ids, in [0, V), never the padding id
  bool all_logits = false;           // logits for every token (teacher forcing) or the last only
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
