// The pickle opcodes (protocols 0-5) with CPython's names (Lib/pickle.py), as one X-macro
// list: X(identifier, byte, name).
#pragma once

#include <cstdint>

namespace seqboat::convert::pickle_op {

#define SEQBOAT_PICKLE_OPCODES(X)               \
  X(kMark, '(', "MARK")                         \
  X(kStop, '.', "STOP")                         \
  X(kPop, '0', "POP")                           \
  X(kPopMark, '1', "POP_MARK")                  \
  X(kDup, '2', "DUP")                           \
  X(kFloat, 'F', "FLOAT")                       \
  X(kInt, 'I', "INT")                           \
  X(kBinInt, 'J', "BININT")                     \
  X(kBinInt1, 'K', "BININT1")                   \
  X(kLong, 'L', "LONG")                         \
  X(kBinInt2, 'M', "BININT2")                   \
  X(kNone, 'N', "NONE")                         \
  X(kPersId, 'P', "PERSID")                     \
  X(kBinPersId, 'Q', "BINPERSID")               \
  X(kReduce, 'R', "REDUCE")                     \
  X(kString, 'S', "STRING")                     \
  X(kBinString, 'T', "BINSTRING")               \
  X(kShortBinString, 'U', "SHORT_BINSTRING")    \
  X(kUnicode, 'V', "UNICODE")                   \
  X(kBinUnicode, 'X', "BINUNICODE")             \
  X(kAppend, 'a', "APPEND")                     \
  X(kBuild, 'b', "BUILD")                       \
  X(kGlobal, 'c', "GLOBAL")                     \
  X(kDict, 'd', "DICT")                         \
  X(kEmptyDict, '}', "EMPTY_DICT")              \
  X(kAppends, 'e', "APPENDS")                   \
  X(kGet, 'g', "GET")                           \
  X(kBinGet, 'h', "BINGET")                     \
  X(kInst, 'i', "INST")                         \
  X(kLongBinGet, 'j', "LONG_BINGET")            \
  X(kList, 'l', "LIST")                         \
  X(kEmptyList, ']', "EMPTY_LIST")              \
  X(kObj, 'o', "OBJ")                           \
  X(kPut, 'p', "PUT")                           \
  X(kBinPut, 'q', "BINPUT")                     \
  X(kLongBinPut, 'r', "LONG_BINPUT")            \
  X(kSetItem, 's', "SETITEM")                   \
  X(kTuple, 't', "TUPLE")                       \
  X(kEmptyTuple, ')', "EMPTY_TUPLE")            \
  X(kSetItems, 'u', "SETITEMS")                 \
  X(kBinFloat, 'G', "BINFLOAT")                 \
  X(kProto, 0x80, "PROTO")                      \
  X(kNewObj, 0x81, "NEWOBJ")                    \
  X(kExt1, 0x82, "EXT1")                        \
  X(kExt2, 0x83, "EXT2")                        \
  X(kExt4, 0x84, "EXT4")                        \
  X(kTuple1, 0x85, "TUPLE1")                    \
  X(kTuple2, 0x86, "TUPLE2")                    \
  X(kTuple3, 0x87, "TUPLE3")                    \
  X(kNewTrue, 0x88, "NEWTRUE")                  \
  X(kNewFalse, 0x89, "NEWFALSE")                \
  X(kLong1, 0x8a, "LONG1")                      \
  X(kLong4, 0x8b, "LONG4")                      \
  X(kBinBytes, 'B', "BINBYTES")                 \
  X(kShortBinBytes, 'C', "SHORT_BINBYTES")      \
  X(kShortBinUnicode, 0x8c, "SHORT_BINUNICODE") \
  X(kBinUnicode8, 0x8d, "BINUNICODE8")          \
  X(kBinBytes8, 0x8e, "BINBYTES8")              \
  X(kEmptySet, 0x8f, "EMPTY_SET")               \
  X(kAddItems, 0x90, "ADDITEMS")                \
  X(kFrozenSet, 0x91, "FROZENSET")              \
  X(kNewObjEx, 0x92, "NEWOBJ_EX")               \
  X(kStackGlobal, 0x93, "STACK_GLOBAL")         \
  X(kMemoize, 0x94, "MEMOIZE")                  \
  X(kFrame, 0x95, "FRAME")                      \
  X(kByteArray8, 0x96, "BYTEARRAY8")            \
  X(kNextBuffer, 0x97, "NEXT_BUFFER")           \
  X(kReadonlyBuffer, 0x98, "READONLY_BUFFER")

enum Op : uint8_t {
#define SEQBOAT_PICKLE_ENUM(id, byte, name) id = byte,
  SEQBOAT_PICKLE_OPCODES(SEQBOAT_PICKLE_ENUM)
#undef SEQBOAT_PICKLE_ENUM
};

// CPython's name of `op`, or null for a byte that is no opcode.
inline const char* OpName(uint8_t op) {
  switch (op) {
#define SEQBOAT_PICKLE_NAME(id, byte, name) \
  case id: return name;
    SEQBOAT_PICKLE_OPCODES(SEQBOAT_PICKLE_NAME)
#undef SEQBOAT_PICKLE_NAME
  }
  return nullptr;
}

}  // namespace seqboat::convert::pickle_op
