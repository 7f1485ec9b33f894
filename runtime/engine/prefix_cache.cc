#include "runtime/engine/prefix_cache.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace seqboat {
namespace {

uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  return h ^ (h >> 32);
}

int64_t Bytes(const PrefixCache::LastPosition& last) {
  return static_cast<int64_t>(last.logits.size() * sizeof(float) + last.activations.size());
}

}  // namespace

PrefixCache::PrefixCache(int64_t block, bool branch_points, int64_t max_seen)
    : block_(std::max<int64_t>(block, 1)), branch_points_(branch_points), max_seen_(max_seen) {}

std::string PrefixCache::RoutingKey(Routing routing) {
  std::string key;
  if (std::all_of(routing.begin(), routing.end(), [](float b) { return b == 0.0f; })) return key;
  key.resize(routing.size() * sizeof(float));
  for (size_t l = 0; l < routing.size(); ++l) {
    const float b = routing[l] + 0.0f;  // -0 and +0 are one bias
    std::memcpy(key.data() + l * sizeof(float), &b, sizeof(float));
  }
  return key;
}

const TokenTrie* PrefixCache::TrieOf(Routing routing) const {
  auto found = tries_.find(RoutingKey(routing));
  return found == tries_.end() ? nullptr : found->second.get();
}

std::vector<uint64_t> PrefixCache::BoundaryHashes(absl::Span<const int32_t> prompt, int64_t limit,
                                                  Routing routing) const {
  std::vector<uint64_t> hashes;
  uint64_t h = 0x5EB0A7ull;
  for (unsigned char byte : RoutingKey(routing)) h = Mix(h, byte);
  for (int64_t i = 0; i < limit && i < static_cast<int64_t>(prompt.size()); ++i) {
    h = Mix(h, static_cast<uint32_t>(prompt[i]));
    if ((i + 1) % block_ == 0) hashes.push_back(h);
  }
  return hashes;
}

std::optional<PrefixCache::Hit> PrefixCache::Peek(absl::Span<const int32_t> prompt,
                                                  Routing routing) const {
  const TokenTrie* trie = TrieOf(routing);
  if (prompt.empty() || trie == nullptr) return std::nullopt;
  const int64_t length = static_cast<int64_t>(prompt.size());
  std::optional<TokenTrie::Match> match = trie->LongestPrefix(prompt, length);
  if (match.has_value() && match->length == length) {
    const Entry& whole = entries_.at(static_cast<SlotId>(match->value));
    if (whole.last.has_value()) return Hit{static_cast<SlotId>(match->value), length, &*whole.last};
    match = trie->LongestPrefix(prompt, length - 1);  // its last token must run
  }
  if (!match.has_value() || match->length == 0) return std::nullopt;
  return Hit{static_cast<SlotId>(match->value), match->length};
}

std::optional<PrefixCache::Hit> PrefixCache::Lookup(absl::Span<const int32_t> prompt,
                                                    Routing routing) {
  std::optional<Hit> hit = Peek(prompt, routing);
  if (hit.has_value()) Touch(entries_.at(hit->slot));
  return hit;
}

void PrefixCache::MarkUsed(SlotId slot) {
  auto found = entries_.find(slot);
  if (found != entries_.end()) Touch(found->second);
}

void PrefixCache::Touch(Entry& entry) {
  entry.worth = clock_ + static_cast<int64_t>(entry.tokens.size());
  entry.used = ++uses_;
}

int64_t PrefixCache::SnapshotPoint(absl::Span<const int32_t> prompt, int64_t after,
                                   Routing routing) {
  const int64_t length = static_cast<int64_t>(prompt.size());
  const std::vector<uint64_t> hashes = BoundaryHashes(prompt, length - 1, routing);
  const TokenTrie* trie = TrieOf(routing);
  auto cached = [&](int64_t tokens) {
    return trie != nullptr && trie->Find(prompt.subspan(0, tokens)).has_value();
  };
  int64_t point = 0;
  for (int64_t k = static_cast<int64_t>(hashes.size()); k >= 1 && k * block_ > after; --k) {
    auto seen = seen_.find(hashes[k - 1]);
    if (seen == seen_.end()) continue;
    if (!cached(k * block_)) point = k * block_;
    break;  // the longest shared boundary is the one worth having
  }
  if (branch_points_) {
    // The tokens this prompt shares with a cached sequence: exactly a shared prefix's length.
    const int64_t shared = trie != nullptr ? trie->CommonPrefix(prompt) : 0;
    if (shared > point && shared - after >= block_ && !cached(shared)) {
      point = shared;
    }
  }
  if (static_cast<int64_t>(seen_.size() + hashes.size()) > max_seen_) seen_.clear();
  for (uint64_t h : hashes) ++seen_[h];
  return point;
}

bool PrefixCache::Contains(absl::Span<const int32_t> tokens, Routing routing) const {
  const TokenTrie* trie = TrieOf(routing);
  return trie != nullptr && trie->Find(tokens).has_value();
}

bool PrefixCache::Insert(absl::Span<const int32_t> tokens, SlotId slot, Routing routing) {
  if (tokens.empty() || slot < 0 || entries_.contains(slot)) return false;
  std::string key = RoutingKey(routing);
  std::unique_ptr<TokenTrie>& trie = tries_[key];
  if (trie == nullptr) trie = std::make_unique<TokenTrie>();
  if (!trie->Insert(tokens, slot)) return false;  // the tree held an entry, so it stays
  Entry& entry = entries_[slot];
  entry.routing = std::move(key);
  entry.tokens.assign(tokens.begin(), tokens.end());
  Touch(entry);
  return true;
}

void PrefixCache::SetLastPosition(SlotId slot, absl::Span<const float> logits,
                                  absl::Span<const uint8_t> activations) {
  auto found = entries_.find(slot);
  if (found == entries_.end()) return;
  std::optional<LastPosition>& last = found->second.last;
  if (last.has_value()) last_position_bytes_ -= Bytes(*last);
  last.emplace();
  last->logits.assign(logits.begin(), logits.end());
  last->activations.assign(activations.begin(), activations.end());
  last_position_bytes_ += Bytes(*last);
}

const PrefixCache::LastPosition* PrefixCache::LastPositionOf(SlotId slot) const {
  auto found = entries_.find(slot);
  return found == entries_.end() || !found->second.last.has_value() ? nullptr
                                                                    : &*found->second.last;
}

SlotId PrefixCache::Evict(absl::Span<const SlotId> keep, std::optional<int64_t> for_tokens) {
  const Entry* victim = nullptr;
  SlotId victim_slot = -1;
  for (const auto& [slot, entry] : entries_) {
    if (std::find(keep.begin(), keep.end(), slot) != keep.end()) continue;
    if (victim == nullptr || entry.worth < victim->worth ||
        (entry.worth == victim->worth && entry.used < victim->used)) {
      victim = &entry;
      victim_slot = slot;
    }
  }
  if (victim == nullptr) return -1;
  if (for_tokens.has_value() && victim->worth >= clock_ + *for_tokens) return -1;
  clock_ = std::max(clock_, victim->worth);
  ++evictions_;
  Drop(victim_slot);
  return victim_slot;
}

bool PrefixCache::Drop(SlotId slot) {
  auto found = entries_.find(slot);
  if (found == entries_.end()) return false;
  auto tree = tries_.find(found->second.routing);
  tree->second->Erase(found->second.tokens);
  if (tree->second->entries() == 0) tries_.erase(tree);
  if (found->second.last.has_value()) last_position_bytes_ -= Bytes(*found->second.last);
  entries_.erase(found);
  return true;
}

}  // namespace seqboat
