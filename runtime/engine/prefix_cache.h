// Exact-token prefix cache: snapshots of a slot's whole state after a prompt prefix, kept in
// spare backend slots and reused by later prompts that start with the same tokens.
//
// A SeqBoat state is the same size whatever the prefix length, so one snapshot serves a
// prefix of any length. Snapshots are taken at multiples of `block` tokens: while admitting a
// prompt, the engine asks SnapshotPoint for the longest block boundary that an earlier prompt
// also passed through (so that it is shared, not the prompt's own tail) and that is not
// cached yet, stops the prefill chunk there and copies the slot. Lookups find the longest
// cached entry that is a prefix of a new prompt (always leaving at least one prompt token
// to run, whose logits give the first sampled token), in one walk of a token radix tree
// (token_trie.h), linear in the prompt's length. Bookkeeping only: the engine does the slot
// copies. Not thread-safe (the engine thread owns it).
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "runtime/backend.h"
#include "runtime/engine/token_trie.h"

namespace seqboat {

class PrefixCache {
 public:
  // `slots`: backend slots reserved for snapshots (their number bounds the entries).
  PrefixCache(std::vector<SlotId> slots, int64_t block, int64_t max_seen = 1 << 16);

  struct Hit {
    SlotId slot = -1;
    int64_t tokens = 0;
  };
  // The longest cached prefix of `prompt` shorter than it; Lookup also marks it recently used.
  std::optional<Hit> Peek(absl::Span<const int32_t> prompt) const;
  std::optional<Hit> Lookup(absl::Span<const int32_t> prompt);

  // A block boundary in (after, prompt.size()) worth a snapshot, or 0. Then records the
  // prompt's boundaries as seen.
  int64_t SnapshotPoint(absl::Span<const int32_t> prompt, int64_t after);

  // Claims a slot for the snapshot of prompt[0, tokens), evicting the least recently used
  // entry when full; the caller copies the state into it. -1 when there are no slots or the
  // same prefix is already cached.
  SlotId Insert(absl::Span<const int32_t> prompt, int64_t tokens);
  // Claims a slot for the state a finished request left: after exactly `tokens`, any length.
  // It takes a free slot or the least recently used slot of another finished request, never
  // a shared prefix's (one that two prompts passed through outranks one request's end); the
  // end of an earlier request that `tokens` extends gives way to it. -1 when no slot can be
  // had or the same sequence is cached already.
  SlotId InsertFinished(absl::Span<const int32_t> tokens);
  // Forgets the entry in `slot` (its copy failed).
  void Drop(SlotId slot);

  int64_t entries() const { return static_cast<int64_t>(lru_.size()); }
  int64_t capacity() const { return static_cast<int64_t>(all_slots_.size()); }
  int64_t block() const { return block_; }

 private:
  struct Entry {
    std::vector<int32_t> tokens;  // the exact prefix
    SlotId slot = -1;
    bool shared = true;  // a block boundary two prompts passed; false: a request's end
  };
  SlotId Claim(absl::Span<const int32_t> tokens, bool shared);
  // Hashes of prompt[0, k * block) for k = 1.. while k * block <= limit.
  std::vector<uint64_t> BoundaryHashes(absl::Span<const int32_t> prompt, int64_t limit) const;

  const std::vector<SlotId> all_slots_;
  const int64_t block_;
  const int64_t max_seen_;
  std::vector<SlotId> free_slots_;
  std::list<Entry> lru_;  // most recently used first
  absl::flat_hash_map<SlotId, std::list<Entry>::iterator> by_slot_;
  TokenTrie trie_;  // every entry's tokens, valued by its slot
  // The snapshot rule's memory: boundary hash -> prompts that passed it (a collision can only
  // make a snapshot be taken early; lookups compare tokens, in the trie).
  absl::flat_hash_map<uint64_t, int32_t> seen_;
};

}  // namespace seqboat
