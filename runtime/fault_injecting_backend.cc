// FaultInjectingBackend: fails one chosen Forward call.
#include "runtime/fault_injecting_backend.h"

#include "absl/strings/str_cat.h"

namespace seqboat {

absl::Status FaultInjectingBackend::Forward(absl::Span<const SequenceChunk> batch, const ForwardOutputs& out) {
  if (++calls_ == fail_call_) {
    return absl::InternalError(absl::StrCat("injected fault in Forward call ", calls_, " (", batch.size(),
                                            " sequences; --debug_fail_forward)"));
  }
  return inner_->Forward(batch, out);
}

}  // namespace seqboat
