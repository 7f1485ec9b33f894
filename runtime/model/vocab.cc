// The token ids a model may read.
#include "runtime/model/vocab.h"

#include "absl/strings/str_cat.h"

namespace seqboat {

std::optional<BadTokenId> FindBadTokenId(absl::Span<const int32_t> ids, int vocab_size) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return BadTokenId{
          static_cast<int64_t>(i),
          absl::StrCat("id ", ids[i], " is outside the vocabulary 0..", vocab_size - 1)};
    }
    if (ids[i] == kPadId) {
      return BadTokenId{static_cast<int64_t>(i),
                        absl::StrCat("the padding id ", kPadId, " is not a token a model reads")};
    }
  }
  return std::nullopt;
}

}  // namespace seqboat
