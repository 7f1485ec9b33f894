// TokenTrie against a plain list of sequences: random inserts, erases and lookups agree, and
// nodes exist only where entries end or paths branch.
#include "runtime/engine/token_trie.h"

#include <map>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace seqboat {
namespace {

using Tokens = std::vector<int32_t>;

TEST(TokenTrieTest, LongestPrefixAtAnyLength) {
  TokenTrie trie;
  EXPECT_TRUE(trie.Insert(Tokens{1, 2, 3}, 10));
  EXPECT_TRUE(trie.Insert(Tokens{1, 2, 3, 4, 5, 6, 7}, 20));
  EXPECT_TRUE(trie.Insert(Tokens{1, 2, 9}, 30));
  EXPECT_FALSE(trie.Insert(Tokens{1, 2, 3}, 11));  // the same sequence: once
  const Tokens prompt = {1, 2, 3, 4, 5, 6, 7, 8};
  auto m = trie.LongestPrefix(prompt, 100);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->value, 20);
  EXPECT_EQ(m->length, 7);
  // At most 6 tokens: the 3-token entry.
  m = trie.LongestPrefix(prompt, 6);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->value, 10);
  EXPECT_EQ(m->length, 3);
  // A prompt that leaves an edge inside it finds the entry above.
  m = trie.LongestPrefix(Tokens{1, 2, 3, 4, 5, 0}, 100);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->length, 3);
  EXPECT_FALSE(trie.LongestPrefix(Tokens{1, 2}, 100).has_value());
  EXPECT_FALSE(trie.LongestPrefix(Tokens{7}, 100).has_value());
  EXPECT_EQ(trie.Find(Tokens{1, 2, 9}), 30);
  EXPECT_FALSE(trie.Find(Tokens{1, 2}).has_value());  // a branch point, not an entry
  EXPECT_EQ(trie.entries(), 3);
  // Nodes: {1,2} (branch), {3} (entry), {4,5,6,7} (entry), {9} (entry).
  EXPECT_EQ(trie.nodes(), 4);
  EXPECT_TRUE(trie.Erase(Tokens{1, 2, 3}));
  EXPECT_FALSE(trie.Erase(Tokens{1, 2, 3}));
  // {3} merges into {3,4,5,6,7}.
  EXPECT_EQ(trie.nodes(), 3);
  m = trie.LongestPrefix(prompt, 100);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->value, 20);
  EXPECT_TRUE(trie.Erase(Tokens{1, 2, 9}));
  EXPECT_EQ(trie.nodes(), 1);  // one edge {1..7} is left
  EXPECT_TRUE(trie.Erase(Tokens{1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(trie.nodes(), 0);
  EXPECT_EQ(trie.entries(), 0);
}

TEST(TokenTrieTest, TheEmptySequenceIsAnEntryLikeAnyOther) {
  TokenTrie trie;
  EXPECT_TRUE(trie.Insert(Tokens{}, 5));
  auto m = trie.LongestPrefix(Tokens{4, 4}, 1);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->length, 0);
  EXPECT_TRUE(trie.Erase(Tokens{}));
  EXPECT_FALSE(trie.LongestPrefix(Tokens{4, 4}, 1).has_value());
}

TEST(TokenTrieTest, AgreesWithABruteForceModel) {
  std::mt19937 rng(7);
  TokenTrie trie;
  std::map<Tokens, int64_t> model;
  auto random_tokens = [&](int max_length) {
    Tokens t(rng() % (max_length + 1));
    for (int32_t& x : t) x = static_cast<int32_t>(rng() % 3);  // few symbols: much sharing
    return t;
  };
  for (int step = 0; step < 20000; ++step) {
    const Tokens t = random_tokens(12);
    switch (rng() % 3) {
      case 0: {
        const bool fresh = !model.count(t);
        ASSERT_EQ(trie.Insert(t, step), fresh);
        if (fresh) model[t] = step;
        break;
      }
      case 1: ASSERT_EQ(trie.Erase(t), model.erase(t) == 1); break;
      default: {
        const int64_t limit = rng() % 14;
        std::optional<TokenTrie::Match> expected;
        for (const auto& [entry, value] : model) {
          if (static_cast<int64_t>(entry.size()) <= limit && entry.size() <= t.size() &&
              std::equal(entry.begin(), entry.end(), t.begin()) &&
              (!expected || static_cast<int64_t>(entry.size()) > expected->length)) {
            expected = TokenTrie::Match{value, static_cast<int64_t>(entry.size())};
          }
        }
        const auto got = trie.LongestPrefix(t, limit);
        ASSERT_EQ(got.has_value(), expected.has_value()) << step;
        if (got) {
          ASSERT_EQ(got->length, expected->length) << step;
          ASSERT_EQ(got->value, expected->value) << step;
        }
        int64_t common = 0;  // the longest start of t that some entry also starts with
        for (const auto& [entry, value] : model) {
          const auto mismatch = std::mismatch(entry.begin(), entry.end(), t.begin(), t.end());
          common = std::max<int64_t>(common, mismatch.first - entry.begin());
        }
        ASSERT_EQ(trie.CommonPrefix(t), common) << step;
        const auto found = trie.Find(t);
        ASSERT_EQ(found.has_value(), model.count(t) == 1);
        if (found) {
          ASSERT_EQ(*found, model[t]);
        }
      }
    }
    ASSERT_EQ(trie.entries(), static_cast<int64_t>(model.size()));
    // No node without a purpose: each holds an entry or branches (at most 2 per entry).
    ASSERT_LE(trie.nodes(), 2 * trie.entries());
  }
}

}  // namespace
}  // namespace seqboat
