#include "runtime/engine/prefix_cache.h"

#include <vector>

#include "gtest/gtest.h"

namespace seqboat {
namespace {

std::vector<int32_t> Seq(std::initializer_list<int32_t> head, int n_tail, int32_t tail_base) {
  std::vector<int32_t> s(head);
  for (int i = 0; i < n_tail; ++i) s.push_back(tail_base + i);
  return s;
}

TEST(PrefixCacheTest, SnapshotsOnlyBoundariesAnEarlierPromptPassed) {
  PrefixCache cache({10, 11}, /*block=*/4);
  const std::vector<int32_t> a = Seq({5, 6, 7, 8, 9, 10}, 6, 100);  // 12 tokens
  const std::vector<int32_t> b = Seq({5, 6, 7, 8, 9, 10}, 7, 200);  // shares 6 tokens with a
  EXPECT_EQ(cache.SnapshotPoint(a, 0), 0);                          // nothing seen before
  EXPECT_EQ(cache.SnapshotPoint(b, 0), 4);  // boundary 4 is shared; 8 is not
  EXPECT_FALSE(cache.Peek(b).has_value());
  EXPECT_EQ(cache.Insert(b, 4), 10);
  auto hit = cache.Lookup(a);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->slot, 10);
  EXPECT_EQ(hit->tokens, 4);
  // Already cached: no second snapshot of the same boundary.
  EXPECT_EQ(cache.SnapshotPoint(Seq({5, 6, 7, 8, 9, 10}, 3, 300), 4), 0);
}

TEST(PrefixCacheTest, LookupTakesTheLongestPrefixAndLeavesOneTokenToRun) {
  PrefixCache cache({0, 1}, 2);
  const std::vector<int32_t> p = {1, 2, 3, 4, 5, 6};
  ASSERT_EQ(cache.Insert(p, 2), 0);  // slots are handed out in the order given
  ASSERT_EQ(cache.Insert(p, 4), 1);
  EXPECT_EQ(cache.Lookup(p)->tokens, 4);
  EXPECT_EQ(cache.Lookup(std::vector<int32_t>{1, 2, 3, 4, 9})->tokens, 4);
  // A prompt equal to a cached prefix must still run its last token.
  EXPECT_EQ(cache.Lookup(std::vector<int32_t>{1, 2, 3, 4})->tokens, 2);
  EXPECT_FALSE(cache.Lookup(std::vector<int32_t>{1, 2}).has_value());
  // Different tokens at the start: no hit.
  EXPECT_FALSE(cache.Lookup(std::vector<int32_t>{1, 3, 3, 4, 5}).has_value());
}

TEST(PrefixCacheTest, EvictsTheLeastRecentlyUsed) {
  PrefixCache cache({7, 8}, 1);
  const std::vector<int32_t> a = {1, 1, 1}, b = {2, 2, 2}, c = {3, 3, 3};
  EXPECT_EQ(cache.Insert(a, 1), 7);
  EXPECT_EQ(cache.Insert(b, 1), 8);
  ASSERT_TRUE(cache.Lookup(a).has_value());  // a is now the most recent
  EXPECT_EQ(cache.Insert(c, 1), 8);          // b's slot is reused
  EXPECT_FALSE(cache.Peek(b).has_value());
  EXPECT_TRUE(cache.Peek(a).has_value());
  EXPECT_TRUE(cache.Peek(c).has_value());
  EXPECT_EQ(cache.entries(), 2);
  cache.Drop(7);
  EXPECT_FALSE(cache.Peek(a).has_value());
  EXPECT_EQ(cache.entries(), 1);
}

TEST(PrefixCacheTest, TheSamePrefixIsCachedOnce) {
  // Two requests with one prompt admitted in the same iteration both reach the snapshot point.
  PrefixCache cache({5, 6}, 4);
  const std::vector<int32_t> p = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<int32_t> q = {1, 2, 3, 4, 5, 6, 7, 8, 10};
  EXPECT_EQ(cache.Insert(p, 8), 5);
  EXPECT_EQ(cache.Insert(q, 8), -1);  // the same 8 tokens
  EXPECT_EQ(cache.entries(), 1);
  EXPECT_EQ(cache.Insert(q, 4), 6);  // a different (shorter) prefix is a new entry
  EXPECT_EQ(cache.entries(), 2);
}

TEST(PrefixCacheTest, RefusesUnalignedOrEmptySnapshotsAndWorksWithoutSlots) {
  PrefixCache cache({3}, 4);
  const std::vector<int32_t> p = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(cache.Insert(p, 6), -1);
  EXPECT_EQ(cache.Insert(p, 0), -1);
  EXPECT_EQ(cache.Insert(p, 12), -1);
  PrefixCache none({}, 4);
  EXPECT_EQ(none.Insert(p, 4), -1);
  EXPECT_EQ(none.SnapshotPoint(p, 0), 0);
  EXPECT_FALSE(none.Lookup(p).has_value());
}

TEST(PrefixCacheTest, FinishedRequestsLeaveEntriesOfAnyLengthThatNeverDisplaceSharedOnes) {
  PrefixCache cache({0, 1, 2}, 4);
  const std::vector<int32_t> turn1 = {1, 2, 3, 4, 5, 6, 7};  // 7 tokens: not a block multiple
  EXPECT_EQ(cache.InsertFinished(turn1), 0);
  EXPECT_EQ(cache.InsertFinished(turn1), -1);  // once
  // The next turn extends it: everything but the new tokens is restored.
  auto hit = cache.Lookup(std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8, 9});
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->slot, 0);
  EXPECT_EQ(hit->tokens, 7);
  const std::vector<int32_t> shared = {9, 9, 9, 9, 8};
  EXPECT_EQ(cache.Insert(shared, 4), 1);
  EXPECT_EQ(cache.InsertFinished(std::vector<int32_t>{5, 5}), 2);
  // Full: a finished request displaces the least recently used finished one, turn1 ...
  EXPECT_EQ(cache.InsertFinished(std::vector<int32_t>{6, 6, 6}), 0);
  EXPECT_FALSE(cache.Peek(turn1).has_value());
  // ... then {5, 5}, never the shared prefix, however old.
  EXPECT_EQ(cache.InsertFinished(std::vector<int32_t>{7}), 2);
  EXPECT_TRUE(cache.Peek(shared).has_value());
  // A shared snapshot displaces the least recently used entry of any kind (here the shared one).
  EXPECT_EQ(cache.Insert(std::vector<int32_t>{4, 4, 4, 4, 4}, 4), 1);
  EXPECT_EQ(cache.entries(), 3);
  // With only shared entries, a finished request gets no slot.
  PrefixCache small({0}, 4);
  EXPECT_EQ(small.Insert(shared, 4), 0);
  EXPECT_EQ(small.InsertFinished(std::vector<int32_t>{8, 8}), -1);
  EXPECT_TRUE(small.Peek(shared).has_value());
}

TEST(PrefixCacheTest, ALongerEndSupersedesTheEndItExtends) {
  PrefixCache cache({0, 1}, 4);
  EXPECT_EQ(cache.InsertFinished(std::vector<int32_t>{1, 2, 3}), 0);
  EXPECT_EQ(cache.InsertFinished(std::vector<int32_t>{9, 9}), 1);
  // The next turn of the first conversation takes its previous turn's slot, not {9, 9}'s.
  EXPECT_EQ(cache.InsertFinished(std::vector<int32_t>{1, 2, 3, 4, 5}), 0);
  EXPECT_EQ(cache.entries(), 2);
  EXPECT_EQ(cache.Lookup(std::vector<int32_t>{1, 2, 3, 4, 5, 6})->tokens, 5);
  EXPECT_EQ(cache.Lookup(std::vector<int32_t>{9, 9, 9})->tokens, 2);
  // A shared prefix is not superseded.
  PrefixCache shared({0, 1}, 2);
  EXPECT_EQ(shared.Insert(std::vector<int32_t>{1, 2, 3}, 2), 0);
  EXPECT_EQ(shared.InsertFinished(std::vector<int32_t>{1, 2, 3, 4}), 1);
  EXPECT_EQ(shared.entries(), 2);
}

TEST(PrefixCacheTest, AFinishedEntryThatTurnsOutSharedIsKeptAsShared) {
  PrefixCache cache({0, 1}, 2);
  const std::vector<int32_t> p = {1, 2, 3, 4, 5};
  EXPECT_EQ(cache.InsertFinished(std::vector<int32_t>{1, 2, 3, 4}), 0);
  EXPECT_EQ(cache.Insert(p, 4), -1);  // already there: now marked shared
  EXPECT_EQ(cache.InsertFinished(std::vector<int32_t>{7, 7}), 1);
  EXPECT_EQ(cache.InsertFinished(std::vector<int32_t>{8, 8}), 1);  // displaces {7, 7}, not p's
  EXPECT_EQ(cache.Lookup(p)->tokens, 4);
}

}  // namespace
}  // namespace seqboat
