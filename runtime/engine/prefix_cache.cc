#include "runtime/engine/prefix_cache.h"

#include <algorithm>

namespace seqboat {
namespace {

uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  return h ^ (h >> 32);
}

}  // namespace

PrefixCache::PrefixCache(std::vector<SlotId> slots, int64_t block, int64_t max_seen)
    : all_slots_(std::move(slots)), block_(std::max<int64_t>(block, 1)), max_seen_(max_seen) {
  free_slots_.assign(all_slots_.rbegin(), all_slots_.rend());
}

std::vector<uint64_t> PrefixCache::BoundaryHashes(absl::Span<const int32_t> prompt,
                                                  int64_t limit) const {
  std::vector<uint64_t> hashes;
  uint64_t h = 0x5EB0A7ull;
  for (int64_t i = 0; i < limit && i < static_cast<int64_t>(prompt.size()); ++i) {
    h = Mix(h, static_cast<uint32_t>(prompt[i]));
    if ((i + 1) % block_ == 0) hashes.push_back(h);
  }
  return hashes;
}

std::optional<PrefixCache::Hit> PrefixCache::Peek(absl::Span<const int32_t> prompt) const {
  if (prompt.empty()) return std::nullopt;
  std::optional<TokenTrie::Match> match =
      trie_.LongestPrefix(prompt, static_cast<int64_t>(prompt.size()) - 1);
  if (!match.has_value() || match->length == 0) return std::nullopt;
  return Hit{static_cast<SlotId>(match->value), match->length};
}

std::optional<PrefixCache::Hit> PrefixCache::Lookup(absl::Span<const int32_t> prompt) {
  std::optional<Hit> hit = Peek(prompt);
  if (hit.has_value()) lru_.splice(lru_.begin(), lru_, by_slot_.at(hit->slot));
  return hit;
}

int64_t PrefixCache::SnapshotPoint(absl::Span<const int32_t> prompt, int64_t after) {
  if (all_slots_.empty()) return 0;
  const std::vector<uint64_t> hashes =
      BoundaryHashes(prompt, static_cast<int64_t>(prompt.size()) - 1);
  int64_t point = 0;
  for (int64_t k = static_cast<int64_t>(hashes.size()); k >= 1 && k * block_ > after; --k) {
    auto seen = seen_.find(hashes[k - 1]);
    if (seen == seen_.end()) continue;
    if (!trie_.Find(prompt.subspan(0, k * block_)).has_value()) point = k * block_;
    break;  // the longest shared boundary is the one worth having
  }
  if (static_cast<int64_t>(seen_.size() + hashes.size()) > max_seen_) seen_.clear();
  for (uint64_t h : hashes) ++seen_[h];
  return point;
}

SlotId PrefixCache::Insert(absl::Span<const int32_t> prompt, int64_t tokens) {
  if (all_slots_.empty() || tokens <= 0 || tokens % block_ != 0 ||
      tokens > static_cast<int64_t>(prompt.size())) {
    return -1;
  }
  // Two requests with the same prompt admitted together both reach the snapshot point: the
  // second has nothing to add.
  return Claim(prompt.subspan(0, tokens), /*shared=*/true);
}

SlotId PrefixCache::InsertFinished(absl::Span<const int32_t> tokens) {
  if (all_slots_.empty() || tokens.empty()) return -1;
  // The end of an earlier request that this one extends (the previous turn of a conversation)
  // is superseded: its slot goes to the longer state. A shared prefix stays.
  if (std::optional<TokenTrie::Match> earlier =
          trie_.LongestPrefix(tokens, static_cast<int64_t>(tokens.size()) - 1)) {
    if (!by_slot_.at(static_cast<SlotId>(earlier->value))->shared) {
      Drop(static_cast<SlotId>(earlier->value));
    }
  }
  return Claim(tokens, /*shared=*/false);
}

SlotId PrefixCache::Claim(absl::Span<const int32_t> tokens, bool shared) {
  if (std::optional<int64_t> cached = trie_.Find(tokens)) {
    if (shared) by_slot_.at(static_cast<SlotId>(*cached))->shared = true;  // now known shared
    return -1;
  }
  if (free_slots_.empty()) {
    // The least recently used entry this one may displace.
    auto victim = lru_.end();
    for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
      if (shared || !it->shared) {
        victim = std::prev(it.base());
        break;
      }
    }
    if (victim == lru_.end()) return -1;
    Drop(victim->slot);
  }
  const SlotId slot = free_slots_.back();
  free_slots_.pop_back();
  Entry entry;
  entry.tokens.assign(tokens.begin(), tokens.end());
  entry.slot = slot;
  entry.shared = shared;
  lru_.push_front(std::move(entry));
  by_slot_[slot] = lru_.begin();
  trie_.Insert(tokens, slot);
  return slot;
}

void PrefixCache::Drop(SlotId slot) {
  auto found = by_slot_.find(slot);
  if (found == by_slot_.end()) return;
  const std::list<Entry>::iterator entry = found->second;
  trie_.Erase(entry->tokens);
  by_slot_.erase(found);
  free_slots_.push_back(slot);
  lru_.erase(entry);
}

}  // namespace seqboat
