#include "client/cli_lib.h"

#include "client/http_stream.h"
#include "gtest/gtest.h"

namespace seqboat::cli {
namespace {

TEST(SummarizeTest, NearestRankPercentiles) {
  std::vector<double> samples;
  for (int i = 100; i >= 1; --i) samples.push_back(i);  // unsorted on purpose
  LatencySummary s = Summarize(samples);
  EXPECT_EQ(s.count, 100);
  EXPECT_DOUBLE_EQ(s.mean, 50.5);
  EXPECT_DOUBLE_EQ(s.p50, 50);
  EXPECT_DOUBLE_EQ(s.p90, 90);
  EXPECT_DOUBLE_EQ(s.p99, 99);
  EXPECT_DOUBLE_EQ(s.max, 100);
}

TEST(SummarizeTest, SmallAndEmptySamples) {
  LatencySummary one = Summarize({7.5});
  EXPECT_DOUBLE_EQ(one.p50, 7.5);
  EXPECT_DOUBLE_EQ(one.p99, 7.5);
  LatencySummary three = Summarize({3, 1, 2});
  EXPECT_DOUBLE_EQ(three.p50, 2);  // rank ceil(1.5) = 2
  EXPECT_DOUBLE_EQ(three.p90, 3);
  EXPECT_EQ(Summarize({}).count, 0);
}

TEST(ParseTest, IdLists) {
  auto ids = ParseIdList("2, 17,9", "tokens");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{2, 17, 9}));
  EXPECT_TRUE(ParseIdList("", "tokens")->empty());
  auto bad = ParseIdList("2,x", "tokens");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--tokens"), absl::string_view::npos);
}

TEST(ParseTest, StringListsWithEscapes) {
  auto stops = ParseStringList("a\\,b,c\\\\,,d", "stop");
  ASSERT_TRUE(stops.ok());
  EXPECT_EQ(*stops, (std::vector<std::string>{"a,b", "c\\", "", "d"}));
  EXPECT_TRUE(ParseStringList("", "stop")->empty());
  EXPECT_FALSE(ParseStringList("a\\x", "stop").ok());
  EXPECT_FALSE(ParseStringList("a\\", "stop").ok());
}

TEST(SseParserTest, EventsSplitAnywhereComeBackWhole) {
  std::vector<std::string> got;
  SseParser parser([&](absl::string_view data) { got.emplace_back(data); });
  const std::string stream =
      "data: {\"a\": 1}\n\n: a comment\r\ndata:{\"b\": 2}\r\n\nevent: x\ndata: [DONE]\n\n";
  for (char c : stream) parser.Feed(absl::string_view(&c, 1));  // one byte at a time
  EXPECT_EQ(got, (std::vector<std::string>{"{\"a\": 1}", "{\"b\": 2}", "[DONE]"}));
  got.clear();
  parser.Feed("data: partial");  // not ended: held
  EXPECT_TRUE(got.empty());
  parser.Feed(" line\n");
  EXPECT_EQ(got, (std::vector<std::string>{"partial line"}));
}

}  // namespace
}  // namespace seqboat::cli
