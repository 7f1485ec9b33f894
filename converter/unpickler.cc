// The restricted unpickler: a stack machine over the pickle opcodes that builds inert values.
#include "converter/unpickler.h"

#include <cstring>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "converter/pickle_opcodes.h"
#include "runtime/util/status_macros.h"

namespace seqboat::convert {
namespace {

using namespace pickle_op;  // NOLINT: the opcodes read best unqualified here

constexpr size_t kMaxGlobalNameLength = 1024;
constexpr size_t kMaxTensorDims = 32;

std::optional<TorchDType> StorageDType(const Value& global) {
  if (global.kind != Kind::kGlobal || global.text != "torch") return std::nullopt;
  static const auto* kTypes = new absl::flat_hash_map<std::string, TorchDType>{
      {"FloatStorage", TorchDType::kFloat32},
      {"HalfStorage", TorchDType::kFloat16},
      {"BFloat16Storage", TorchDType::kBFloat16},
      {"DoubleStorage", TorchDType::kFloat64},
      {"LongStorage", TorchDType::kInt64},
      {"IntStorage", TorchDType::kInt32},
      {"ShortStorage", TorchDType::kInt16},
      {"CharStorage", TorchDType::kInt8},
      {"ByteStorage", TorchDType::kUInt8},
      {"UntypedStorage", TorchDType::kUInt8},
      {"BoolStorage", TorchDType::kBool},
      {"ComplexFloatStorage", TorchDType::kComplex64},
      {"ComplexDoubleStorage", TorchDType::kComplex128},
  };
  auto it = kTypes->find(global.name);
  if (it == kTypes->end()) return std::nullopt;
  return it->second;
}

// Decodes UTF-8 into code points <= 0xff (what _codecs.encode(text, "latin1") accepts).
std::optional<std::string> Utf8ToLatin1(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = text[i];
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if ((c == 0xc2 || c == 0xc3) && i + 1 < text.size() &&
               (static_cast<unsigned char>(text[i + 1]) & 0xc0) == 0x80) {
      out += static_cast<char>(((c & 0x1f) << 6) | (text[i + 1] & 0x3f));
      ++i;
    } else {
      return std::nullopt;
    }
  }
  return out;
}

}  // namespace

class Unpickler {
 public:
  Unpickler(absl::Span<const uint8_t> data, absl::string_view label, const UnpicklerLimits& limits)
      : data_(data), label_(label), limits_(limits), pickle_(new Pickle()) {}

  absl::StatusOr<std::unique_ptr<Pickle>> Run() {
    while (pickle_->root_ == nullptr) {
      op_offset_ = pos_;
      if (pos_ >= data_.size()) {
        return absl::InvalidArgumentError(absl::StrCat(label_, ": pickle ends at offset ", pos_,
                                                       " without a STOP opcode (truncated)"));
      }
      op_ = data_[pos_++];
      RETURN_IF_ERROR(Step());
    }
    return std::move(pickle_);
  }

 private:
  template <typename... Parts>
  absl::Status Error(const Parts&... parts) const {
    const char* name = OpName(op_);
    return absl::InvalidArgumentError(
        absl::StrCat(label_, ": offset ", op_offset_, ", opcode ",
                     name != nullptr ? name : absl::StrFormat("0x%02x", op_), ": ", parts...));
  }

  absl::StatusOr<const uint8_t*> Read(uint64_t n) {
    if (n > data_.size() - pos_) {
      return Error("needs ", n, " bytes but only ", data_.size() - pos_,
                   " remain in the pickle (truncated, or a corrupt length field)");
    }
    const uint8_t* p = data_.data() + pos_;
    pos_ += n;
    return p;
  }
  template <typename T>
  absl::StatusOr<T> ReadLe() {
    ASSIGN_OR_RETURN(const uint8_t* p, Read(sizeof(T)));
    T value = 0;
    for (size_t i = 0; i < sizeof(T); ++i) {
      value |= static_cast<T>(static_cast<T>(p[i]) << (8 * i));
    }
    return value;
  }
  // A newline-terminated text argument (GLOBAL, INST).
  absl::StatusOr<std::string> ReadLine() {
    const size_t limit = std::min(data_.size(), pos_ + kMaxGlobalNameLength + 1);
    for (size_t i = pos_; i < limit; ++i) {
      if (data_[i] == '\n') {
        std::string line(reinterpret_cast<const char*>(data_.data() + pos_), i - pos_);
        pos_ = i + 1;
        return line;
      }
    }
    return Error("no newline within ", kMaxGlobalNameLength,
                 " bytes: name too long or pickle truncated");
  }

  absl::StatusOr<Value*> New(Kind kind) {
    if (pickle_->values_.size() >= limits_.max_values) {
      return Error("more than ", limits_.max_values, " values: limit reached");
    }
    Value& value = pickle_->values_.emplace_back();
    value.kind = kind;
    return &value;
  }

  absl::Status Push(Value* value) {
    if (stack_.size() >= limits_.max_stack) {
      return Error("stack holds more than ", limits_.max_stack, " values: limit reached");
    }
    stack_.push_back(value);
    return absl::OkStatus();
  }
  size_t Floor() const { return marks_.empty() ? 0 : marks_.back(); }
  absl::StatusOr<Value*> Pop() {
    if (stack_.size() <= Floor()) {
      return Error(marks_.empty() ? "stack underflow" : "stack underflow above the last MARK");
    }
    Value* value = stack_.back();
    stack_.pop_back();
    return value;
  }
  absl::StatusOr<Value*> Top() {
    if (stack_.size() <= Floor()) return Error("stack underflow");
    return stack_.back();
  }
  // Removes and returns the values above the last MARK, and the MARK.
  absl::StatusOr<std::vector<Value*>> PopMark() {
    if (marks_.empty()) return Error("no MARK on the stack");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<Value*> items(stack_.begin() + mark, stack_.end());
    stack_.resize(mark);
    return items;
  }

  // Counts `count` more elements against the limit.
  absl::Status CountElements(uint64_t count) {
    elements_ += count;
    if (elements_ > limits_.max_elements) {
      return Error("containers hold more than ", limits_.max_elements, " elements: limit reached");
    }
    return absl::OkStatus();
  }
  // Raises `container`'s depth to cover `child`.
  absl::Status Nest(Value* container, const Value* child) {
    if (child != nullptr && child->depth + 1 > container->depth) {
      container->depth = child->depth + 1;
      if (container->depth > limits_.max_depth) {
        return Error("values nested deeper than ", limits_.max_depth, " levels");
      }
    }
    return absl::OkStatus();
  }
  absl::StatusOr<Value*> MakeSequence(Kind kind, std::vector<Value*> items) {
    ASSIGN_OR_RETURN(Value * value, New(kind));
    RETURN_IF_ERROR(CountElements(items.size()));
    for (const Value* item : items) RETURN_IF_ERROR(Nest(value, item));
    value->items = std::move(items);
    return value;
  }
  absl::Status AppendItems(Value* target, const std::vector<Value*>& items) {
    if (target->kind != Kind::kList && target->kind != Kind::kSet &&
        target->kind != Kind::kObject) {
      return Error("cannot append to a ", KindName(target->kind));
    }
    return AddElements(target, items);
  }
  absl::Status AddElements(Value* target, const std::vector<Value*>& items) {
    RETURN_IF_ERROR(CountElements(items.size()));
    for (Value* item : items) {
      RETURN_IF_ERROR(Nest(target, item));
      target->items.push_back(item);
    }
    return absl::OkStatus();
  }
  absl::Status SetItems(Value* target, const std::vector<Value*>& pairs) {
    if (pairs.size() % 2 != 0) return Error("odd number of values for key/value pairs");
    if (target->kind != Kind::kDict && target->kind != Kind::kObject) {
      return Error("cannot set items on a ", KindName(target->kind));
    }
    return AddElements(target, pairs);
  }

  absl::Status Memoize(uint64_t index) {
    if (index >= limits_.max_memo) {
      return Error("memo index ", index, " exceeds the limit of ", limits_.max_memo);
    }
    ASSIGN_OR_RETURN(Value * top, Top());
    if (!memo_.contains(index) && memo_.size() >= limits_.max_memo) {
      return Error("memo holds more than ", limits_.max_memo, " entries: limit reached");
    }
    memo_[index] = top;
    return absl::OkStatus();
  }
  absl::Status MemoGet(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) {
      return Error("memo index ", index, " is out of range (the memo holds ", memo_.size(),
                   " entries)");
    }
    return Push(it->second);
  }

  absl::StatusOr<Value*> MakeGlobal(std::string module, std::string name) {
    if (module.empty() || name.empty() || module.size() > kMaxGlobalNameLength ||
        name.size() > kMaxGlobalNameLength) {
      return Error("malformed global name");
    }
    // As CPython's unpickler does for protocol < 3 pickles written by Python 3.
    if (module == "__builtin__") module = "builtins";
    if (module == "copy_reg") module = "copyreg";
    ASSIGN_OR_RETURN(Value * global, New(Kind::kGlobal));
    global->text = std::move(module);
    global->name = std::move(name);
    std::string full = GlobalName(*global);
    if (globals_seen_.insert(full).second) pickle_->globals_.push_back(std::move(full));
    return global;
  }

  absl::StatusOr<Value*> MakeInt(const uint8_t* bytes, uint64_t n) {
    ASSIGN_OR_RETURN(Value * value, New(Kind::kInt));
    if (n == 0) return value;
    // Two's complement, little-endian: fits int64 when every byte past the eighth repeats
    // the sign of the eighth.
    const bool negative = bytes[n - 1] & 0x80;
    const uint8_t fill = negative ? 0xff : 0x00;
    bool fits = true;
    for (uint64_t i = 8; i < n; ++i) fits &= bytes[i] == fill;
    if (n > 8 && fits) fits = ((bytes[7] & 0x80) != 0) == negative;
    if (!fits) {
      value->kind = Kind::kBigInt;
      value->int_value = static_cast<int64_t>(n);
      return value;
    }
    uint64_t bits = negative ? ~uint64_t{0} : 0;
    for (uint64_t i = 0; i < std::min<uint64_t>(n, 8); ++i) {
      bits &= ~(uint64_t{0xff} << (8 * i));
      bits |= uint64_t{bytes[i]} << (8 * i);
    }
    value->int_value = static_cast<int64_t>(bits);
    return value;
  }

  absl::StatusOr<Value*> MakeText(Kind kind, uint64_t length) {
    ASSIGN_OR_RETURN(const uint8_t* p, Read(length));
    ASSIGN_OR_RETURN(Value * value, New(kind));
    value->text.assign(reinterpret_cast<const char*>(p), length);
    return value;
  }

  // BINPERSID: torch's ('storage', torch.<Type>Storage, key, location, numel).
  absl::StatusOr<Value*> MakeStorage(const Value* pid) {
    if (pid->kind != Kind::kTuple || pid->items.size() != 5 ||
        pid->items[0]->kind != Kind::kString || pid->items[0]->text != "storage") {
      return Error("persistent id is ", Describe(*pid),
                   ", expected ('storage', type, key, location, numel)");
    }
    const Value& type = *pid->items[1];
    const Value& key = *pid->items[2];
    const Value& location = *pid->items[3];
    const Value& numel = *pid->items[4];
    std::optional<TorchDType> dtype = StorageDType(type);
    if (!dtype) return Error("unsupported storage type ", Describe(type));
    if (key.kind != Kind::kString || key.text.empty() ||
        key.text.find_first_of("/\\") != std::string::npos || key.text.size() > 256) {
      return Error("storage key ", Describe(key), " is not a plain name");
    }
    if (location.kind != Kind::kString) return Error("storage location is not a string");
    if (numel.kind != Kind::kInt || numel.int_value < 0) {
      return Error("storage size ", Describe(numel), " is not a non-negative int");
    }
    ASSIGN_OR_RETURN(Value * storage, New(Kind::kStorage));
    storage->storage = std::make_unique<StorageInfo>();
    storage->storage->key = key.text;
    storage->storage->location = location.text;
    storage->storage->dtype = *dtype;
    storage->storage->numel = numel.int_value;
    return storage;
  }

  absl::StatusOr<std::vector<int64_t>> IntTuple(const Value* value, const char* what) {
    if (value->kind != Kind::kTuple || value->items.size() > kMaxTensorDims) {
      return Error("tensor ", what, " is ", Describe(*value), ", expected a tuple of at most ",
                   kMaxTensorDims, " ints");
    }
    std::vector<int64_t> out;
    for (const Value* item : value->items) {
      if (item->kind != Kind::kInt || item->int_value < 0) {
        return Error("tensor ", what, " holds ", Describe(*item), ", expected a non-negative int");
      }
      out.push_back(item->int_value);
    }
    return out;
  }

  // torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, ...)
  // and the older _rebuild_tensor(storage, offset, size, stride).
  absl::StatusOr<Value*> RebuildTensor(const Value* args) {
    if (args->kind != Kind::kTuple || args->items.size() < 4) {
      return Error("tensor rebuild arguments are ", Describe(*args),
                   ", expected (storage, offset, size, stride, ...)");
    }
    const Value* storage = args->items[0];
    const Value* offset = args->items[1];
    if (storage->kind != Kind::kStorage) {
      return Error("tensor rebuild expects a storage, got ", Describe(*storage));
    }
    if (offset->kind != Kind::kInt || offset->int_value < 0) {
      return Error("tensor storage offset ", Describe(*offset), " is not a non-negative int");
    }
    ASSIGN_OR_RETURN(std::vector<int64_t> shape, IntTuple(args->items[2], "size"));
    ASSIGN_OR_RETURN(std::vector<int64_t> stride, IntTuple(args->items[3], "stride"));
    if (shape.size() != stride.size()) {
      return Error("tensor size has ", shape.size(), " dims but stride has ", stride.size());
    }
    ASSIGN_OR_RETURN(Value * tensor, New(Kind::kTensor));
    tensor->tensor = std::make_unique<TensorInfo>();
    tensor->tensor->storage = storage;
    tensor->tensor->storage_offset = offset->int_value;
    tensor->tensor->shape = std::move(shape);
    tensor->tensor->stride = std::move(stride);
    tensor->depth = 1;
    return tensor;
  }

  // The inert meaning of calling `callable` with `args`: a plain value for the few
  // allow-listed callables, else a kObject that records the call and is never run.
  absl::StatusOr<Value*> Call(Value* callable, Value* args) {
    if (callable->kind == Kind::kGlobal) {
      if (callable->IsGlobal("torch._utils", "_rebuild_tensor_v2") ||
          callable->IsGlobal("torch._utils", "_rebuild_tensor")) {
        return RebuildTensor(args);
      }
      if (callable->IsGlobal("torch._utils", "_rebuild_parameter") ||
          callable->IsGlobal("torch._utils", "_rebuild_parameter_with_state")) {
        if (args->kind != Kind::kTuple || args->items.empty() ||
            args->items[0]->kind != Kind::kTensor) {
          return Error(GlobalName(*callable), " expects a tensor first, got ", Describe(*args));
        }
        args->items[0]->tensor->is_parameter = true;
        return args->items[0];
      }
      if (callable->IsGlobal("collections", "OrderedDict") && args->kind == Kind::kTuple &&
          args->items.empty()) {
        return New(Kind::kDict);
      }
      if ((callable->IsGlobal("builtins", "set") || callable->IsGlobal("builtins", "frozenset")) &&
          args->kind == Kind::kTuple && args->items.size() <= 1) {
        if (args->items.empty()) return New(Kind::kSet);
        const Value* items = args->items[0];
        if (items->kind == Kind::kList || items->kind == Kind::kTuple) {
          return MakeSequence(Kind::kSet, items->items);
        }
      }
      if (callable->IsGlobal("_codecs", "encode") && args->kind == Kind::kTuple &&
          args->items.size() == 2 && args->items[0]->kind == Kind::kString &&
          args->items[1]->kind == Kind::kString &&
          (args->items[1]->text == "latin1" || args->items[1]->text == "latin-1")) {
        if (std::optional<std::string> bytes = Utf8ToLatin1(args->items[0]->text)) {
          ASSIGN_OR_RETURN(Value * value, New(Kind::kBytes));
          value->text = std::move(*bytes);
          return value;
        }
      }
    }
    ASSIGN_OR_RETURN(Value * object, New(Kind::kObject));
    object->callable = callable;
    object->args = args;
    RETURN_IF_ERROR(Nest(object, callable));
    RETURN_IF_ERROR(Nest(object, args));
    return object;
  }

  absl::Status Step() {
    switch (op_) {
      case kProto: {
        ASSIGN_OR_RETURN(const uint8_t* p, Read(1));
        if (*p > 5) return Error("pickle protocol ", int{*p}, " is newer than 5");
        return absl::OkStatus();
      }
      case kFrame: {
        ASSIGN_OR_RETURN(uint64_t length, ReadLe<uint64_t>());
        if (length > data_.size() - pos_) {
          return Error("frame of ", length, " bytes but only ", data_.size() - pos_,
                       " remain (truncated, or a corrupt length field)");
        }
        return absl::OkStatus();
      }
      case kStop: {
        ASSIGN_OR_RETURN(Value * root, Pop());
        if (!stack_.empty() || !marks_.empty()) {
          return Error(stack_.size(), " values and ", marks_.size(),
                       " marks left on the stack at STOP");
        }
        pickle_->root_ = root;
        return absl::OkStatus();
      }
      case kMark:
        if (marks_.size() >= limits_.max_stack) return Error("too many MARKs");
        marks_.push_back(stack_.size());
        return absl::OkStatus();
      case kPop:
        if (!marks_.empty() && marks_.back() == stack_.size()) {
          marks_.pop_back();  // as CPython: POP on an empty frame drops the MARK
          return absl::OkStatus();
        }
        return Pop().status();
      case kPopMark: return PopMark().status();
      case kDup: {
        ASSIGN_OR_RETURN(Value * top, Top());
        return Push(top);
      }
      case kNone: {
        ASSIGN_OR_RETURN(Value * value, New(Kind::kNone));
        return Push(value);
      }
      case kNewTrue:
      case kNewFalse: {
        ASSIGN_OR_RETURN(Value * value, New(Kind::kBool));
        value->int_value = op_ == kNewTrue;
        return Push(value);
      }
      case kBinInt: {
        ASSIGN_OR_RETURN(const uint8_t* p, Read(4));
        ASSIGN_OR_RETURN(Value * value, MakeInt(p, 4));
        return Push(value);
      }
      case kBinInt1: {
        ASSIGN_OR_RETURN(const uint8_t* p, Read(1));
        ASSIGN_OR_RETURN(Value * value, New(Kind::kInt));
        value->int_value = *p;
        return Push(value);
      }
      case kBinInt2: {
        ASSIGN_OR_RETURN(uint16_t raw, ReadLe<uint16_t>());
        ASSIGN_OR_RETURN(Value * value, New(Kind::kInt));
        value->int_value = raw;
        return Push(value);
      }
      case kLong1:
      case kLong4: {
        uint64_t n;
        if (op_ == kLong1) {
          ASSIGN_OR_RETURN(uint8_t raw, ReadLe<uint8_t>());
          n = raw;
        } else {
          ASSIGN_OR_RETURN(uint32_t raw, ReadLe<uint32_t>());
          if (raw & 0x80000000u) return Error("negative length ", static_cast<int32_t>(raw));
          n = raw;
        }
        ASSIGN_OR_RETURN(const uint8_t* p, Read(n));
        ASSIGN_OR_RETURN(Value * value, MakeInt(p, n));
        return Push(value);
      }
      case kBinFloat: {
        ASSIGN_OR_RETURN(const uint8_t* p, Read(8));
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];  // big-endian
        ASSIGN_OR_RETURN(Value * value, New(Kind::kFloat));
        std::memcpy(&value->float_value, &bits, 8);
        return Push(value);
      }
      case kShortBinUnicode:
      case kShortBinString:
      case kShortBinBytes: {
        ASSIGN_OR_RETURN(uint8_t length, ReadLe<uint8_t>());
        ASSIGN_OR_RETURN(Value * value,
                         MakeText(op_ == kShortBinBytes ? Kind::kBytes : Kind::kString, length));
        return Push(value);
      }
      case kBinUnicode:
      case kBinString:
      case kBinBytes: {
        ASSIGN_OR_RETURN(uint32_t length, ReadLe<uint32_t>());
        if (op_ == kBinString && (length & 0x80000000u)) {
          return Error("negative length ", static_cast<int32_t>(length));
        }
        ASSIGN_OR_RETURN(Value * value,
                         MakeText(op_ == kBinBytes ? Kind::kBytes : Kind::kString, length));
        return Push(value);
      }
      case kBinUnicode8:
      case kBinBytes8:
      case kByteArray8: {
        ASSIGN_OR_RETURN(uint64_t length, ReadLe<uint64_t>());
        ASSIGN_OR_RETURN(Value * value,
                         MakeText(op_ == kBinUnicode8 ? Kind::kString : Kind::kBytes, length));
        return Push(value);
      }
      case kEmptyTuple:
      case kEmptyList:
      case kEmptyDict:
      case kEmptySet: {
        const Kind kind = op_ == kEmptyTuple  ? Kind::kTuple
                          : op_ == kEmptyList ? Kind::kList
                          : op_ == kEmptyDict ? Kind::kDict
                                              : Kind::kSet;
        ASSIGN_OR_RETURN(Value * value, New(kind));
        return Push(value);
      }
      case kTuple1:
      case kTuple2:
      case kTuple3: {
        const size_t n = op_ - kTuple1 + 1;
        std::vector<Value*> items(n);
        for (size_t i = n; i-- > 0;) {
          ASSIGN_OR_RETURN(items[i], Pop());
        }
        ASSIGN_OR_RETURN(Value * value, MakeSequence(Kind::kTuple, std::move(items)));
        return Push(value);
      }
      case kTuple:
      case kList:
      case kFrozenSet: {
        ASSIGN_OR_RETURN(std::vector<Value*> items, PopMark());
        const Kind kind = op_ == kTuple ? Kind::kTuple : op_ == kList ? Kind::kList : Kind::kSet;
        ASSIGN_OR_RETURN(Value * value, MakeSequence(kind, std::move(items)));
        return Push(value);
      }
      case kDict: {
        ASSIGN_OR_RETURN(std::vector<Value*> items, PopMark());
        ASSIGN_OR_RETURN(Value * value, New(Kind::kDict));
        RETURN_IF_ERROR(SetItems(value, items));
        return Push(value);
      }
      case kAppend: {
        ASSIGN_OR_RETURN(Value * item, Pop());
        ASSIGN_OR_RETURN(Value * target, Top());
        return AppendItems(target, {item});
      }
      case kAppends:
      case kAddItems: {
        ASSIGN_OR_RETURN(std::vector<Value*> items, PopMark());
        ASSIGN_OR_RETURN(Value * target, Top());
        if (op_ == kAddItems && target->kind != Kind::kSet && target->kind != Kind::kObject) {
          return Error("cannot add items to a ", KindName(target->kind));
        }
        return AppendItems(target, items);
      }
      case kSetItem: {
        ASSIGN_OR_RETURN(Value * value, Pop());
        ASSIGN_OR_RETURN(Value * key, Pop());
        ASSIGN_OR_RETURN(Value * target, Top());
        return SetItems(target, {key, value});
      }
      case kSetItems: {
        ASSIGN_OR_RETURN(std::vector<Value*> items, PopMark());
        ASSIGN_OR_RETURN(Value * target, Top());
        return SetItems(target, items);
      }
      case kBinPut: {
        ASSIGN_OR_RETURN(uint8_t index, ReadLe<uint8_t>());
        return Memoize(index);
      }
      case kLongBinPut: {
        ASSIGN_OR_RETURN(uint32_t index, ReadLe<uint32_t>());
        return Memoize(index);
      }
      case kMemoize: return Memoize(memo_.size());
      case kBinGet: {
        ASSIGN_OR_RETURN(uint8_t index, ReadLe<uint8_t>());
        return MemoGet(index);
      }
      case kLongBinGet: {
        ASSIGN_OR_RETURN(uint32_t index, ReadLe<uint32_t>());
        return MemoGet(index);
      }
      case kGlobal: {
        ASSIGN_OR_RETURN(std::string module, ReadLine());
        ASSIGN_OR_RETURN(std::string name, ReadLine());
        ASSIGN_OR_RETURN(Value * global, MakeGlobal(std::move(module), std::move(name)));
        return Push(global);
      }
      case kStackGlobal: {
        ASSIGN_OR_RETURN(Value * name, Pop());
        ASSIGN_OR_RETURN(Value * module, Pop());
        if (name->kind != Kind::kString || module->kind != Kind::kString) {
          return Error("module and name must be strings, got ", Describe(*module), " and ",
                       Describe(*name));
        }
        ASSIGN_OR_RETURN(Value * global, MakeGlobal(module->text, name->text));
        return Push(global);
      }
      case kReduce: {
        ASSIGN_OR_RETURN(Value * args, Pop());
        ASSIGN_OR_RETURN(Value * callable, Pop());
        ASSIGN_OR_RETURN(Value * result, Call(callable, args));
        return Push(result);
      }
      case kNewObj: {
        ASSIGN_OR_RETURN(Value * args, Pop());
        ASSIGN_OR_RETURN(Value * cls, Pop());
        ASSIGN_OR_RETURN(Value * result, Call(cls, args));
        return Push(result);
      }
      case kNewObjEx: {
        ASSIGN_OR_RETURN(Value * kwargs, Pop());
        ASSIGN_OR_RETURN(Value * args, Pop());
        ASSIGN_OR_RETURN(Value * cls, Pop());
        ASSIGN_OR_RETURN(Value * result, Call(cls, args));
        if (result->kind == Kind::kObject) {
          result->state = kwargs;  // kept for inspection only
          RETURN_IF_ERROR(Nest(result, kwargs));
        }
        return Push(result);
      }
      case kObj: {
        ASSIGN_OR_RETURN(std::vector<Value*> items, PopMark());
        if (items.empty()) return Error("OBJ needs a class after the MARK");
        Value* cls = items.front();
        items.erase(items.begin());
        ASSIGN_OR_RETURN(Value * args, MakeSequence(Kind::kTuple, std::move(items)));
        ASSIGN_OR_RETURN(Value * result, Call(cls, args));
        return Push(result);
      }
      case kBuild: {
        ASSIGN_OR_RETURN(Value * state, Pop());
        ASSIGN_OR_RETURN(Value * target, Top());
        target->state = state;
        return Nest(target, state);
      }
      case kBinPersId: {
        ASSIGN_OR_RETURN(Value * pid, Pop());
        ASSIGN_OR_RETURN(Value * storage, MakeStorage(pid));
        return Push(storage);
      }
      case kExt1:
      case kExt2:
      case kExt4: return Error("the copyreg extension registry is not supported");
      case kNextBuffer:
      case kReadonlyBuffer: return Error("out-of-band buffers are not supported");
      case kInt:
      case kLong:
      case kFloat:
      case kString:
      case kUnicode:
      case kGet:
      case kPut:
      case kPersId:
      case kInst:
        return Error("protocol 0 text opcodes are not supported; torch.save writes protocol 2");
      default: return Error("unknown opcode (not a pickle, or corrupted)");
    }
  }

  absl::Span<const uint8_t> data_;
  std::string label_;
  UnpicklerLimits limits_;
  std::unique_ptr<Pickle> pickle_;
  size_t pos_ = 0;
  size_t op_offset_ = 0;
  uint8_t op_ = 0;
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  absl::flat_hash_map<uint64_t, Value*> memo_;
  absl::flat_hash_set<std::string> globals_seen_;
  uint64_t elements_ = 0;
};

absl::StatusOr<std::unique_ptr<Pickle>> Unpickle(absl::Span<const uint8_t> data,
                                                 absl::string_view label,
                                                 const UnpicklerLimits& limits) {
  Unpickler unpickler(data, label, limits);
  return unpickler.Run();
}

}  // namespace seqboat::convert
