// A restricted unpickler for torch.save's data.pkl (pickle protocols 2 to 5). It never
// imports or calls anything: globals are recorded as names, calls as inert kObject values,
// and only a few torch/collections callables are interpreted (tensor and parameter rebuilds,
// OrderedDict, set, _codecs.encode) by building plain values. Every length is checked
// against the input, and limits bound the memo, the nesting and the values built, so a
// hostile file fails with a named error instead of exhausting memory.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "converter/pickle_value.h"

namespace seqboat::convert {

struct UnpicklerLimits {
  // Worst case about 150 bytes per value and 8 per element: ~0.8 GB at these limits, far
  // above any real checkpoint (a fairseq data.pkl holds some 10^4 values).
  uint64_t max_values = uint64_t{1} << 22;    // values built
  uint64_t max_memo = uint64_t{1} << 22;      // memo entries
  uint64_t max_elements = uint64_t{1} << 24;  // container elements, all containers together
  uint64_t max_stack = uint64_t{1} << 22;     // values on the stack at once
  uint32_t max_depth = 1000;                  // container nesting (CPython's recursion limit)
};

// Errors name `label`, the opcode, its offset and what was expected.
absl::StatusOr<std::unique_ptr<Pickle>> Unpickle(absl::Span<const uint8_t> data,
                                                 absl::string_view label,
                                                 const UnpicklerLimits& limits = {});

}  // namespace seqboat::convert
