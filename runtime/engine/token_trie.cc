#include "runtime/engine/token_trie.h"

#include <algorithm>
#include <utility>

namespace seqboat {

struct TokenTrie::Node {
  std::vector<int32_t> edge;  // the tokens from the parent to here (empty only at the root)
  Node* parent = nullptr;
  absl::flat_hash_map<int32_t, std::unique_ptr<Node>> children;  // by their edge's first token
  bool has_value = false;
  int64_t value = 0;
};

TokenTrie::TokenTrie() : root_(std::make_unique<Node>()) {}
TokenTrie::~TokenTrie() = default;

namespace {

// Tokens `edge` and `tokens` share at their start.
size_t Common(const std::vector<int32_t>& edge, absl::Span<const int32_t> tokens) {
  const size_t n = std::min(edge.size(), tokens.size());
  size_t i = 0;
  while (i < n && edge[i] == tokens[i]) ++i;
  return i;
}

}  // namespace

bool TokenTrie::Insert(absl::Span<const int32_t> tokens, int64_t value) {
  Node* node = root_.get();
  size_t i = 0;
  while (i < tokens.size()) {
    auto it = node->children.find(tokens[i]);
    if (it == node->children.end()) {  // a new leaf holds the rest
      auto leaf = std::make_unique<Node>();
      leaf->edge.assign(tokens.begin() + i, tokens.end());
      leaf->parent = node;
      node = (node->children[tokens[i]] = std::move(leaf)).get();
      ++nodes_;
      i = tokens.size();
      break;
    }
    Node* child = it->second.get();
    const size_t m = Common(child->edge, tokens.subspan(i));
    if (m < child->edge.size()) {  // the sequence leaves the edge inside it: split it there
      auto middle = std::make_unique<Node>();
      middle->edge.assign(child->edge.begin(), child->edge.begin() + m);
      middle->parent = node;
      std::unique_ptr<Node> lower = std::move(it->second);
      lower->edge.erase(lower->edge.begin(), lower->edge.begin() + m);
      lower->parent = middle.get();
      const int32_t first = lower->edge.front();
      middle->children[first] = std::move(lower);
      it->second = std::move(middle);
      ++nodes_;
      child = it->second.get();
    }
    node = child;
    i += m;
  }
  if (node->has_value) return false;
  node->has_value = true;
  node->value = value;
  ++entries_;
  return true;
}

TokenTrie::Node* TokenTrie::Walk(absl::Span<const int32_t> tokens) const {
  Node* node = root_.get();
  size_t i = 0;
  while (i < tokens.size()) {
    auto it = node->children.find(tokens[i]);
    if (it == node->children.end()) return nullptr;
    Node* child = it->second.get();
    if (child->edge.size() > tokens.size() - i ||
        !std::equal(child->edge.begin(), child->edge.end(), tokens.begin() + i)) {
      return nullptr;
    }
    node = child;
    i += child->edge.size();
  }
  return node;
}

std::optional<int64_t> TokenTrie::Find(absl::Span<const int32_t> tokens) const {
  const Node* node = Walk(tokens);
  if (node == nullptr || !node->has_value) return std::nullopt;
  return node->value;
}

bool TokenTrie::Erase(absl::Span<const int32_t> tokens) {
  Node* node = Walk(tokens);
  if (node == nullptr || !node->has_value) return false;
  node->has_value = false;
  --entries_;
  // Prune what no longer leads to an entry, then merge a node left with one child into it.
  while (node != root_.get() && !node->has_value && node->children.empty()) {
    Node* parent = node->parent;
    parent->children.erase(node->edge.front());
    --nodes_;
    node = parent;
  }
  if (node != root_.get() && !node->has_value && node->children.size() == 1) {
    std::unique_ptr<Node> child = std::move(node->children.begin()->second);
    node->children.clear();
    node->edge.insert(node->edge.end(), child->edge.begin(), child->edge.end());
    node->has_value = child->has_value;
    node->value = child->value;
    node->children = std::move(child->children);
    for (auto& [first, grandchild] : node->children) grandchild->parent = node;
    --nodes_;
  }
  return true;
}

int64_t TokenTrie::CommonPrefix(absl::Span<const int32_t> tokens) const {
  const Node* node = root_.get();
  size_t depth = 0;
  while (depth < tokens.size()) {
    auto it = node->children.find(tokens[depth]);
    if (it == node->children.end()) break;
    const Node* child = it->second.get();
    const size_t m = Common(child->edge, tokens.subspan(depth));
    depth += m;
    if (m < child->edge.size()) break;  // the tokens leave the path inside this edge
    node = child;
  }
  return static_cast<int64_t>(depth);
}

std::optional<TokenTrie::Match> TokenTrie::LongestPrefix(absl::Span<const int32_t> tokens,
                                                         int64_t max_length) const {
  std::optional<Match> best;
  const Node* node = root_.get();
  int64_t depth = 0;
  for (;;) {
    if (node->has_value && depth <= max_length) best = Match{node->value, depth};
    if (depth >= static_cast<int64_t>(tokens.size()) || depth >= max_length) break;
    auto it = node->children.find(tokens[depth]);
    if (it == node->children.end()) break;
    const Node* child = it->second.get();
    const int64_t end = depth + static_cast<int64_t>(child->edge.size());
    if (end > static_cast<int64_t>(tokens.size()) ||
        !std::equal(child->edge.begin(), child->edge.end(), tokens.begin() + depth)) {
      break;
    }
    node = child;
    depth = end;
  }
  return best;
}

}  // namespace seqboat
