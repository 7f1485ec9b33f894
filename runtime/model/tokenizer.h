// Tokenizers for the three fairseq dictionary styles (MODEL.md, "Tokenizer") and a
// streaming detokenizer that never emits a partial UTF-8 sequence.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "runtime/model/vocab.h"
#include "runtime/util/utf8.h"

namespace seqboat {

enum class TokenizerStyle {
  kByte,  // symbols are decimal byte values; '\n' is </s>
  kChar,  // one Unicode code point per symbol
  kWord,  // whitespace-separated words
};
const char* TokenizerStyleName(TokenizerStyle style);
absl::StatusOr<TokenizerStyle> ParseTokenizerStyle(absl::string_view name);

// Parses a fairseq dict.txt ("<symbol> <count>" per line, split at the last space, with an
// optional " #fairseq:overwrite" flag) into the full symbol list, specials first. As in
// fairseq, an overwriting line adds a new id even when the symbol exists.
absl::StatusOr<std::vector<std::string>> ParseFairseqDict(absl::string_view text);

// The style of a symbol list (after the four specials; fairseq's madeupwordNNNN padding
// symbols are ignored).
TokenizerStyle DetectTokenizerStyle(const std::vector<std::string>& symbols);

class Tokenizer {
 public:
  // Validates the symbols against the style: the four specials first, byte symbols decimal
  // 0-255, char symbols one code point each. A repeated symbol encodes to its last id.
  static absl::StatusOr<Tokenizer> Create(TokenizerStyle style, std::vector<std::string> symbols);
  // The model file form {"style": ..., "symbols": [...]}.
  static absl::StatusOr<Tokenizer> FromJson(absl::string_view json);
  std::string ToJson() const;

  TokenizerStyle style() const { return style_; }
  int vocab_size() const { return static_cast<int>(symbols_.size()); }
  const std::string& symbol(int32_t id) const { return symbols_[id]; }
  bool IsValidId(int32_t id) const { return id >= 0 && id < vocab_size(); }

  // Text to ids; no start or end token is added. Char style needs valid UTF-8. More than
  // `max_tokens` ids is OutOfRange, found without encoding the rest of the text.
  absl::StatusOr<std::vector<int32_t>> Encode(
      absl::string_view text, size_t max_tokens = std::numeric_limits<size_t>::max()) const;
  // A text as a prompt: fairseq's start token </s>, then the text's ids (MODEL.md,
  // "Tokenizer"); more than `max_tokens` in all is OutOfRange, found without encoding the rest.
  absl::StatusOr<std::vector<int32_t>> EncodePrompt(
      absl::string_view text, size_t max_tokens = std::numeric_limits<size_t>::max()) const;
  // The bytes one token contributes on its own (byte style: possibly part of a character;
  // word style: the bare word, spacing is the detokenizer's job).
  std::string TokenText(int32_t id) const;
  // Whole-sequence decoding; invalid UTF-8 becomes U+FFFD.
  std::string Decode(absl::Span<const int32_t> ids) const;

 private:
  Tokenizer() = default;

  TokenizerStyle style_ = TokenizerStyle::kByte;
  std::vector<std::string> symbols_;
  absl::flat_hash_map<std::string, int32_t> ids_;  // symbol -> id (char and word styles)
  int32_t byte_ids_[256];                          // byte -> id (byte style), kUnkId if none
  std::vector<int16_t> id_bytes_;                  // id -> byte (byte style), -1 if none
};

// Turns a stream of ids into text pieces that always end on a UTF-8 character boundary.
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  // The text completed by this token (possibly empty: an incomplete character is held back).
  std::string Push(int32_t id);
  // What is held back at the end of the stream (U+FFFD for an incomplete character).
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;        // bytes of an incomplete UTF-8 sequence
  bool at_line_start_ = true;  // word style: no space before the first word of a line
};

}  // namespace seqboat
