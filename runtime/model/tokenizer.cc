// Tokenizer: fairseq dictionaries in byte, char and word styles; UTF-8-safe streaming.
#include "runtime/model/tokenizer.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace seqboat {
namespace {

bool IsMadeUpWord(absl::string_view symbol) { return absl::StartsWith(symbol, "madeupword"); }

bool IsByteSymbol(absl::string_view symbol, int* value) {
  if (symbol.empty() || symbol.size() > 3 || (symbol.size() > 1 && symbol[0] == '0')) return false;
  for (char c : symbol) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  int parsed = 0;
  if (!absl::SimpleAtoi(symbol, &parsed) || parsed > 255) return false;
  *value = parsed;
  return true;
}

bool IsSingleCodePoint(absl::string_view symbol) {
  return !symbol.empty() && Utf8SequenceLength(symbol, 0) == symbol.size();
}

}  // namespace

const char* TokenizerStyleName(TokenizerStyle style) {
  switch (style) {
    case TokenizerStyle::kByte: return "byte";
    case TokenizerStyle::kChar: return "char";
    case TokenizerStyle::kWord: return "word";
  }
  return "?";
}

absl::StatusOr<TokenizerStyle> ParseTokenizerStyle(absl::string_view name) {
  if (name == "byte") return TokenizerStyle::kByte;
  if (name == "char") return TokenizerStyle::kChar;
  if (name == "word") return TokenizerStyle::kWord;
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer style \"", name, "\": expected byte, char or word"));
}

absl::StatusOr<std::vector<std::string>> ParseFairseqDict(absl::string_view text) {
  std::vector<std::string> symbols(std::begin(kSpecialSymbols), std::end(kSpecialSymbols));
  absl::flat_hash_map<std::string, size_t> index;
  for (size_t i = 0; i < symbols.size(); ++i) index[symbols[i]] = i;
  int line_number = 0;
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();  // the final newline
  for (absl::string_view line : lines) {
    ++line_number;
    if (absl::EndsWith(line, "\r")) line.remove_suffix(1);
    bool overwrite = false;
    if (absl::EndsWith(line, " #fairseq:overwrite")) {
      overwrite = true;
      line.remove_suffix(sizeof(" #fairseq:overwrite") - 1);
    }
    const size_t space = line.rfind(' ');
    if (space == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("dict.txt line ", line_number, ": \"", line,
                                                     "\" is not \"<symbol> <count>\""));
    }
    const absl::string_view symbol = line.substr(0, space);
    int64_t count;
    if (!absl::SimpleAtoi(line.substr(space + 1), &count)) {
      return absl::InvalidArgumentError(absl::StrCat("dict.txt line ", line_number, ": count \"",
                                                     line.substr(space + 1),
                                                     "\" is not an integer"));
    }
    if (symbol.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("dict.txt line ", line_number, ": empty symbol"));
    }
    auto existing = index.find(std::string(symbol));
    if (existing != index.end() && !overwrite) {
      return absl::InvalidArgumentError(absl::StrCat("dict.txt line ", line_number,
                                                     ": duplicate symbol \"", symbol,
                                                     "\" (add #fairseq:overwrite to allow it)"));
    }
    // As fairseq's add_symbol(overwrite=True): a repeated symbol takes a new id, and text
    // encodes to that newest id.
    index[std::string(symbol)] = symbols.size();
    symbols.emplace_back(symbol);
  }
  return symbols;
}

TokenizerStyle DetectTokenizerStyle(const std::vector<std::string>& symbols) {
  bool all_bytes = true, all_chars = true, any = false;
  for (size_t i = 4; i < symbols.size(); ++i) {
    if (IsMadeUpWord(symbols[i])) continue;
    any = true;
    int value;
    all_bytes = all_bytes && IsByteSymbol(symbols[i], &value);
    all_chars = all_chars && IsSingleCodePoint(symbols[i]);
  }
  if (any && all_bytes) return TokenizerStyle::kByte;
  if (any && all_chars) return TokenizerStyle::kChar;
  return TokenizerStyle::kWord;
}

absl::StatusOr<Tokenizer> Tokenizer::Create(TokenizerStyle style,
                                            std::vector<std::string> symbols) {
  if (symbols.size() < 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer: ", symbols.size(), " symbols; expected at least the 4 specials"));
  }
  for (int i = 0; i < 4; ++i) {
    if (symbols[i] != kSpecialSymbols[i]) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer: symbol ", i, " is \"", symbols[i],
                                                     "\", expected \"", kSpecialSymbols[i], "\""));
    }
  }
  Tokenizer tokenizer;
  tokenizer.style_ = style;
  std::fill(std::begin(tokenizer.byte_ids_), std::end(tokenizer.byte_ids_), kUnkId);
  tokenizer.id_bytes_.assign(symbols.size(), -1);
  for (size_t i = 0; i < symbols.size(); ++i) {
    const std::string& symbol = symbols[i];
    // A repeated symbol (fairseq's #fairseq:overwrite) encodes to its newest id.
    tokenizer.ids_[symbol] = static_cast<int32_t>(i);
    if (i < 4 || IsMadeUpWord(symbol)) continue;
    if (style == TokenizerStyle::kByte) {
      int value;
      if (!IsByteSymbol(symbol, &value)) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer: byte-style symbol ", i, " is \"",
                                                       symbol,
                                                       "\"; expected a decimal byte value 0-255"));
      }
      tokenizer.byte_ids_[value] = static_cast<int32_t>(i);
      tokenizer.id_bytes_[i] = static_cast<int16_t>(value);
    } else if (style == TokenizerStyle::kChar && !IsSingleCodePoint(symbol)) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer: char-style symbol ", i, " is \"",
                                                     symbol, "\"; expected one Unicode character"));
    } else if (symbol.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer: symbol ", i, " is empty"));
    }
  }
  tokenizer.symbols_ = std::move(symbols);
  return tokenizer;
}

absl::StatusOr<Tokenizer> Tokenizer::FromJson(absl::string_view json_text) {
  nlohmann::json json = nlohmann::json::parse(json_text.begin(), json_text.end(), nullptr, false);
  if (json.is_discarded() || !json.is_object())
    return absl::InvalidArgumentError("tokenizer: not a JSON object");
  auto style_it = json.find("style");
  auto symbols_it = json.find("symbols");
  if (style_it == json.end() || !style_it->is_string()) {
    return absl::InvalidArgumentError("tokenizer: missing string \"style\"");
  }
  if (symbols_it == json.end() || !symbols_it->is_array()) {
    return absl::InvalidArgumentError("tokenizer: missing array \"symbols\"");
  }
  auto style = ParseTokenizerStyle(style_it->get<std::string>());
  if (!style.ok()) return style.status();
  std::vector<std::string> symbols;
  for (const auto& symbol : *symbols_it) {
    if (!symbol.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer: symbol ", symbols.size(), " is not a string"));
    }
    symbols.push_back(symbol.get<std::string>());
  }
  return Create(*style, std::move(symbols));
}

std::string Tokenizer::ToJson() const {
  nlohmann::ordered_json json = {{"style", TokenizerStyleName(style_)}, {"symbols", symbols_}};
  return json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text,
                                                       size_t max_tokens) const {
  auto too_many = [&] {
    return absl::OutOfRangeError(absl::StrCat("encodes to more than ", max_tokens, " tokens"));
  };
  std::vector<int32_t> ids;
  switch (style_) {
    case TokenizerStyle::kByte:
      if (text.size() > max_tokens) return too_many();  // one token a byte
      ids.reserve(text.size());
      for (char c : text) ids.push_back(c == '\n' ? kEosId : byte_ids_[static_cast<uint8_t>(c)]);
      break;
    case TokenizerStyle::kChar:
      for (size_t i = 0; i < text.size();) {
        const size_t length = Utf8SequenceLength(text, i);
        if (length == 0)
          return absl::InvalidArgumentError(absl::StrCat("text is not valid UTF-8 at byte ", i));
        if (ids.size() >= max_tokens) return too_many();
        const absl::string_view character = text.substr(i, length);
        if (character == "\n") {
          ids.push_back(kEosId);
        } else {
          auto it = ids_.find(std::string(character));
          ids.push_back(it == ids_.end() ? kUnkId : it->second);
        }
        i += length;
      }
      break;
    case TokenizerStyle::kWord:
      // Every line ends with </s>, and the last line's is taken back after the loop: so up
      // to max_tokens + 1 ids may be held before the limit is known to be passed.
      for (absl::string_view line : absl::StrSplit(text, '\n')) {
        for (absl::string_view word :
             absl::StrSplit(line, absl::ByAnyChar(" \t\r\v\f"), absl::SkipEmpty())) {
          if (ids.size() >= max_tokens) return too_many();
          auto it = ids_.find(std::string(word));
          ids.push_back(it == ids_.end() ? kUnkId : it->second);
        }
        if (ids.size() > max_tokens) return too_many();
        ids.push_back(kEosId);
      }
      ids.pop_back();  // StrSplit yields one more line than there are newlines
      break;
  }
  return ids;
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::EncodePrompt(absl::string_view text,
                                                             size_t max_tokens) const {
  if (max_tokens == 0)
    return absl::OutOfRangeError("a prompt of 0 tokens cannot hold the start token");
  absl::StatusOr<std::vector<int32_t>> ids = Encode(text, max_tokens - 1);
  if (absl::IsOutOfRange(ids.status())) {
    return absl::OutOfRangeError(
        absl::StrCat("encodes to more than ", max_tokens, " tokens with the start token"));
  }
  if (!ids.ok()) return ids.status();
  ids->insert(ids->begin(), kEosId);
  return ids;
}

std::string Tokenizer::TokenText(int32_t id) const {
  if (!IsValidId(id) || id == kBosId || id == kPadId) return "";
  if (id == kEosId) return "\n";
  if (id == kUnkId) return style_ == TokenizerStyle::kWord ? "<unk>" : kUtf8Replacement;
  if (IsMadeUpWord(symbols_[id])) return "";
  if (style_ == TokenizerStyle::kByte) return std::string(1, static_cast<char>(id_bytes_[id]));
  return symbols_[id];
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids) const {
  StreamingDetokenizer detokenizer(*this);
  std::string text;
  for (int32_t id : ids) text += detokenizer.Push(id);
  return text + detokenizer.Flush();
}

std::string StreamingDetokenizer::Push(int32_t id) {
  std::string piece = tokenizer_.TokenText(id);
  if (piece.empty()) return "";
  if (tokenizer_.style() == TokenizerStyle::kWord) {
    if (id == kEosId) {
      at_line_start_ = true;
    } else {
      if (!at_line_start_) pending_.push_back(' ');
      at_line_start_ = false;
    }
  }
  pending_ += piece;
  std::string out;
  const size_t held = AppendValidUtf8(pending_, /*hold_incomplete_tail=*/true, &out);
  pending_.erase(0, pending_.size() - held);
  return out;
}

std::string StreamingDetokenizer::Flush() {
  std::string out;
  AppendValidUtf8(pending_, /*hold_incomplete_tail=*/false, &out);
  pending_.clear();
  return out;
}

}  // namespace seqboat
