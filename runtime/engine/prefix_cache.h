// Exact-token prefix cache: snapshots of a slot's whole state after a token sequence, reused by
// later prompts that start with the same tokens under the same routing.
//
// Every key has two parts: the routing (the per-layer activation bias the state was made
// under; a state made under one bias holds other GAU decisions, so it never serves another)
// and the tokens. Each routing has its own token tree; an empty or all-zero bias is the
// model's own routing.
//
// A SeqBoat state is the same size whatever the sequence length, so one snapshot serves a
// sequence of any length. Entries come two ways: (1) while admitting a prompt, the engine asks
// SnapshotPoint where a prefix shared with other sequences ends (so that it is shared, not the
// prompt's own tail), stops the prefill chunk there and copies the slot; (2) a request that
// ends hands its slot over whole (no copy), keyed by exactly the tokens it fed.
//
// An entry keeps the logits and GAU decisions of its last position when they are known, so that
// a prompt equal to it needs no forward pass; otherwise a lookup leaves at least one prompt
// token to run. Lookups find the longest such entry in one walk of a token radix tree
// (token_trie.h), linear in the prompt's length.
//
// The cache owns no fixed slots: it holds whatever slots it was handed, and gives them back
// when the engine needs one (Evict). Eviction is GreedyDual-Size: an entry is worth the tokens
// a hit on it spares (its length) per slot it holds (every entry holds one whole slot, the
// same bytes), plus the clock at its last use; the entry worth least goes, and the clock rises
// to its worth. So a long conversation's state outlives a short prompt's of the same age, and
// recency still wins in the end. Bookkeeping only: the engine does the slot copies. Not
// thread-safe (the engine thread owns it).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "runtime/backend.h"
#include "runtime/engine/token_trie.h"

namespace seqboat {

class PrefixCache {
 public:
  // The per-layer activation bias of a key (SequenceChunk::activation_bias); empty = none.
  using Routing = absl::Span<const float>;

  // `branch_points`: also snapshot where a prompt leaves (or ends on) a cached sequence.
  explicit PrefixCache(int64_t block, bool branch_points = true, int64_t max_seen = 1 << 16);

  // What the model gave at an entry's last position.
  struct LastPosition {
    std::vector<float> logits;         // [V]
    std::vector<uint8_t> activations;  // [L] the GAU decisions of its last token
  };
  struct Hit {
    SlotId slot = -1;
    int64_t tokens = 0;
    // Set when the entry is the whole prompt: the first token is sampled from these logits.
    const LastPosition* last = nullptr;
  };
  // The longest cached prefix of `prompt`: the whole prompt when its entry has its last
  // position, else shorter than the prompt. Lookup also marks it used.
  std::optional<Hit> Peek(absl::Span<const int32_t> prompt, Routing routing = {}) const;
  std::optional<Hit> Lookup(absl::Span<const int32_t> prompt, Routing routing = {});
  // Marks the entry in `slot` used (a Peek's hit that is taken).
  void MarkUsed(SlotId slot);

  // Where a snapshot of `prompt` is worth taking, in (after, prompt.size()], or 0; then records
  // the prompt's block boundaries as seen. The later of: the longest block boundary an earlier
  // prompt also passed (a hash per boundary remembers prompts long gone from the cache), and,
  // with branch points, where the prompt leaves the path of a cached sequence, or the prompt's
  // end when it ends on one (a repeat of a prompt whose request ran on: an exact repeat next
  // time runs nothing). A point must spare at least a block of tokens beyond `after` and not
  // be cached already.
  int64_t SnapshotPoint(absl::Span<const int32_t> prompt, int64_t after, Routing routing = {});

  // Makes `slot` (the caller hands it over) the entry of exactly `tokens` (not empty). false,
  // and no change, when that sequence is cached already: the slot stays the caller's.
  bool Insert(absl::Span<const int32_t> tokens, SlotId slot, Routing routing = {});
  bool Contains(absl::Span<const int32_t> tokens, Routing routing = {}) const;
  // Records the last position of the entry in `slot` (no-op when it holds none).
  void SetLastPosition(SlotId slot, absl::Span<const float> logits,
                       absl::Span<const uint8_t> activations);
  // Removes the entry worth least, other than those in `keep`, and returns its slot; -1 when
  // none may go. With `for_tokens`, only an entry worth less than a new entry of that many
  // tokens would be (a snapshot that is not worth its slot is not taken).
  SlotId Evict(absl::Span<const SlotId> keep, std::optional<int64_t> for_tokens = std::nullopt);
  bool Holds(SlotId slot) const { return entries_.contains(slot); }
  // The kept last position of the entry in `slot`, or null.
  const LastPosition* LastPositionOf(SlotId slot) const;
  // Forgets the entry in `slot` (its copy failed); false when it holds none. The slot is the
  // caller's again.
  bool Drop(SlotId slot);

  int64_t entries() const { return static_cast<int64_t>(entries_.size()); }
  int64_t evictions() const { return evictions_; }
  // Bytes of the kept last positions (the states themselves are in the slots).
  int64_t last_position_bytes() const { return last_position_bytes_; }
  int64_t block() const { return block_; }

 private:
  struct Entry {
    std::string routing;          // RoutingKey of its routing
    std::vector<int32_t> tokens;  // the exact sequence
    std::optional<LastPosition> last;
    int64_t worth = 0;  // GreedyDual-Size: the clock at the last use + tokens spared
    uint64_t used = 0;  // order of the last use: among equal worths the older goes first
  };
  void Touch(Entry& entry);
  // The bytes of the bias values ("" for the model's own routing), for map keys.
  static std::string RoutingKey(Routing routing);
  const TokenTrie* TrieOf(Routing routing) const;
  // Hashes of (routing, prompt[0, k * block)) for k = 1.. while k * block <= limit.
  std::vector<uint64_t> BoundaryHashes(absl::Span<const int32_t> prompt, int64_t limit,
                                       Routing routing) const;

  const int64_t block_;
  const bool branch_points_;
  const int64_t max_seen_;
  absl::flat_hash_map<SlotId, Entry> entries_;
  // Per routing (by RoutingKey), every entry's tokens valued by its slot; no empty trees.
  absl::flat_hash_map<std::string, std::unique_ptr<TokenTrie>> tries_;
  int64_t clock_ = 0;
  uint64_t uses_ = 0;
  int64_t evictions_ = 0;
  int64_t last_position_bytes_ = 0;
  // The snapshot rule's memory: boundary hash -> prompts that passed it (a collision can only
  // make a snapshot be taken early; lookups compare tokens, in the trie).
  absl::flat_hash_map<uint64_t, int32_t> seen_;
};

}  // namespace seqboat
