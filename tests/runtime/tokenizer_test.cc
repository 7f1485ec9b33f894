// Tokenizer: the reference's encoding cases for all three styles, dict.txt parsing, style
// detection, and a streaming detokenizer that never splits a UTF-8 character.
#include "runtime/model/tokenizer.h"

#include <fstream>
#include <random>
#include <sstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/model.h"
#include "tests/runtime/fixture_util.h"

namespace seqboat {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Every case of tests/fixtures/tokenizer_cases.json (from the Python tokenizer of the
// reference), through both the dict.txt path and the model file's tokenizer JSON.
TEST(Tokenizer, MatchesReferenceCases) {
  const auto cases =
      nlohmann::json::parse(ReadFile(testing::FixturesDir() + "/tokenizer_cases.json"));
  ASSERT_EQ(cases.size(), 3u);
  for (const auto& [model, entry] : cases.items()) {
    auto symbols =
        ParseFairseqDict(ReadFile(testing::FixturesDir() + "/" + entry["dict"].get<std::string>()));
    ASSERT_TRUE(symbols.ok()) << symbols.status();
    const TokenizerStyle style = DetectTokenizerStyle(*symbols);
    EXPECT_STREQ(TokenizerStyleName(style), entry["style"].get<std::string>().c_str()) << model;
    auto from_dict = Tokenizer::Create(style, *symbols);
    ASSERT_TRUE(from_dict.ok()) << from_dict.status();
    auto loaded = Model::Load(testing::FixturesDir() + "/" + model + "/model.safetensors");
    ASSERT_TRUE(loaded.ok());
    auto from_model = Tokenizer::FromJson((*loaded)->tokenizer_json());
    ASSERT_TRUE(from_model.ok()) << from_model.status();
    EXPECT_EQ(from_model->ToJson(), from_dict->ToJson());
    for (const auto& c : entry["cases"]) {
      const std::string text = c["text"].get<std::string>();
      const std::vector<int32_t> ids = c["ids"].get<std::vector<int32_t>>();
      auto encoded = from_dict->Encode(text);
      ASSERT_TRUE(encoded.ok()) << encoded.status();
      EXPECT_EQ(*encoded, ids) << model << ": \"" << text << "\"";
      EXPECT_EQ(*from_model->Encode(text), ids);
      // A token limit: the same ids up to it, OutOfRange one below the count.
      auto exact = from_dict->Encode(text, ids.size());
      ASSERT_TRUE(exact.ok()) << model << ": \"" << text << "\": " << exact.status();
      EXPECT_EQ(*exact, ids);
      if (!ids.empty()) {
        EXPECT_TRUE(absl::IsOutOfRange(from_dict->Encode(text, ids.size() - 1).status()))
            << model << ": \"" << text << "\" holds " << ids.size() << " tokens";
      }
    }
  }
}

// The limit holds for text made of many lines and of lines with no words (word style takes
// back the last line's end token only once the text is done).
TEST(Tokenizer, TokenLimitOnEveryStyleAndManyLines) {
  const auto cases =
      nlohmann::json::parse(ReadFile(testing::FixturesDir() + "/tokenizer_cases.json"));
  for (const auto& [model, entry] : cases.items()) {
    auto symbols =
        ParseFairseqDict(ReadFile(testing::FixturesDir() + "/" + entry["dict"].get<std::string>()));
    ASSERT_TRUE(symbols.ok());
    auto tokenizer = Tokenizer::Create(DetectTokenizerStyle(*symbols), *symbols);
    ASSERT_TRUE(tokenizer.ok());
    for (const std::string& text :
         {std::string("\n\n\n\n"), std::string("a b\n\nc\n"), std::string("x\n y z \n\n")}) {
      auto all = tokenizer->Encode(text);
      ASSERT_TRUE(all.ok());
      for (size_t limit = 0; limit <= all->size() + 1; ++limit) {
        auto limited = tokenizer->Encode(text, limit);
        if (limit >= all->size()) {
          ASSERT_TRUE(limited.ok()) << model << " limit " << limit;
          EXPECT_EQ(*limited, *all);
        } else {
          EXPECT_TRUE(absl::IsOutOfRange(limited.status()))
              << model << " limit " << limit << " of " << all->size();
        }
      }
    }
  }
}

Tokenizer ByteTokenizer() {
  std::vector<std::string> symbols = {"<s>", "<pad>", "</s>", "<unk>"};
  for (int b = 0; b < 256; ++b) {
    if (b != '\n') symbols.push_back(std::to_string(b));
  }
  return *Tokenizer::Create(TokenizerStyle::kByte, symbols);
}

TEST(Tokenizer, ByteNewlineConventionBothWays) {
  const Tokenizer tokenizer = ByteTokenizer();
  auto ids = tokenizer.Encode("a\nb");
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->size(), 3u);
  EXPECT_EQ((*ids)[1], kEosId);
  EXPECT_EQ(tokenizer.Decode(*ids), "a\nb");
  EXPECT_EQ(tokenizer.TokenText(kEosId), "\n");
  EXPECT_EQ(tokenizer.TokenText(kBosId), "");
  EXPECT_EQ(tokenizer.TokenText(kUnkId), "\xEF\xBF\xBD");
}

TEST(Tokenizer, StreamingHoldsBackIncompleteCharacters) {
  const Tokenizer tokenizer = ByteTokenizer();
  for (const std::string text : {"é", "€", "😀", "a€b😀\nc"}) {
    auto ids = tokenizer.Encode(text);
    ASSERT_TRUE(ids.ok());
    StreamingDetokenizer stream(tokenizer);
    std::string out;
    for (int32_t id : *ids) {
      const std::string piece = stream.Push(id);
      EXPECT_TRUE(IsValidUtf8(piece)) << "a piece ends inside a character";
      out += piece;
    }
    out += stream.Flush();
    EXPECT_EQ(out, text);
  }
  // "€" is E2 82 AC: nothing comes out until the last byte.
  StreamingDetokenizer stream(tokenizer);
  const auto euro = *tokenizer.Encode("€");
  EXPECT_EQ(stream.Push(euro[0]), "");
  EXPECT_EQ(stream.Push(euro[1]), "");
  EXPECT_EQ(stream.Push(euro[2]), "€");
}

TEST(Tokenizer, InvalidSequencesBecomeReplacementCharacters) {
  const Tokenizer tokenizer = ByteTokenizer();
  auto id = [&](int byte) {
    return (*tokenizer.Encode(std::string(1, static_cast<char>(byte))))[0];
  };
  StreamingDetokenizer stream(tokenizer);
  EXPECT_EQ(stream.Push(id(0x80)), "\xEF\xBF\xBD");  // stray continuation: at once
  EXPECT_EQ(stream.Push(id(0xE2)), "");              // lead byte held
  EXPECT_EQ(stream.Push(id('x')), "\xEF\xBF\xBDx");  // broken by a non-continuation
  EXPECT_EQ(stream.Push(id(0xF0)), "");
  EXPECT_EQ(stream.Flush(), "\xEF\xBF\xBD");  // incomplete at the end
  EXPECT_EQ(tokenizer.Decode({id(0xC0), id(0xAF)}), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong
}

// Push + Flush always equals Decode, and every piece is valid UTF-8, on random ids.
TEST(Tokenizer, StreamingEqualsDecodeOnRandomIds) {
  std::mt19937 rng(5);
  for (const std::string model : {"enwik8_tiny", "simple_relu2_post", "laplace_rms_word"}) {
    auto loaded = Model::Load(testing::FixturesDir() + "/" + model + "/model.safetensors");
    ASSERT_TRUE(loaded.ok());
    const Tokenizer tokenizer = *Tokenizer::FromJson((*loaded)->tokenizer_json());
    for (int trial = 0; trial < 200; ++trial) {
      std::vector<int32_t> ids(rng() % 40);
      for (int32_t& id : ids) id = static_cast<int32_t>(rng() % tokenizer.vocab_size());
      StreamingDetokenizer stream(tokenizer);
      std::string out;
      for (int32_t id : ids) {
        const std::string piece = stream.Push(id);
        ASSERT_TRUE(IsValidUtf8(piece));
        out += piece;
      }
      out += stream.Flush();
      EXPECT_EQ(out, tokenizer.Decode(ids));
      EXPECT_TRUE(IsValidUtf8(out));
    }
  }
}

TEST(Tokenizer, WordDecodingSpacesWordsWithinLines) {
  auto tokenizer =
      Tokenizer::Create(TokenizerStyle::kWord, {"<s>", "<pad>", "</s>", "<unk>", "hello", "world"});
  ASSERT_TRUE(tokenizer.ok());
  EXPECT_EQ(tokenizer->Decode({4, 5, kEosId, 5, kUnkId}), "hello world\nworld <unk>");
  EXPECT_EQ(*tokenizer->Encode("hello  there\nworld"),
            (std::vector<int32_t>{4, kUnkId, kEosId, 5}));
}

TEST(Tokenizer, DictParsing) {
  auto symbols = ParseFairseqDict("a 5\n  7\nb 3 #fairseq:overwrite\na 9 #fairseq:overwrite\n");
  ASSERT_TRUE(symbols.ok()) << symbols.status();
  EXPECT_EQ(*symbols,
            (std::vector<std::string>{"<s>", "<pad>", "</s>", "<unk>", "a", " ", "b", "a"}));
  auto overwritten = Tokenizer::Create(TokenizerStyle::kWord, *symbols);
  ASSERT_TRUE(overwritten.ok());
  EXPECT_EQ(*overwritten->Encode("a b"), (std::vector<int32_t>{7, 6}));  // the newest id of "a"
  EXPECT_NE(
      ParseFairseqDict("a 5\nb 2\na 1\n").status().message().find("line 3: duplicate symbol \"a\""),
      absl::string_view::npos);
  EXPECT_NE(ParseFairseqDict("a 5\nnospace\n").status().message().find("line 2"),
            absl::string_view::npos);
  EXPECT_NE(
      ParseFairseqDict("a five\n").status().message().find("count \"five\" is not an integer"),
      absl::string_view::npos);
  EXPECT_NE(ParseFairseqDict("a 1\n\nb 2\n").status().message().find("line 2"),
            absl::string_view::npos);
}

TEST(Tokenizer, StyleDetectionAndValidation) {
  const std::vector<std::string> specials = {"<s>", "<pad>", "</s>", "<unk>"};
  auto with = [&](std::vector<std::string> more) {
    std::vector<std::string> all = specials;
    all.insert(all.end(), more.begin(), more.end());
    return all;
  };
  EXPECT_EQ(DetectTokenizerStyle(with({"104", "0", "255", "madeupword0000"})),
            TokenizerStyle::kByte);
  EXPECT_EQ(DetectTokenizerStyle(with({"a", "é", "中"})), TokenizerStyle::kChar);
  EXPECT_EQ(DetectTokenizerStyle(with({"the", "a"})), TokenizerStyle::kWord);
  EXPECT_EQ(DetectTokenizerStyle(with({"007", "12"})),
            TokenizerStyle::kWord);  // leading zeros: not bytes
  EXPECT_FALSE(Tokenizer::Create(TokenizerStyle::kByte, with({"256"})).ok());
  EXPECT_FALSE(Tokenizer::Create(TokenizerStyle::kChar, with({"ab"})).ok());
  EXPECT_FALSE(Tokenizer::Create(TokenizerStyle::kWord, {"<s>", "</s>", "<pad>", "<unk>"}).ok());
  EXPECT_FALSE(Tokenizer::FromJson("{\"style\": \"bpe\", \"symbols\": []}").ok());
  EXPECT_FALSE(Tokenizer::FromJson("not json").ok());
  auto chars = Tokenizer::Create(TokenizerStyle::kChar, with({"a"}));
  ASSERT_TRUE(chars.ok());
  EXPECT_NE(chars->Encode("a\xC3").status().message().find("not valid UTF-8 at byte 1"),
            absl::string_view::npos);
}

}  // namespace
}  // namespace seqboat
