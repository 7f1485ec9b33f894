// FaultInjectingBackend: fails one chosen Forward call, or every call from it on.
#include "runtime/fault_injecting_backend.h"

#include "absl/strings/str_cat.h"

namespace seqboat {

absl::Status FaultInjectingBackend::Forward(absl::Span<const SequenceChunk> batch,
                                            const ForwardOutputs& out) {
  ++calls_;
  if (calls_ == fail_call_ || lost_) {
    lost_ = sticky_;
    return absl::InternalError(absl::StrCat("injected fault in Forward call ", calls_, " (",
                                            batch.size(), " sequences; --debug_fail_forward)"));
  }
  return inner_->Forward(batch, out);
}

absl::Status FaultInjectingBackend::CheckHealth() {
  if (lost_) {
    return absl::InternalError(absl::StrCat("injected device loss at Forward call ", fail_call_,
                                            " (--debug_fail_sticky)"));
  }
  return inner_->CheckHealth();
}

}  // namespace seqboat
