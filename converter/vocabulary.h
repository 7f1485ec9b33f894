// dict.txt -> the vocabulary of a model file: fairseq Dictionary ids (four specials first),
// the detected tokenizer style, and the `tokenizer` metadata JSON.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace seqboat::convert {

struct Vocabulary {
  std::vector<std::string> symbols;  // symbol of id i; <s>, <pad>, </s>, <unk> first
  std::string style;                 // "byte", "char" or "word"
  std::string tokenizer_json;        // {"style": ..., "symbols": [...]}
};

// Errors name the file and line (a duplicate or malformed line, an unreadable file).
absl::StatusOr<Vocabulary> ReadVocabulary(const std::string& dict_path);

}  // namespace seqboat::convert
