// The special ids every SeqBoat vocabulary begins with (fairseq's Dictionary order), and the
// one rule on which ids a model may read.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/types/span.h"

namespace seqboat {

inline constexpr int32_t kBosId = 0;  // <s>
inline constexpr int32_t kPadId = 1;  // <pad>: never model input, never sampled
inline constexpr int32_t kEosId = 2;  // </s>; also the newline and fairseq's start token
inline constexpr int32_t kUnkId = 3;  // <unk>
inline constexpr int32_t kNumSpecialIds = 4;
inline constexpr const char* kSpecialSymbols[kNumSpecialIds] = {"<s>", "<pad>", "</s>", "<unk>"};

struct BadTokenId {
  int64_t index = 0;    // position in the ids
  std::string problem;  // e.g. "id 300 is outside the vocabulary 0..259"
};

// The first id a model may not read (outside [0, vocab_size), or the padding id), or nullopt.
std::optional<BadTokenId> FindBadTokenId(absl::Span<const int32_t> ids, int vocab_size);

}  // namespace seqboat
