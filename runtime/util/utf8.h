// UTF-8 as RFC 3629 defines it (no overlong forms, no surrogates, nothing above U+10FFFF):
// validation, the replacement of bad bytes with U+FFFD for text, and their escaping as \xNN
// where a protobuf string must hold them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace seqboat {

inline constexpr char kUtf8Replacement[] = "\xEF\xBF\xBD";  // U+FFFD

// Length of the valid UTF-8 sequence that starts at bytes[i], or 0.
size_t Utf8SequenceLength(absl::string_view bytes, size_t i);

bool IsValidUtf8(absl::string_view text);

// Characters (bytes that do not continue a sequence) in `text`.
int64_t CountCodePoints(absl::string_view text);

// Appends the valid UTF-8 prefix of `bytes` to `out`, replacing each maximal invalid
// subsequence with U+FFFD; returns the length of an incomplete trailing sequence that is
// left unconsumed when `hold_incomplete_tail` (it is replaced otherwise).
size_t AppendValidUtf8(absl::string_view bytes, bool hold_incomplete_tail, std::string* out);

// Valid UTF-8 stays as it is; every byte of an invalid sequence becomes the four characters
// \xNN.
std::string EscapeInvalidUtf8(absl::string_view bytes);

}  // namespace seqboat
