// dict.txt through the runtime's tokenizer module, so the converter and the server agree on
// ids and style by construction.
#include "converter/vocabulary.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "runtime/model/tokenizer.h"

namespace seqboat::convert {

absl::StatusOr<Vocabulary> ReadVocabulary(const std::string& dict_path) {
  std::ifstream in(dict_path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(dict_path, ": cannot open"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  auto prefixed = [&](const absl::Status& status) {
    return absl::Status(status.code(), absl::StrCat(dict_path, ": ", status.message()));
  };
  auto symbols = ParseFairseqDict(buffer.str());
  if (!symbols.ok()) return prefixed(symbols.status());
  if (symbols->size() <= 4)
    return absl::InvalidArgumentError(absl::StrCat(dict_path, ": no symbols"));
  const TokenizerStyle style = DetectTokenizerStyle(*symbols);
  auto tokenizer = Tokenizer::Create(style, *symbols);
  if (!tokenizer.ok()) return prefixed(tokenizer.status());
  Vocabulary vocab;
  vocab.symbols = *std::move(symbols);
  vocab.style = TokenizerStyleName(style);
  vocab.tokenizer_json = tokenizer->ToJson();
  return vocab;
}

}  // namespace seqboat::convert
