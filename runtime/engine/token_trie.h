// A radix tree over token sequences, each node the end of at most one entry (a value). Finds
// the longest entry that is a prefix of a sequence in one walk, linear in the sequence's
// length whatever the entries' lengths (no fixed blocks, no hashing). Edges hold their own
// token runs; nodes exist only where entries end or paths branch. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"

namespace seqboat {

class TokenTrie {
 public:
  struct Match {
    int64_t value = 0;
    int64_t length = 0;  // tokens of the entry
  };

  TokenTrie();
  ~TokenTrie();
  TokenTrie(const TokenTrie&) = delete;
  TokenTrie& operator=(const TokenTrie&) = delete;

  // Adds `tokens` (any length, the empty sequence too) with `value`; false (and no change)
  // when that exact sequence is an entry already.
  bool Insert(absl::Span<const int32_t> tokens, int64_t value);
  // Removes the entry of exactly `tokens`; false when there is none.
  bool Erase(absl::Span<const int32_t> tokens);
  // The value of exactly `tokens`, if it is an entry.
  std::optional<int64_t> Find(absl::Span<const int32_t> tokens) const;
  // How many of `tokens`' first tokens some entry also starts with (a path of the tree).
  int64_t CommonPrefix(absl::Span<const int32_t> tokens) const;
  // The longest entry that is a prefix of `tokens` and at most `max_length` long.
  std::optional<Match> LongestPrefix(absl::Span<const int32_t> tokens, int64_t max_length) const;

  int64_t entries() const { return entries_; }
  int64_t nodes() const { return nodes_; }  // for tests: nodes besides the root

 private:
  struct Node;
  // The node where exactly `tokens` ends, or null.
  Node* Walk(absl::Span<const int32_t> tokens) const;

  std::unique_ptr<Node> root_;
  int64_t entries_ = 0;
  int64_t nodes_ = 0;
};

}  // namespace seqboat
