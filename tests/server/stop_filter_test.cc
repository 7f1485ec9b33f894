#include "server/stop_filter.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace seqboat::server {
namespace {

struct Streamed {
  std::string text;
  std::vector<int64_t> tokens;
  std::vector<std::string> chunks;  // text released after each Append
  bool stopped = false;
};

// Feeds `pieces` (one per token) through a filter, collecting what it releases.
Streamed Stream(std::vector<std::string> stops, const std::vector<std::string>& pieces) {
  StopFilter filter(std::move(stops));
  Streamed out;
  for (size_t i = 0; i < pieces.size() && !out.stopped; ++i) {
    out.stopped = filter.Append(static_cast<int64_t>(i), pieces[i]);
    out.chunks.push_back(filter.TakeText());
    out.text += out.chunks.back();
    for (int64_t t : filter.TakeTokens()) out.tokens.push_back(t);
  }
  if (!out.stopped) {
    filter.Flush();
    out.text += filter.TakeText();
    for (int64_t t : filter.TakeTokens()) out.tokens.push_back(t);
  }
  return out;
}

TEST(StopFilterTest, WithoutStopSequencesEverythingFlowsAtOnce) {
  Streamed out = Stream({}, {"ab", "c", "", "d"});
  EXPECT_EQ(out.text, "abcd");
  EXPECT_FALSE(out.stopped);
  EXPECT_EQ(out.chunks, (std::vector<std::string>{"ab", "c", "", "d"}));
  // The empty-text token completes with the next token's text.
  EXPECT_EQ(out.tokens, (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(StopFilterTest, StopSpanningTokensIsNeverSent) {
  Streamed out = Stream({"lo w"}, {"hel", "l", "o", " ", "wor", "ld"});
  EXPECT_TRUE(out.stopped);
  EXPECT_EQ(out.text, "hel");
  // Each "l" is held as a possible start of "lo w" until the next text decides.
  EXPECT_EQ(out.chunks, (std::vector<std::string>{"he", "l", "", "", ""}));
  // Token 1 ("l") holds the match start: only token 0 is released.
  EXPECT_EQ(out.tokens, (std::vector<int64_t>{0}));
}

TEST(StopFilterTest, HeldTextIsReleasedWhenTheMatchFails) {
  Streamed out = Stream({"abc"}, {"x", "a", "b", "d", "e"});
  EXPECT_FALSE(out.stopped);
  EXPECT_EQ(out.text, "xabde");
  EXPECT_EQ(out.chunks, (std::vector<std::string>{"x", "", "", "abd", "e"}));
  EXPECT_EQ(out.tokens, (std::vector<int64_t>{0, 1, 2, 3, 4}));
}

TEST(StopFilterTest, OverlappingPrefixFindsALaterMatch) {
  // "aab": the held "aa" fails as "aa?" but its suffix "a" may still start "aab".
  Streamed out = Stream({"aab"}, {"a", "a", "a", "b", "z"});
  EXPECT_TRUE(out.stopped);
  EXPECT_EQ(out.text, "a");
  EXPECT_EQ(out.tokens, (std::vector<int64_t>{0}));
}

TEST(StopFilterTest, EarliestOfSeveralStopsWins) {
  StopFilter filter({"world", "o w"});
  EXPECT_TRUE(filter.Append(0, "hello world"));
  EXPECT_EQ(filter.TakeText(), "hell");
  EXPECT_EQ(filter.matched_sequence(), "o w");
  EXPECT_TRUE(filter.TakeTokens().empty());
}

TEST(StopFilterTest, MatchInsideOneTokenKeepsTheTextBeforeIt) {
  Streamed out = Stream({"STOP"}, {"ab", "cdSTOPef", "gh"});
  EXPECT_TRUE(out.stopped);
  EXPECT_EQ(out.text, "abcd");
  EXPECT_EQ(out.tokens, (std::vector<int64_t>{0}));
}

TEST(StopFilterTest, StopAtTheVeryStart) {
  Streamed out = Stream({"ab"}, {"a", "b"});
  EXPECT_TRUE(out.stopped);
  EXPECT_EQ(out.text, "");
  EXPECT_TRUE(out.tokens.empty());
}

TEST(StopFilterTest, MultiByteCharactersAreHeldWhole) {
  // "é" is two bytes; a stop "éx" holds "é" until the next character decides.
  Streamed out = Stream({"\xC3\xA9x"}, {"a", "\xC3\xA9", "y"});
  EXPECT_FALSE(out.stopped);
  EXPECT_EQ(out.chunks, (std::vector<std::string>{"a", "", "\xC3\xA9y"}));
}

TEST(StopFilterTest, FlushReleasesHeldTextAndTokens) {
  Streamed out = Stream({"xyz"}, {"a", "x", "y"});
  EXPECT_FALSE(out.stopped);
  EXPECT_EQ(out.text, "axy");
  EXPECT_EQ(out.tokens, (std::vector<int64_t>{0, 1, 2}));
}

}  // namespace
}  // namespace seqboat::server
