// A Backend decorator that fails chosen Forward calls, as a device error would: the call
// returns INTERNAL and changes no slot; optionally the backend then stays unusable. For testing
// what the engine and the server do when the backend fails (seqboat-server --debug_fail_forward).
#pragma once

#include <cstdint>
#include <memory>

#include "runtime/backend.h"

namespace seqboat {

class FaultInjectingBackend final : public Backend {
 public:
  // Fails the `fail_call`-th Forward call (1-based; 0 = never) and passes everything else on.
  // When `sticky`, that call and every later one fail and CheckHealth reports the backend
  // unusable, as a lost device would.
  FaultInjectingBackend(std::unique_ptr<Backend> inner, int64_t fail_call, bool sticky = false)
      : inner_(std::move(inner)), fail_call_(fail_call), sticky_(sticky) {}

  int num_slots() const override { return inner_->num_slots(); }
  const char* name() const override { return inner_->name(); }
  size_t state_bytes_per_slot() const override { return inner_->state_bytes_per_slot(); }
  const char* weight_dtype() const override { return inner_->weight_dtype(); }
  const char* fifo_dtype() const override { return inner_->fifo_dtype(); }
  absl::Status Forward(absl::Span<const SequenceChunk> batch, const ForwardOutputs& out) override;
  absl::Status ResetSlot(SlotId slot) override {
    return lost_ ? CheckHealth() : inner_->ResetSlot(slot);
  }
  absl::Status CopySlot(SlotId from, SlotId to) override {
    return lost_ ? CheckHealth() : inner_->CopySlot(from, to);
  }
  absl::Status Stats(SlotId slot, SlotStats* stats) const override {
    return inner_->Stats(slot, stats);
  }
  absl::Status CheckHealth() override;

 private:
  std::unique_ptr<Backend> inner_;
  const int64_t fail_call_;
  const bool sticky_;
  int64_t calls_ = 0;
  bool lost_ = false;  // sticky and failed
};

}  // namespace seqboat
