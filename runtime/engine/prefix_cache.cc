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

std::list<PrefixCache::Entry>::const_iterator PrefixCache::Find(absl::Span<const int32_t> prompt,
                                                                int64_t tokens,
                                                                uint64_t hash) const {
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return lru_.end();
  for (auto entry : it->second) {
    if (static_cast<int64_t>(entry->tokens.size()) == tokens &&
        std::equal(entry->tokens.begin(), entry->tokens.end(), prompt.begin())) {
      return entry;
    }
  }
  return lru_.end();
}

std::optional<PrefixCache::Hit> PrefixCache::Peek(absl::Span<const int32_t> prompt) const {
  if (lru_.empty()) return std::nullopt;
  const std::vector<uint64_t> hashes =
      BoundaryHashes(prompt, static_cast<int64_t>(prompt.size()) - 1);
  for (int64_t k = static_cast<int64_t>(hashes.size()); k >= 1; --k) {
    auto entry = Find(prompt, k * block_, hashes[k - 1]);
    if (entry != lru_.end()) return Hit{entry->slot, k * block_};
  }
  return std::nullopt;
}

std::optional<PrefixCache::Hit> PrefixCache::Lookup(absl::Span<const int32_t> prompt) {
  std::optional<Hit> hit = Peek(prompt);
  if (hit.has_value()) {
    auto entry =
        std::find_if(lru_.begin(), lru_.end(), [&](const Entry& e) { return e.slot == hit->slot; });
    lru_.splice(lru_.begin(), lru_, entry);
  }
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
    if (Find(prompt, k * block_, hashes[k - 1]) == lru_.end()) point = k * block_;
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
  const std::vector<uint64_t> hashes = BoundaryHashes(prompt, tokens);
  // Two requests with the same prompt admitted together both reach the snapshot point: the
  // second has nothing to add.
  if (Find(prompt, tokens, hashes.back()) != lru_.end()) return -1;
  if (free_slots_.empty()) Drop(lru_.back().slot);
  const SlotId slot = free_slots_.back();
  free_slots_.pop_back();
  Entry entry;
  entry.tokens.assign(prompt.begin(), prompt.begin() + tokens);
  entry.hash = hashes.back();
  entry.slot = slot;
  lru_.push_front(std::move(entry));
  by_hash_[lru_.front().hash].push_back(lru_.begin());
  return slot;
}

void PrefixCache::Drop(SlotId slot) {
  auto entry =
      std::find_if(lru_.begin(), lru_.end(), [&](const Entry& e) { return e.slot == slot; });
  if (entry == lru_.end()) return;
  auto& bucket = by_hash_[entry->hash];
  std::erase(bucket, entry);
  if (bucket.empty()) by_hash_.erase(entry->hash);
  free_slots_.push_back(slot);
  lru_.erase(entry);
}

}  // namespace seqboat
