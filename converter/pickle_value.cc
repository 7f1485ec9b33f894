// Names and descriptions of unpickled values.
#include "converter/pickle_value.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace seqboat::convert {

size_t TorchDTypeSize(TorchDType dtype) {
  switch (dtype) {
    case TorchDType::kFloat64:
    case TorchDType::kInt64:
    case TorchDType::kComplex64: return 8;
    case TorchDType::kComplex128: return 16;
    case TorchDType::kFloat32:
    case TorchDType::kInt32: return 4;
    case TorchDType::kFloat16:
    case TorchDType::kBFloat16:
    case TorchDType::kInt16: return 2;
    case TorchDType::kInt8:
    case TorchDType::kUInt8:
    case TorchDType::kBool: return 1;
  }
  return 1;
}

const char* TorchDTypeName(TorchDType dtype) {
  switch (dtype) {
    case TorchDType::kFloat32: return "float32";
    case TorchDType::kFloat16: return "float16";
    case TorchDType::kBFloat16: return "bfloat16";
    case TorchDType::kFloat64: return "float64";
    case TorchDType::kInt64: return "int64";
    case TorchDType::kInt32: return "int32";
    case TorchDType::kInt16: return "int16";
    case TorchDType::kInt8: return "int8";
    case TorchDType::kUInt8: return "uint8";
    case TorchDType::kBool: return "bool";
    case TorchDType::kComplex64: return "complex64";
    case TorchDType::kComplex128: return "complex128";
  }
  return "?";
}

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kNone: return "None";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kBigInt: return "int (wider than 64 bits)";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kBytes: return "bytes";
    case Kind::kTuple: return "tuple";
    case Kind::kList: return "list";
    case Kind::kDict: return "dict";
    case Kind::kSet: return "set";
    case Kind::kGlobal: return "global";
    case Kind::kObject: return "object";
    case Kind::kStorage: return "storage";
    case Kind::kTensor: return "tensor";
  }
  return "?";
}

const StorageInfo& TensorInfo::storage_info() const { return *storage->storage; }

std::string GlobalName(const Value& global) { return absl::StrCat(global.text, ".", global.name); }

std::string Value::CallableName() const {
  if (callable == nullptr) return "?";
  if (callable->kind == Kind::kGlobal) return GlobalName(*callable);
  return KindName(callable->kind);
}

const Value* Value::DictGet(absl::string_view key) const {
  if (kind != Kind::kDict) return nullptr;
  // Later entries win, as in a Python dict built by repeated SETITEM.
  for (size_t i = items.size(); i >= 2; i -= 2) {
    const Value* k = items[i - 2];
    if (k->kind == Kind::kString && k->text == key) return items[i - 1];
  }
  return nullptr;
}

namespace {

std::string Quote(absl::string_view text) {
  constexpr size_t kMax = 60;
  std::string out = "'";
  for (size_t i = 0; i < text.size() && i < kMax; ++i) {
    const unsigned char c = text[i];
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      out += absl::StrFormat("\\x%02x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > kMax)
    absl::StrAppend(&out, "...' (", text.size(), " bytes)");
  else
    out += "'";
  return out;
}

}  // namespace

std::string Describe(const Value& value) {
  switch (value.kind) {
    case Kind::kNone: return "None";
    case Kind::kBool: return value.int_value ? "True" : "False";
    case Kind::kInt: return absl::StrCat(value.int_value);
    case Kind::kBigInt: return absl::StrCat("<int of ", value.int_value, " bytes>");
    case Kind::kFloat: {
      // The shortest of %.15g/%.16g/%.17g that reads back exactly, like Python's repr.
      for (int digits = 15; digits < 17; ++digits) {
        std::string text = absl::StrFormat("%.*g", digits, value.float_value);
        if (std::strtod(text.c_str(), nullptr) == value.float_value) return text;
      }
      return absl::StrFormat("%.17g", value.float_value);
    }
    case Kind::kString: return Quote(value.text);
    case Kind::kBytes: return absl::StrCat("b", Quote(value.text));
    case Kind::kTuple:
    case Kind::kList:
    case Kind::kSet: {
      // Short sequences of scalars print in full (they are common in args: betas, lr...).
      constexpr size_t kMaxShown = 8;
      const bool tuple = value.kind == Kind::kTuple;
      std::string out = tuple ? "(" : (value.kind == Kind::kList ? "[" : "{");
      bool scalar_only = value.items.size() <= kMaxShown;
      for (const Value* item : value.items) {
        if (item->kind >= Kind::kTuple) scalar_only = false;
      }
      if (!scalar_only) {
        return absl::StrCat(KindName(value.kind), " of ", value.items.size(), " items");
      }
      for (size_t i = 0; i < value.items.size(); ++i) {
        if (i > 0) out += ", ";
        out += Describe(*value.items[i]);
      }
      if (tuple && value.items.size() == 1) out += ",";
      out += tuple ? ")" : (value.kind == Kind::kList ? "]" : "}");
      return out;
    }
    case Kind::kDict: return absl::StrCat("dict of ", value.DictSize(), " items");
    case Kind::kGlobal: return absl::StrCat("global ", GlobalName(value));
    case Kind::kObject: return absl::StrCat("object ", value.CallableName(), "(...)");
    case Kind::kStorage:
      return absl::StrCat("storage ", value.storage->key, " (",
                          TorchDTypeName(value.storage->dtype), ", ", value.storage->numel,
                          " elements)");
    case Kind::kTensor: {
      const TensorInfo& t = *value.tensor;
      return absl::StrCat("tensor ", TorchDTypeName(t.storage_info().dtype), " [",
                          absl::StrJoin(t.shape, ", "), "]");
    }
  }
  return "?";
}

}  // namespace seqboat::convert
