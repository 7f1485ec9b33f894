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

std::vector<int32_t> Prefix(const std::vector<int32_t>& s, size_t n) {
  return {s.begin(), s.begin() + static_cast<std::ptrdiff_t>(n)};
}

TEST(PrefixCacheTest, SnapshotsOnlyBoundariesAnEarlierPromptPassed) {
  PrefixCache cache(/*block=*/4);
  const std::vector<int32_t> a = Seq({5, 6, 7, 8, 9, 10}, 6, 100);  // 12 tokens
  const std::vector<int32_t> b = Seq({5, 6, 7, 8, 9, 10}, 7, 200);  // shares 6 tokens with a
  EXPECT_EQ(cache.SnapshotPoint(a, 0), 0);                          // nothing seen before
  EXPECT_EQ(cache.SnapshotPoint(b, 0), 4);  // boundary 4 is shared; 8 is not
  EXPECT_FALSE(cache.Peek(b).has_value());
  EXPECT_TRUE(cache.Insert(Prefix(b, 4), 10));
  auto hit = cache.Lookup(a);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->slot, 10);
  EXPECT_EQ(hit->tokens, 4);
  EXPECT_EQ(hit->last, nullptr);
  // Already cached: no second snapshot of the same boundary.
  EXPECT_EQ(cache.SnapshotPoint(Seq({5, 6, 7, 8, 9, 10}, 3, 300), 4), 0);
}

// A state made under one activation bias serves only prompts under the same bias; all zeros
// (either sign) is the model's own routing.
TEST(PrefixCacheTest, EveryRoutingHasItsOwnEntries) {
  PrefixCache cache(/*block=*/2);
  const std::vector<int32_t> p = {1, 2, 3, 4, 5, 6};
  const std::vector<float> fewer = {1.0f, 1.0f}, other = {1.0f, -1.0f};
  const std::vector<float> zeros = {0.0f, -0.0f};
  ASSERT_TRUE(cache.Insert(Prefix(p, 4), 0, fewer));
  EXPECT_FALSE(cache.Peek(p).has_value());
  EXPECT_FALSE(cache.Peek(p, other).has_value());
  EXPECT_FALSE(cache.Contains(Prefix(p, 4)));
  EXPECT_TRUE(cache.Contains(Prefix(p, 4), fewer));
  EXPECT_EQ(cache.Lookup(p, fewer)->slot, 0);
  // The same tokens under another routing are another entry.
  ASSERT_TRUE(cache.Insert(Prefix(p, 4), 1, zeros));
  EXPECT_FALSE(cache.Insert(Prefix(p, 4), 2, fewer));  // cached already
  EXPECT_EQ(cache.Lookup(p)->slot, 1);
  EXPECT_EQ(cache.Lookup(p, zeros)->slot, 1);
  EXPECT_EQ(cache.Lookup(p, fewer)->slot, 0);
  // Boundaries seen under one routing are not shared prefixes of another.
  const std::vector<int32_t> q = {9, 8, 7, 6, 5};
  EXPECT_EQ(cache.SnapshotPoint(q, 0, other), 0);
  EXPECT_EQ(cache.SnapshotPoint(q, 0), 0);
  EXPECT_EQ(cache.SnapshotPoint(q, 0, other), 4);
  // Dropping the last entry of a routing forgets it.
  EXPECT_TRUE(cache.Drop(0));
  EXPECT_FALSE(cache.Peek(p, fewer).has_value());
  EXPECT_EQ(cache.entries(), 1);
}

TEST(PrefixCacheTest, LookupTakesTheLongestPrefixAndLeavesOneTokenToRunWithoutLogits) {
  PrefixCache cache(2);
  const std::vector<int32_t> p = {1, 2, 3, 4, 5, 6};
  ASSERT_TRUE(cache.Insert(Prefix(p, 2), 0));
  ASSERT_TRUE(cache.Insert(Prefix(p, 4), 1));
  EXPECT_EQ(cache.Lookup(p)->tokens, 4);
  EXPECT_EQ(cache.Lookup(std::vector<int32_t>{1, 2, 3, 4, 9})->tokens, 4);
  // A prompt equal to an entry without its last position must still run its last token.
  EXPECT_EQ(cache.Lookup(std::vector<int32_t>{1, 2, 3, 4})->tokens, 2);
  EXPECT_FALSE(cache.Lookup(std::vector<int32_t>{1, 2}).has_value());
  // A prompt that ends inside an entry cannot use it (a state does not rewind).
  EXPECT_FALSE(cache.Lookup(std::vector<int32_t>{1}).has_value());
  EXPECT_EQ(cache.Lookup(std::vector<int32_t>{1, 2, 3})->tokens, 2);
  // Different tokens at the start: no hit.
  EXPECT_FALSE(cache.Lookup(std::vector<int32_t>{1, 3, 3, 4, 5}).has_value());
}

TEST(PrefixCacheTest, AnEntryWithItsLastPositionServesTheWholePrompt) {
  PrefixCache cache(4);
  const std::vector<int32_t> p = {7, 8, 9};
  ASSERT_TRUE(cache.Insert(p, 3));
  const std::vector<float> logits = {0.5f, -1.0f, 2.0f};
  const std::vector<uint8_t> activations = {1, 0};
  cache.SetLastPosition(3, logits, activations);
  EXPECT_EQ(cache.last_position_bytes(), 3 * 4 + 2);
  auto hit = cache.Lookup(p);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->tokens, 3);
  ASSERT_NE(hit->last, nullptr);
  EXPECT_EQ(hit->last->logits, logits);
  EXPECT_EQ(hit->last->activations, activations);
  EXPECT_EQ(cache.LastPositionOf(3), hit->last);
  // A longer prompt restores it and runs the rest.
  hit = cache.Lookup(std::vector<int32_t>{7, 8, 9, 10});
  EXPECT_EQ(hit->tokens, 3);
  EXPECT_EQ(hit->last, nullptr);
  cache.SetLastPosition(99, logits, activations);  // no such entry: nothing happens
  EXPECT_EQ(cache.last_position_bytes(), 3 * 4 + 2);
  EXPECT_TRUE(cache.Drop(3));
  EXPECT_EQ(cache.last_position_bytes(), 0);
  EXPECT_FALSE(cache.Drop(3));
}

TEST(PrefixCacheTest, TheSameSequenceIsCachedOnce) {
  PrefixCache cache(4);
  const std::vector<int32_t> p = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_TRUE(cache.Insert(p, 5));
  EXPECT_TRUE(cache.Contains(p));
  EXPECT_FALSE(cache.Insert(p, 6));  // the caller keeps slot 6
  EXPECT_FALSE(cache.Holds(6));
  EXPECT_FALSE(cache.Insert(std::vector<int32_t>{9}, 5));  // slot 5 holds an entry
  EXPECT_FALSE(cache.Insert(std::vector<int32_t>{}, 7));   // nothing to key it by
  EXPECT_EQ(cache.entries(), 1);
  EXPECT_TRUE(cache.Insert(Prefix(p, 4), 6));  // a different (shorter) sequence
  EXPECT_EQ(cache.entries(), 2);
}

TEST(PrefixCacheTest, EvictsTheEntrySparingFewestTokensThenTheLeastRecent) {
  PrefixCache cache(1);
  const std::vector<int32_t> longer = {1, 1, 1, 1, 1, 1}, short_a = {2, 2}, short_b = {3, 3};
  ASSERT_TRUE(cache.Insert(longer, 0));
  ASSERT_TRUE(cache.Insert(short_a, 1));
  ASSERT_TRUE(cache.Insert(short_b, 2));
  // Worth: longer 6, short_a 2, short_b 2 (the clock is 0): short_a is older than short_b.
  EXPECT_EQ(cache.Evict({}), 1);
  EXPECT_EQ(cache.evictions(), 1);
  EXPECT_FALSE(cache.Peek(std::vector<int32_t>{2, 2, 2}).has_value());
  // The clock rose to 2: a use now makes short_b worth 4, still below longer's 6.
  ASSERT_TRUE(cache.Lookup(std::vector<int32_t>{3, 3, 3}).has_value());
  EXPECT_EQ(cache.Evict({}), 2);
  // Kept slots are passed over; with nothing else left, nothing goes.
  EXPECT_EQ(cache.Evict({0}), -1);
  EXPECT_EQ(cache.Evict({}), 0);
  EXPECT_EQ(cache.Evict({}), -1);
  EXPECT_EQ(cache.entries(), 0);
  EXPECT_EQ(cache.evictions(), 3);
}

TEST(PrefixCacheTest, RecencyWinsOverLengthInTheEnd) {
  // GreedyDual-Size: each eviction raises the clock to the victim's worth, so an old long entry
  // that is never used again goes once newer entries have outgrown it.
  PrefixCache cache(1);
  ASSERT_TRUE(cache.Insert(std::vector<int32_t>(10, 1), 0));  // worth 10
  for (int32_t round = 0; round < 3; ++round) {
    // Worth clock + 3: 3, 6, 9 below the old entry's 10, so the new one goes; the clock rises.
    ASSERT_TRUE(cache.Insert(std::vector<int32_t>(3, 2 + round), 1));
    EXPECT_EQ(cache.Evict({}), 1) << round;
  }
  ASSERT_TRUE(cache.Insert(std::vector<int32_t>(3, 9), 1));  // worth 9 + 3 = 12
  EXPECT_EQ(cache.Evict({}), 0);
}

TEST(PrefixCacheTest, ASnapshotDisplacesOnlyAnEntryWorthLess) {
  PrefixCache cache(4);
  ASSERT_TRUE(cache.Insert(std::vector<int32_t>(8, 1), 0));  // worth 8
  EXPECT_EQ(cache.Evict({}, /*for_tokens=*/8), -1);          // not worth more
  EXPECT_EQ(cache.Evict({}, /*for_tokens=*/4), -1);
  EXPECT_EQ(cache.Evict({}, /*for_tokens=*/12), 0);
  EXPECT_EQ(cache.entries(), 0);
}

TEST(PrefixCacheTest, EntriesOfAnyLengthAndNestedOnesStay) {
  // A request's end (7 tokens, not a block multiple) and the next turn that extends it: both
  // stay, so a retried turn (a prompt branching after the first) still restores the first.
  PrefixCache cache(4);
  const std::vector<int32_t> turn1 = {1, 2, 3, 4, 5, 6, 7};
  const std::vector<int32_t> turn2 = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  ASSERT_TRUE(cache.Insert(turn1, 0));
  ASSERT_TRUE(cache.Insert(turn2, 1));
  EXPECT_EQ(cache.Lookup(std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})->slot, 1);
  EXPECT_EQ(cache.Lookup(std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 42})->slot, 0);
  EXPECT_TRUE(cache.Drop(1));
  EXPECT_EQ(cache.Lookup(turn2)->slot, 0);
}

TEST(PrefixCacheTest, SnapshotsWhereAPromptLeavesOrEndsOnACachedSequence) {
  PrefixCache cache(/*block=*/4);
  // A request's end: a 6-token system prompt, its question and answer.
  const std::vector<int32_t> system = {1, 2, 3, 4, 5, 6};
  std::vector<int32_t> first = system, second = system, retry = Seq({1, 2, 3, 4, 5, 6}, 3, 50);
  first.insert(first.end(), {50, 51, 52, 60, 61});
  second.insert(second.end(), {70, 71, 72});
  ASSERT_TRUE(cache.Insert(first, 0));
  // The next prompt leaves that sequence after the system prompt: exactly there, not at the
  // block boundary 4 (never seen by a hash) or 0.
  EXPECT_EQ(cache.SnapshotPoint(second, 0), 6);
  // A prompt that ends on the cached sequence (the first question asked again): at its end,
  // so that the next repeat needs no forward pass.
  EXPECT_EQ(cache.SnapshotPoint(retry, 0), 9);
  // Not when it spares less than a block beyond what is restored, nor what is cached.
  PrefixCache near(/*block=*/4);
  ASSERT_TRUE(near.Insert(first, 0));
  EXPECT_EQ(near.SnapshotPoint(second, 3), 0);
  PrefixCache cached(/*block=*/4);
  ASSERT_TRUE(cached.Insert(first, 0));
  ASSERT_TRUE(cached.Insert(system, 1));
  EXPECT_EQ(cached.SnapshotPoint(second, 0), 0);
  // Unrelated prompts share nothing worth a snapshot.
  EXPECT_EQ(cached.SnapshotPoint(std::vector<int32_t>{1, 9, 9, 9, 9, 9, 9}, 0), 0);
  // Off: only block boundaries an earlier prompt passed.
  PrefixCache blocks(/*block=*/4, /*branch_points=*/false);
  ASSERT_TRUE(blocks.Insert(first, 0));
  EXPECT_EQ(blocks.SnapshotPoint(second, 0), 0);  // no boundary seen yet; records 4 and 8
  EXPECT_EQ(blocks.SnapshotPoint(retry, 0), 4);   // shares boundary 4 with `second`, not 8
}

}  // namespace
}  // namespace seqboat
