// UTF-8: validity by RFC 3629's table, the replacement of maximal invalid subparts, and the
// \xNN escaping.
#include "runtime/util/utf8.h"

#include <string>

#include "gtest/gtest.h"

namespace seqboat {
namespace {

TEST(Utf8Test, ValidityFollowsTheRfcTable) {
  for (const std::string valid : {"", "plain", "caf\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80",
                                  "\xF4\x8F\xBF\xBF" /* U+10FFFF */, "\xED\x9F\xBF" /* U+D7FF */}) {
    EXPECT_TRUE(IsValidUtf8(valid)) << EscapeInvalidUtf8(valid);
  }
  for (const std::string invalid :
       {"\xC3", "\xC0\xAF" /* overlong */, "\xE0\x80\xAF" /* overlong */,
        "\xED\xA0\x80" /* surrogate */, "\xF4\x90\x80\x80" /* > U+10FFFF */, "\xF5\x80\x80\x80",
        "\xFF", "\x80",
        "\xE2\x82"
        "x"}) {
    EXPECT_FALSE(IsValidUtf8(invalid)) << EscapeInvalidUtf8(invalid);
  }
  EXPECT_EQ(Utf8SequenceLength("a\xE2\x82\xAC", 1), 3u);
  EXPECT_EQ(Utf8SequenceLength("a\xE2\x82", 1), 0u);
}

TEST(Utf8Test, EscapingKeepsValidTextAndEscapesEachBadByte) {
  EXPECT_EQ(EscapeInvalidUtf8("plain"), "plain");
  EXPECT_EQ(EscapeInvalidUtf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"),
            "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
  EXPECT_EQ(EscapeInvalidUtf8("\xC3"), "\\xC3");
  EXPECT_EQ(EscapeInvalidUtf8("a\xFF"
                              "b"),
            "a\\xFFb");
  EXPECT_EQ(EscapeInvalidUtf8("\xC0\xAF"), "\\xC0\\xAF");           // overlong
  EXPECT_EQ(EscapeInvalidUtf8("\xED\xA0\x80"), "\\xED\\xA0\\x80");  // surrogate
  EXPECT_EQ(EscapeInvalidUtf8("\xE2\x82"
                              "x"),
            "\\xE2\\x82x");  // truncated
}

TEST(Utf8Test, ReplacementTakesMaximalInvalidSubparts) {
  auto replaced = [](const std::string& bytes, bool hold = false, size_t* held = nullptr) {
    std::string out;
    const size_t tail = AppendValidUtf8(bytes, hold, &out);
    if (held != nullptr) *held = tail;
    return out;
  };
  const std::string r = kUtf8Replacement;
  EXPECT_EQ(replaced("ok"), "ok");
  EXPECT_EQ(replaced("\xE2\x82"
                     "x"),
            r + "x");                              // one U+FFFD for the two bytes
  EXPECT_EQ(replaced("\xC0\xAF"), r + r);          // C0 never starts a sequence; AF alone
  EXPECT_EQ(replaced("\xED\xA0\x80"), r + r + r);  // ED A0 breaks at the second byte
  EXPECT_EQ(replaced("\xF0\x9F\x98"), r);          // an incomplete tail, replaced...
  size_t held = 0;
  EXPECT_EQ(replaced("a\xF0\x9F\x98", true, &held), "a");  // ... or held back for more bytes
  EXPECT_EQ(held, 3u);
}

}  // namespace
}  // namespace seqboat
