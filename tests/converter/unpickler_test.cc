// The restricted unpickler opcode by opcode, its inert handling of callables, and its limits.
#include "converter/unpickler.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace seqboat::convert {
namespace {

// Writes pickle opcodes byte by byte.
class Bytes {
 public:
  Bytes& Op(uint8_t op) { return U8(op); }
  Bytes& U8(uint8_t v) {
    data_.push_back(v);
    return *this;
  }
  Bytes& Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) data_.push_back(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
  Bytes& Raw(const std::string& s) {
    data_.insert(data_.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& Proto(int version = 2) { return Op(0x80).U8(static_cast<uint8_t>(version)); }
  Bytes& Str(const std::string& s) { return Op('X').Le(s.size(), 4).Raw(s); }
  Bytes& Int(int32_t v) { return Op('J').Le(static_cast<uint32_t>(v), 4); }
  Bytes& Global(const std::string& module, const std::string& name) {
    return Op('c').Raw(module + "\n" + name + "\n");
  }
  Bytes& Stop() { return Op('.'); }
  const std::vector<uint8_t>& data() const { return data_; }

 private:
  std::vector<uint8_t> data_;
};

absl::StatusOr<std::unique_ptr<Pickle>> Load(const Bytes& bytes,
                                             const UnpicklerLimits& limits = {}) {
  return Unpickle(bytes.data(), "test.pkl", limits);
}

// Unpickles and expects an error whose message holds every `parts`.
void ExpectError(const Bytes& bytes, std::initializer_list<const char*> parts,
                 const UnpicklerLimits& limits = {}) {
  auto pickle = Load(bytes, limits);
  ASSERT_FALSE(pickle.ok()) << "unpickled " << Describe((*pickle)->root());
  for (const char* part : parts) {
    EXPECT_TRUE(absl::StrContains(pickle.status().message(), part))
        << "\"" << part << "\" not in: " << pickle.status().message();
  }
  EXPECT_TRUE(absl::StrContains(pickle.status().message(), "test.pkl"));
}

TEST(Unpickler, Scalars) {
  Bytes b;
  b.Proto()
      .Op('(')
      .Op('N')
      .Op(0x88)
      .Op(0x89)
      .Int(-5)
      .Op('K')
      .U8(200)
      .Op('M')
      .Le(65000, 2)
      .Op(0x8a)
      .U8(9)
      .Le(0, 8)
      .U8(1)  // LONG1: 2^64, wider than int64
      .Op(0x8a)
      .U8(2)
      .Le(0xff7f, 2)  // LONG1: -129
      .Op(0x8a)
      .U8(0)  // LONG1: 0
      .Op(0x8b)
      .Le(8, 4)
      .Le(0x8000000000000000ull, 8)  // LONG4: INT64_MIN
      .Op('G')
      .Raw(std::string("\x3f\xf8\0\0\0\0\0\0", 8))  // BINFLOAT 1.5, big-endian
      .Op('t')
      .Stop();
  auto pickle = Load(b);
  ASSERT_TRUE(pickle.ok()) << pickle.status();
  const Value& t = (*pickle)->root();
  ASSERT_EQ(t.kind, Kind::kTuple);
  ASSERT_EQ(t.items.size(), 11u);
  EXPECT_EQ(t.items[0]->kind, Kind::kNone);
  EXPECT_EQ(t.items[1]->int_value, 1);
  EXPECT_EQ(t.items[2]->kind, Kind::kBool);
  EXPECT_EQ(t.items[3]->int_value, -5);
  EXPECT_EQ(t.items[4]->int_value, 200);
  EXPECT_EQ(t.items[5]->int_value, 65000);
  EXPECT_EQ(t.items[6]->kind, Kind::kBigInt);
  EXPECT_EQ(t.items[7]->int_value, -129);
  EXPECT_EQ(t.items[8]->int_value, 0);
  EXPECT_EQ(t.items[9]->int_value, INT64_MIN);
  EXPECT_EQ(t.items[10]->float_value, 1.5);
}

TEST(Unpickler, TextAndBytes) {
  Bytes b;
  b.Proto(4)
      .Op(0x95)
      .Le(0, 8)
      .Op('(')  // FRAME of length 0 is fine
      .Op(0x8c)
      .U8(2)
      .Raw("hi")           // SHORT_BINUNICODE
      .Str("caf\xc3\xa9")  // BINUNICODE
      .Op(0x8d)
      .Le(3, 8)
      .Raw("abc")  // BINUNICODE8
      .Op('U')
      .U8(1)
      .Raw("s")  // SHORT_BINSTRING
      .Op('T')
      .Le(2, 4)
      .Raw("st")  // BINSTRING
      .Op('C')
      .U8(2)
      .Raw(std::string("\0\xff", 2))  // SHORT_BINBYTES
      .Op('B')
      .Le(1, 4)
      .Raw("b")  // BINBYTES
      .Op(0x8e)
      .Le(1, 8)
      .Raw("c")  // BINBYTES8
      .Op(0x96)
      .Le(1, 8)
      .Raw("d")  // BYTEARRAY8
      .Op('l')
      .Stop();
  auto pickle = Load(b);
  ASSERT_TRUE(pickle.ok()) << pickle.status();
  const Value& list = (*pickle)->root();
  ASSERT_EQ(list.kind, Kind::kList);
  ASSERT_EQ(list.items.size(), 9u);
  EXPECT_EQ(list.items[0]->text, "hi");
  EXPECT_EQ(list.items[1]->text, "caf\xc3\xa9");
  EXPECT_EQ(list.items[2]->text, "abc");
  EXPECT_EQ(list.items[3]->kind, Kind::kString);
  EXPECT_EQ(list.items[5]->kind, Kind::kBytes);
  EXPECT_EQ(list.items[5]->text, std::string("\0\xff", 2));
  EXPECT_EQ(list.items[8]->kind, Kind::kBytes);
}

TEST(Unpickler, ContainersMemoAndStackOps) {
  Bytes b;
  b.Proto()
      .Op('}')
      .Op('q')
      .U8(0)  // EMPTY_DICT, BINPUT 0
      .Op('(')
      .Str("a")
      .Op(']')
      .Op('r')
      .Le(70000, 4)  // LONG_BINPUT 70000
      .Int(1)
      .Op('a')
      .Int(2)
      .Op('a')  // [1, 2]
      .Str("b")
      .Op(')')
      .Op(0x94)  // () MEMOIZE -> memo 2? (size-based)
      .Str("c")
      .Op('j')
      .Le(70000, 4)  // LONG_BINGET: the list again
      .Op('u')       // SETITEMS
      .Str("d")
      .Int(4)
      .Int(5)
      .Op(0x86)
      .Op('s')  // SETITEM d -> (4, 5)
      .Str("e")
      .Op(0x8f)
      .Op('(')
      .Int(1)
      .Int(2)
      .Op(0x90)
      .Op('s')  // EMPTY_SET, ADDITEMS
      .Str("f")
      .Op('(')
      .Int(3)
      .Op(0x91)
      .Op('s')  // FROZENSET
      .Str("g")
      .Op('(')
      .Int(9)
      .Op('2')
      .Op('e')
      .Op('s')  // hmm: APPENDS needs a list
      .Stop();
  // The last line appends to a dict on purpose: an error naming the opcode.
  auto bad = Load(b);
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "APPENDS")) << bad.status();

  Bytes good;
  good.Proto()
      .Op('}')
      .Op('q')
      .U8(0)
      .Op('(')
      .Str("a")
      .Op(']')
      .Op('r')
      .Le(70000, 4)
      .Int(1)
      .Op('a')
      .Int(2)
      .Op('a')
      .Str("c")
      .Op('j')
      .Le(70000, 4)
      .Op('u')
      .Str("d")
      .Int(4)
      .Int(5)
      .Op(0x86)
      .Op('s')
      .Str("e")
      .Op(0x8f)
      .Op('(')
      .Int(1)
      .Int(2)
      .Op(0x90)
      .Op('s')
      .Str("f")
      .Op('(')
      .Int(3)
      .Op(0x91)
      .Op('s')
      .Str("g")
      .Op(']')
      .Op('(')
      .Int(7)
      .Op('2')
      .Op('e')
      .Op('s')  // APPENDS with DUP: [7, 7]
      .Str("h")
      .Op('(')
      .Int(1)
      .Op('0')
      .Op('(')
      .Op('1')
      .Op('l')
      .Op('s')  // POP, POP_MARK -> []
      .Str("i")
      .Op('h')
      .U8(0)
      .Op('s')  // the dict inside itself
      .Stop();
  auto pickle = Load(good);
  ASSERT_TRUE(pickle.ok()) << pickle.status();
  const Value& d = (*pickle)->root();
  ASSERT_EQ(d.kind, Kind::kDict);
  EXPECT_EQ(d.DictSize(), 8u);
  const Value* a = d.DictGet("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a, d.DictGet("c"));  // shared through the memo
  ASSERT_EQ(a->items.size(), 2u);
  EXPECT_EQ(a->items[1]->int_value, 2);
  EXPECT_EQ(d.DictGet("d")->kind, Kind::kTuple);
  EXPECT_EQ(d.DictGet("e")->kind, Kind::kSet);
  EXPECT_EQ(d.DictGet("e")->items.size(), 2u);
  EXPECT_EQ(d.DictGet("f")->kind, Kind::kSet);
  EXPECT_EQ(d.DictGet("g")->items.size(), 2u);
  EXPECT_EQ(d.DictGet("h")->items.size(), 0u);
  EXPECT_EQ(d.DictGet("i"), &d);  // a cycle is fine: values are never walked recursively
  EXPECT_EQ(d.DictGet("missing"), nullptr);
}

TEST(Unpickler, CallablesAreRecordedNeverRun) {
  // os.system("...") via GLOBAL + REDUCE, builtins.eval via STACK_GLOBAL + REDUCE, a class via
  // NEWOBJ + BUILD, NEWOBJ_EX, OBJ: all become inert objects.
  Bytes b;
  b.Proto(4)
      .Op('(')
      .Global("os", "system")
      .Str("touch /tmp/seqboat_never")
      .Op(0x85)
      .Op('R')
      .Op(0x8c)
      .U8(8)
      .Raw("builtins")
      .Op(0x8c)
      .U8(4)
      .Raw("eval")
      .Op(0x93)
      .Str("1+1")
      .Op(0x85)
      .Op('R')
      .Global("__main__", "Meter")
      .Op(')')
      .Op(0x81)
      .Op('}')
      .Str("val")
      .Int(3)
      .Op('s')
      .Op('b')
      .Global("x", "Y")
      .Op(')')
      .Op('}')
      .Op(0x92)
      .Op('(')
      .Global("x", "Z")
      .Int(1)
      .Op('o')
      .Op('l')
      .Stop();
  auto pickle = Load(b);
  ASSERT_TRUE(pickle.ok()) << pickle.status();
  const Value& list = (*pickle)->root();
  ASSERT_EQ(list.items.size(), 5u);
  EXPECT_EQ(list.items[0]->kind, Kind::kObject);
  EXPECT_EQ(list.items[0]->CallableName(), "os.system");
  EXPECT_EQ(list.items[0]->args->items[0]->text, "touch /tmp/seqboat_never");
  EXPECT_EQ(list.items[1]->CallableName(), "builtins.eval");
  EXPECT_EQ(list.items[2]->CallableName(), "__main__.Meter");
  ASSERT_NE(list.items[2]->state, nullptr);
  EXPECT_EQ(list.items[2]->state->DictGet("val")->int_value, 3);
  EXPECT_EQ(list.items[3]->CallableName(), "x.Y");
  EXPECT_EQ(list.items[4]->CallableName(), "x.Z");
  EXPECT_EQ(list.items[4]->args->items.size(), 1u);
  const auto& globals = (*pickle)->globals();
  EXPECT_EQ(globals, (std::vector<std::string>{"os.system", "builtins.eval", "__main__.Meter",
                                               "x.Y", "x.Z"}));
}

TEST(Unpickler, Protocol2BuiltinNamesAreNormalised) {
  Bytes b;
  b.Proto().Global("__builtin__", "set").Op(']').Int(1).Op('a').Op(0x85).Op('R').Stop();
  auto pickle = Load(b);
  ASSERT_TRUE(pickle.ok()) << pickle.status();
  EXPECT_EQ((*pickle)->root().kind, Kind::kSet);
  EXPECT_EQ((*pickle)->globals().front(), "builtins.set");
}

TEST(Unpickler, OrderedDictAndCodecsBytes) {
  Bytes b;
  b.Proto()
      .Op('(')
      .Global("collections", "OrderedDict")
      .Op(')')
      .Op('R')
      .Str("k")
      .Int(1)
      .Op('s')
      .Op('}')
      .Str("_metadata")
      .Op('N')
      .Op('s')
      .Op('b')  // BUILD state on an OrderedDict
      .Global("_codecs", "encode")
      .Str("\xc3\xbf\x01")
      .Str("latin1")
      .Op(0x86)
      .Op('R')
      .Op('t')
      .Stop();
  auto pickle = Load(b);
  ASSERT_TRUE(pickle.ok()) << pickle.status();
  const Value& t = (*pickle)->root();
  EXPECT_EQ(t.items[0]->kind, Kind::kDict);
  EXPECT_EQ(t.items[0]->DictGet("k")->int_value, 1);
  EXPECT_EQ(t.items[1]->kind, Kind::kBytes);
  EXPECT_EQ(t.items[1]->text, std::string("\xff\x01", 2));
}

// ('storage', torch.FloatStorage, '0', 'cpu', numel) as torch writes it.
Bytes& Storage(Bytes& b, const std::string& type, const std::string& key, int numel) {
  return b.Op('(')
      .Str("storage")
      .Global("torch", type)
      .Str(key)
      .Str("cpu")
      .Int(numel)
      .Op('t')
      .Op('Q');
}

TEST(Unpickler, TensorsAndParameters) {
  Bytes b;
  b.Proto().Op('(');
  b.Global("torch._utils", "_rebuild_tensor_v2").Op('(');
  Storage(b, "HalfStorage", "7", 20);
  b.Int(2)
      .Int(3)
      .Int(4)
      .Op(0x86)
      .Int(1)
      .Int(3)
      .Op(0x86)
      .Op(0x89)
      .Global("collections", "OrderedDict")
      .Op(')')
      .Op('R')
      .Op('t')
      .Op('R');
  b.Global("torch._utils", "_rebuild_parameter")
      .Global("torch._utils", "_rebuild_tensor_v2")
      .Op('(');
  Storage(b, "BFloat16Storage", "8", 1);
  b.Int(0).Op(')').Op(')').Op(0x89).Op('N').Op('t').Op('R').Op(0x88).Op('N').Op(0x87).Op('R');
  b.Op('l').Stop();
  auto pickle = Load(b);
  ASSERT_TRUE(pickle.ok()) << pickle.status();
  const Value& list = (*pickle)->root();
  ASSERT_EQ(list.items.size(), 2u);
  ASSERT_EQ(list.items[0]->kind, Kind::kTensor);
  const TensorInfo& t = *list.items[0]->tensor;
  EXPECT_EQ(t.storage_offset, 2);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(t.stride, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(t.storage_info().dtype, TorchDType::kFloat16);
  EXPECT_EQ(t.storage_info().key, "7");
  EXPECT_EQ(t.storage_info().numel, 20);
  EXPECT_FALSE(t.is_parameter);
  ASSERT_EQ(list.items[1]->kind, Kind::kTensor);
  EXPECT_TRUE(list.items[1]->tensor->is_parameter);
  EXPECT_TRUE(list.items[1]->tensor->shape.empty());  // a scalar
  EXPECT_EQ(Describe(*list.items[0]), "tensor float16 [3, 4]");
}

TEST(Unpickler, BadTensorArgumentsAreNamed) {
  {
    Bytes b;
    b.Proto()
        .Global("torch._utils", "_rebuild_tensor_v2")
        .Op('(')
        .Int(1)
        .Int(0)
        .Op(')')
        .Op(')')
        .Op('t')
        .Op('R')
        .Stop();
    ExpectError(b, {"REDUCE", "expects a storage"});
  }
  {
    Bytes b;
    b.Proto().Global("torch._utils", "_rebuild_tensor_v2").Op('(');
    Storage(b, "FloatStorage", "0", 4);
    b.Int(0).Int(-2).Op(0x85).Int(1).Op(0x85).Op('t').Op('R').Stop();
    ExpectError(b, {"size", "non-negative"});
  }
  {
    Bytes b;
    b.Proto().Global("torch._utils", "_rebuild_tensor_v2").Op('(');
    Storage(b, "FloatStorage", "0", 4);
    b.Int(0).Int(2).Op(0x85).Op(')').Op('t').Op('R').Stop();
    ExpectError(b, {"1 dims but stride has 0"});
  }
  {
    Bytes b;
    b.Proto();
    Storage(b, "QInt8Storage", "0", 4);
    b.Stop();
    ExpectError(b, {"BINPERSID", "unsupported storage type"});
  }
  {
    Bytes b;
    b.Proto();
    Storage(b, "FloatStorage", "../../etc/passwd", 4);
    b.Stop();
    ExpectError(b, {"not a plain name"});
  }
  {
    Bytes b;
    b.Proto().Str("not a tuple").Op('Q').Stop();
    ExpectError(b, {"persistent id"});
  }
}

TEST(Unpickler, StructuralErrors) {
  ExpectError(Bytes().Proto().Op('a').Stop(), {"APPEND", "stack underflow"});
  ExpectError(Bytes().Proto().Op('t').Stop(), {"TUPLE", "no MARK"});
  ExpectError(Bytes().Proto().Op('0').Stop(), {"POP", "stack underflow"});
  ExpectError(Bytes().Proto().Op('(').Op('.'), {"STOP"});
  ExpectError(Bytes().Proto().Int(1).Int(2).Stop(), {"STOP", "1 values"});
  ExpectError(Bytes().Proto().Int(1), {"without a STOP"});
  ExpectError(Bytes().Proto(6).Stop(), {"PROTO", "protocol 6"});
  ExpectError(Bytes().Proto().Op(0xff).Stop(), {"0xff", "unknown opcode"});
  ExpectError(Bytes().Proto().Op('I').Raw("1\n").Stop(), {"INT", "protocol 0"});
  ExpectError(Bytes().Proto().Op(0x82).U8(1).Stop(), {"EXT1", "extension registry"});
  ExpectError(Bytes().Proto(5).Op(0x97).Stop(), {"NEXT_BUFFER"});
  ExpectError(Bytes().Proto().Int(1).Op(0x85).Int(2).Op('a').Stop(), {"cannot append to a tuple"});
  ExpectError(Bytes().Proto().Op(']').Int(1).Int(2).Op('s').Stop(), {"cannot set items on a list"});
  ExpectError(Bytes().Proto().Op('c').Raw("no newline").Stop(), {"GLOBAL", "newline"});
  ExpectError(Bytes().Proto(4).Int(1).Str("x").Op(0x93).Stop(), {"STACK_GLOBAL", "strings"});
  ExpectError(Bytes().Proto().Op('}').Op('(').Int(1).Op('u').Stop(), {"SETITEMS", "odd"});
}

TEST(Unpickler, MemoIndexOutOfRange) {
  ExpectError(Bytes().Proto().Op('}').Op('q').U8(0).Op('h').U8(99).Stop(),
              {"offset 5", "BINGET", "memo index 99 is out of range"});
  ExpectError(Bytes().Proto().Op('j').Le(0xffffffffu, 4).Stop(), {"LONG_BINGET", "4294967295"});
  ExpectError(Bytes().Proto().Op('q').U8(0).Stop(), {"BINPUT", "stack underflow"});
}

TEST(Unpickler, LengthFieldsBeyondTheInput) {
  const uint64_t huge = uint64_t{1} << 62;
  ExpectError(Bytes().Proto(4).Op(0x8d).Le(huge, 8).Raw("abc").Stop(),
              {"BINUNICODE8", "4611686018427387904", "remain"});
  ExpectError(Bytes().Proto(4).Op(0x8e).Le(huge, 8).Stop(), {"BINBYTES8"});
  ExpectError(Bytes().Proto(5).Op(0x96).Le(huge, 8).Stop(), {"BYTEARRAY8"});
  ExpectError(Bytes().Proto(4).Op(0x95).Le(huge, 8).Stop(), {"FRAME"});
  ExpectError(Bytes().Proto().Op('X').Le(0xffffffffu, 4).Stop(), {"BINUNICODE"});
  ExpectError(Bytes().Proto().Op('B').Le(0xfffffff0u, 4).Stop(), {"BINBYTES"});
  ExpectError(Bytes().Proto().Op('T').Le(0x80000000u, 4).Stop(), {"BINSTRING", "negative"});
  ExpectError(Bytes().Proto().Op(0x8b).Le(0x80000000u, 4).Stop(), {"LONG4", "negative"});
  ExpectError(Bytes().Proto().Op(0x8b).Le(0x7fffffffu, 4).Stop(), {"LONG4", "remain"});
  ExpectError(Bytes().Proto().Op('J').U8(1), {"BININT", "needs 4 bytes"});
}

TEST(Unpickler, DeepNestingIsRefused) {
  // [[[...]]] 10,000 deep (lists, APPEND) and (((...))) 10,000 deep (MARK ... TUPLE).
  Bytes lists;
  lists.Proto();
  for (int i = 0; i < 10000; ++i) lists.Op(']');
  for (int i = 0; i < 9999; ++i) lists.Op('a');
  lists.Stop();
  ExpectError(lists, {"APPEND", "nested deeper than 1000 levels"});

  Bytes tuples;
  tuples.Proto();
  for (int i = 0; i < 10000; ++i) tuples.Op('(');
  for (int i = 0; i < 10000; ++i) tuples.Op('t');
  tuples.Stop();
  ExpectError(tuples, {"TUPLE", "nested deeper"});

  // BUILD and REDUCE chains nest too.
  Bytes objects;
  objects.Proto();
  for (int i = 0; i < 2000; ++i) objects.Global("m", "f");
  objects.Op('N');
  for (int i = 0; i < 2000; ++i) objects.Op(0x85).Op('R');  // f(f(...f(None)))
  objects.Stop();
  ExpectError(objects, {"nested deeper"});

  // 999 levels are fine.
  Bytes ok;
  ok.Proto();
  for (int i = 0; i < 1000; ++i) ok.Op(']');
  for (int i = 0; i < 999; ++i) ok.Op('a');
  ok.Stop();
  EXPECT_TRUE(Load(ok).ok());
}

TEST(Unpickler, Limits) {
  UnpicklerLimits limits;
  limits.max_values = 100;
  Bytes many;
  many.Proto().Op('(');
  for (int i = 0; i < 200; ++i) many.Op('N');
  many.Op('l').Stop();
  ExpectError(many, {"more than 100 values"}, limits);

  limits = {};
  limits.max_memo = 10;
  Bytes memo;
  memo.Proto().Op('N');
  for (int i = 0; i < 20; ++i) memo.Op('q').U8(static_cast<uint8_t>(i));
  memo.Stop();
  ExpectError(memo, {"BINPUT", "limit of 10"}, limits);
  ExpectError(Bytes().Proto().Op('N').Op('r').Le(11, 4).Stop(), {"exceeds the limit"}, limits);

  // DUP + APPENDS multiply one value for one input byte each: the element limit stops it.
  limits = {};
  limits.max_elements = 1000;
  Bytes flood;
  flood.Proto().Op(']').Op('(').Op('N');
  for (int i = 0; i < 2000; ++i) flood.Op('2');
  flood.Op('e').Stop();
  ExpectError(flood, {"elements: limit reached"}, limits);

  limits = {};
  limits.max_stack = 50;
  Bytes stack;
  stack.Proto();
  for (int i = 0; i < 60; ++i) stack.Op('N');
  stack.Stop();
  ExpectError(stack, {"stack holds more than 50"}, limits);
}

TEST(Unpickler, EveryPrefixOfAValidPickleFailsCleanly) {
  Bytes b;
  b.Proto(4)
      .Op(0x95)
      .Le(0, 8)
      .Op('}')
      .Op(0x94)
      .Op('(')
      .Str("key")
      .Op(0x94)
      .Global("collections", "OrderedDict")
      .Op(')')
      .Op('R')
      .Op(0x94)
      .Str("k2")
      .Op(0x8a)
      .U8(3)
      .Le(0x123456, 3)
      .Op('s')
      .Op('u')
      .Stop();
  ASSERT_TRUE(Load(b).ok());
  for (size_t n = 0; n + 1 < b.data().size(); ++n) {
    auto pickle = Unpickle(absl::MakeConstSpan(b.data().data(), n), "cut.pkl");
    EXPECT_FALSE(pickle.ok()) << "prefix of " << n << " bytes";
  }
}

}  // namespace
}  // namespace seqboat::convert
