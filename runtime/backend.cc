// Helpers shared by every Backend implementation.
#include "runtime/backend.h"

namespace seqboat {

int64_t LogitRows(absl::Span<const SequenceChunk> batch) {
  int64_t rows = 0;
  for (const SequenceChunk& chunk : batch) rows += chunk.all_logits ? chunk.tokens.size() : 1;
  return rows;
}

int64_t TotalTokens(absl::Span<const SequenceChunk> batch) {
  int64_t tokens = 0;
  for (const SequenceChunk& chunk : batch) tokens += chunk.tokens.size();
  return tokens;
}

}  // namespace seqboat
