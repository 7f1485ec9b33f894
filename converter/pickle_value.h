// Inert values built by the restricted unpickler. Nothing here can run code: a class or
// function named in the pickle is only a (module, name) pair, and calling it only records
// the call. Values live in one arena owned by the Pickle, so shared and cyclic references
// (the memo allows both) cost nothing to free.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace seqboat::convert {

// Element types of torch storages, named by their storage classes (torch.FloatStorage...).
enum class TorchDType : uint8_t {
  kFloat32,
  kFloat16,
  kBFloat16,
  kFloat64,
  kInt64,
  kInt32,
  kInt16,
  kInt8,
  kUInt8,
  kBool,
  kComplex64,
  kComplex128,
};
size_t TorchDTypeSize(TorchDType dtype);
const char* TorchDTypeName(TorchDType dtype);  // torch spelling: "float32", "float16", ...

enum class Kind : uint8_t {
  kNone,
  kBool,
  kInt,
  kBigInt,  // an int wider than 64 bits; kept only as its byte count
  kFloat,
  kString,  // unicode text, UTF-8
  kBytes,
  kTuple,
  kList,
  kDict,
  kSet,
  kGlobal,   // a class or function reference: module + name
  kObject,   // the recorded call of a callable (REDUCE, NEWOBJ, OBJ, INST) plus BUILD state
  kStorage,  // a torch storage (persistent id)
  kTensor,   // a torch tensor rebuilt by an allow-listed torch._utils function
};
const char* KindName(Kind kind);

struct Value;

struct StorageInfo {
  std::string key;       // the archive's data/<key> entry
  std::string location;  // "cpu", "cuda:0", ...
  TorchDType dtype = TorchDType::kFloat32;
  int64_t numel = 0;  // elements the storage holds
};

struct TensorInfo {
  const Value* storage = nullptr;  // kStorage
  int64_t storage_offset = 0;      // in elements
  std::vector<int64_t> shape;
  std::vector<int64_t> stride;  // in elements
  bool is_parameter = false;
  const StorageInfo& storage_info() const;
};

struct Value {
  Kind kind = Kind::kNone;
  uint32_t depth = 0;        // containers: 1 + deepest element when last changed
  int64_t int_value = 0;     // kInt, kBool; byte count for kBigInt
  double float_value = 0.0;  // kFloat
  std::string text;          // kString, kBytes; kGlobal: module
  std::string name;          // kGlobal: qualified name inside the module
  // kTuple, kList, kSet: elements. kDict: keys and values interleaved (k0, v0, k1, v1...),
  // in insertion order. kObject: items appended or set on the object (kept, never used).
  std::vector<Value*> items;
  Value* callable = nullptr;             // kObject: what was called (usually a kGlobal)
  Value* args = nullptr;                 // kObject: its argument tuple
  Value* state = nullptr;                // any kind: the BUILD state, if any
  std::unique_ptr<StorageInfo> storage;  // kStorage
  std::unique_ptr<TensorInfo> tensor;    // kTensor

  bool is(Kind k) const { return kind == k; }
  bool IsGlobal(absl::string_view module, absl::string_view qualified_name) const {
    return kind == Kind::kGlobal && text == module && name == qualified_name;
  }
  // For kObject: the callable's "module.name" when it is a global, else its kind.
  std::string CallableName() const;
  // kDict lookup by string key; null when absent or not a dict.
  const Value* DictGet(absl::string_view key) const;
  size_t DictSize() const { return items.size() / 2; }
};

// "module.name" of a global.
std::string GlobalName(const Value& global);

// A short, bounded description for messages and --inspect ("int 3", "str 'x'", "tuple of 3",
// "object os.system(...)").
std::string Describe(const Value& value);

// The result of unpickling: the root value and the arena that owns every value.
class Pickle {
 public:
  const Value& root() const { return *root_; }
  // Every distinct global the pickle named, in first-seen order, as "module.name".
  const std::vector<std::string>& globals() const { return globals_; }
  size_t value_count() const { return values_.size(); }

 private:
  friend class Unpickler;
  std::deque<Value> values_;
  Value* root_ = nullptr;
  std::vector<std::string> globals_;
};

}  // namespace seqboat::convert
