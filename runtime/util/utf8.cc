// UTF-8: one definition of a valid sequence, used to validate, replace and escape.
#include "runtime/util/utf8.h"

#include <cstdint>

#include "absl/strings/str_format.h"

namespace seqboat {
namespace {

// Length of the UTF-8 sequence a lead byte starts (0 for a byte that cannot start one).
int SequenceLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// Whether `byte` may follow `lead` as the first continuation byte (the overlong, surrogate
// and > U+10FFFF exclusions of RFC 3629); later continuation bytes are 0x80..0xBF.
bool ValidSecondByte(uint8_t lead, uint8_t byte) {
  if (lead == 0xE0) return byte >= 0xA0 && byte <= 0xBF;
  if (lead == 0xED) return byte >= 0x80 && byte <= 0x9F;
  if (lead == 0xF0) return byte >= 0x90 && byte <= 0xBF;
  if (lead == 0xF4) return byte >= 0x80 && byte <= 0x8F;
  return byte >= 0x80 && byte <= 0xBF;
}

bool IsContinuation(uint8_t byte) { return byte >= 0x80 && byte <= 0xBF; }

// How many bytes of the sequence at bytes[i] are valid (a whole sequence: its length).
size_t ValidPrefix(absl::string_view bytes, size_t i, int length) {
  const uint8_t lead = static_cast<uint8_t>(bytes[i]);
  size_t valid = 1;
  while (valid < static_cast<size_t>(length) && i + valid < bytes.size()) {
    const uint8_t byte = static_cast<uint8_t>(bytes[i + valid]);
    if (!(valid == 1 ? ValidSecondByte(lead, byte) : IsContinuation(byte))) break;
    ++valid;
  }
  return valid;
}

}  // namespace

size_t Utf8SequenceLength(absl::string_view bytes, size_t i) {
  const int length = SequenceLength(static_cast<uint8_t>(bytes[i]));
  if (length <= 1) return length;
  return ValidPrefix(bytes, i, length) == static_cast<size_t>(length) ? length : 0;
}

bool IsValidUtf8(absl::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const size_t n = Utf8SequenceLength(text, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

int64_t CountCodePoints(absl::string_view text) {
  int64_t count = 0;
  for (char c : text) count += !IsContinuation(static_cast<uint8_t>(c));
  return count;
}

size_t AppendValidUtf8(absl::string_view bytes, bool hold_incomplete_tail, std::string* out) {
  size_t i = 0;
  while (i < bytes.size()) {
    const int length = SequenceLength(static_cast<uint8_t>(bytes[i]));
    if (length == 1) {
      out->push_back(bytes[i]);
      ++i;
      continue;
    }
    if (length == 0) {
      out->append(kUtf8Replacement);
      ++i;
      continue;
    }
    const size_t valid = ValidPrefix(bytes, i, length);
    if (valid == static_cast<size_t>(length)) {
      out->append(bytes.data() + i, length);
      i += length;
    } else if (i + valid == bytes.size()) {  // ran out of bytes: an incomplete tail
      if (hold_incomplete_tail) return bytes.size() - i;
      out->append(kUtf8Replacement);
      i = bytes.size();
    } else {  // a byte that cannot continue the sequence
      out->append(kUtf8Replacement);
      i += valid;
    }
  }
  return 0;
}

std::string EscapeInvalidUtf8(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    const size_t n = Utf8SequenceLength(bytes, i);
    if (n == 0) {
      absl::StrAppendFormat(&out, "\\x%02X", static_cast<unsigned char>(bytes[i]));
      ++i;
    } else {
      out.append(bytes.data() + i, n);
      i += n;
    }
  }
  return out;
}

}  // namespace seqboat
