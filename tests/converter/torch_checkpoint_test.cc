// Reading torch.save checkpoints: storages, strides, shared storages, dtypes, byte order, and
// damaged archives (every truncation, every single-byte flip) failing cleanly.
#include "converter/torch_checkpoint.h"

#include <cstring>

#include "absl/strings/match.h"
#include "converter/fairseq_checkpoint.h"
#include "gtest/gtest.h"
#include "runtime/model/safetensors.h"
#include "tests/converter/converter_test_util.h"

namespace seqboat::convert {
namespace {

using testing::ConverterFixture;
using testing::ReadBytes;

std::unique_ptr<TorchCheckpoint> OpenFixture(const std::string& name) {
  auto checkpoint = TorchCheckpoint::Open(ConverterFixture(name));
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
  return checkpoint.ok() ? std::move(*checkpoint) : nullptr;
}

const Value* StateDict(const TorchCheckpoint& checkpoint) {
  return checkpoint.root().DictGet("model");
}

const TensorInfo& Tensor(const TorchCheckpoint& checkpoint, const std::string& name) {
  const Value* value = StateDict(checkpoint)->DictGet(name);
  EXPECT_NE(value, nullptr) << name;
  EXPECT_EQ(value->kind, Kind::kTensor) << name;
  return *value->tensor;
}

std::vector<float> AsFloats(const TensorBytes& t) {
  std::vector<float> out(t.numel);
  if (t.dtype == TorchDType::kFloat32) {
    std::memcpy(out.data(), t.bytes.data(), t.bytes.size());
  } else {
    ConvertToFloat(t.dtype == TorchDType::kFloat16 ? DType::kF16 : DType::kBF16, t.bytes.data(),
                   t.numel, out.data());
  }
  return out;
}

// Every state-dict tensor named in `expected` (a model file) reads back to its values.
void ExpectTensorsMatch(const std::string& checkpoint_name, const std::string& expected_name,
                        int* copied = nullptr) {
  auto checkpoint = OpenFixture(checkpoint_name);
  ASSERT_NE(checkpoint, nullptr);
  auto expected = SafetensorsFile::Open(ConverterFixture(expected_name));
  ASSERT_TRUE(expected.ok()) << expected.status();
  for (const TensorView& view : (*expected)->tensors()) {
    const std::string name = "decoder." + view.name;
    auto bytes = checkpoint->ReadTensor(Tensor(*checkpoint, name), name);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_EQ(bytes->shape, view.shape) << name;
    std::vector<float> want(view.NumElements());
    std::memcpy(want.data(), view.data, view.nbytes);
    EXPECT_EQ(AsFloats(*bytes), want) << checkpoint_name << " " << name;
    if (copied != nullptr && bytes->copied()) ++*copied;
  }
}

TEST(TorchCheckpoint, ReadsBasicCheckpoint) {
  auto checkpoint = OpenFixture("basic.pt");
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_EQ(checkpoint->archive_name(), "archive");
  EXPECT_FALSE(checkpoint->big_endian());
  ASSERT_EQ(checkpoint->root().kind, Kind::kDict);
  int copied = 0;
  ExpectTensorsMatch("basic.pt", "basic.expected.safetensors", &copied);
  EXPECT_EQ(copied, 0);  // contiguous little-endian tensors are views of the mapping
}

TEST(TorchCheckpoint, TiedEmbeddingSharesOneStorage) {
  auto checkpoint = OpenFixture("basic.pt");
  ASSERT_NE(checkpoint, nullptr);
  const TensorInfo& embed = Tensor(*checkpoint, "decoder.embed_tokens.weight");
  const TensorInfo& output = Tensor(*checkpoint, "decoder.output_projection.weight");
  EXPECT_TRUE(TorchCheckpoint::SameView(embed, output));
  EXPECT_FALSE(TorchCheckpoint::SameView(
      embed, Tensor(*checkpoint, "decoder.layers.0.slag_layer.mx_proj.weight")));
}

TEST(TorchCheckpoint, NonContiguousTensorsAreGathered) {
  int copied = 0;
  ExpectTensorsMatch("noncontiguous.pt", "noncontiguous.expected.safetensors", &copied);
  // Transposed, column slice, stride-0 expansion and permuted 3-d tensor are copied; the
  // offset slices (hx_proj.bias, q_router.temp) are contiguous views.
  EXPECT_EQ(copied, 4);
  auto checkpoint = OpenFixture("noncontiguous.pt");
  const TensorInfo& h = Tensor(*checkpoint, "decoder.layers.0.slag_layer.h_proj.weight");
  EXPECT_TRUE(h.is_parameter);
  EXPECT_EQ(h.stride, (std::vector<int64_t>{1, 8}));
  const TensorInfo& bias = Tensor(*checkpoint, "decoder.layers.0.slag_layer.hx_proj.bias");
  EXPECT_EQ(bias.storage_offset, 7);
}

TEST(TorchCheckpoint, HalfAndBFloat16Storages) {
  ExpectTensorsMatch("fp16.pt", "fp16.expected.safetensors");
  ExpectTensorsMatch("bf16.pt", "bf16.expected.safetensors");
  auto checkpoint = OpenFixture("bf16.pt");
  EXPECT_EQ(Tensor(*checkpoint, "decoder.embed_tokens.weight").storage_info().dtype,
            TorchDType::kBFloat16);
  EXPECT_EQ(Tensor(*checkpoint, "decoder.layers.1.slag_layer.move.gamma").storage_info().dtype,
            TorchDType::kFloat32);
}

TEST(TorchCheckpoint, BigEndianStoragesAreSwapped) {
  auto checkpoint = OpenFixture("big_endian.pt");
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_TRUE(checkpoint->big_endian());
  ExpectTensorsMatch("big_endian.pt", "big_endian.expected.safetensors");
}

TEST(TorchCheckpoint, Zip64AndPickleProtocols) {
  ExpectTensorsMatch("zip64.pt", "zip64.expected.safetensors");
  ExpectTensorsMatch("protocol4.pt", "protocol4.expected.safetensors");
  ExpectTensorsMatch("protocol5.pt", "protocol5.expected.safetensors");
}

TEST(TorchCheckpoint, LeftoversAreInert) {
  auto checkpoint = OpenFixture("leftovers.pt");
  ASSERT_NE(checkpoint, nullptr);
  const Value* extra = checkpoint->root().DictGet("extra_state");
  ASSERT_NE(extra, nullptr);
  EXPECT_EQ(extra->DictGet("val_loss")->CallableName(), "numpy.core.multiarray.scalar");
  const Value* meters = extra->DictGet("meters");
  ASSERT_EQ(meters->kind, Kind::kDict);
  EXPECT_EQ(meters->DictGet("train_loss")->CallableName(), "__main__.AverageMeter");
  EXPECT_EQ(extra->DictGet("huge")->kind, Kind::kBigInt);
  EXPECT_EQ(extra->DictGet("negative")->int_value, -(int64_t{1} << 40));
  EXPECT_EQ(extra->DictGet("blob")->text, std::string("\x00\xff\x10", 3));
  EXPECT_EQ(extra->DictGet("seen")->kind, Kind::kSet);
  EXPECT_EQ(extra->DictGet("module")->CallableName(), "torch.nn.modules.linear.Linear");
  // Optimizer-state tensors of other dtypes parse (they are never read).
  const Value* state = checkpoint->root().DictGet("last_optimizer_state")->DictGet("state");
  ASSERT_NE(state, nullptr);
  EXPECT_EQ(state->items.size(), 2u);  // {0: {...}}
  const Value* moments = state->items[1];
  EXPECT_EQ(moments->DictGet("step")->tensor->storage_info().dtype, TorchDType::kInt64);
  EXPECT_EQ(moments->DictGet("exp_avg_sq")->tensor->storage_info().dtype, TorchDType::kFloat64);
  EXPECT_EQ(moments->DictGet("mask")->tensor->storage_info().dtype, TorchDType::kBool);
  ExpectTensorsMatch("leftovers.pt", "leftovers.expected.safetensors");
}

TEST(TorchCheckpoint, NamedErrorsForDamagedArchives) {
  struct Case {
    const char* fixture;
    std::vector<const char*> parts;
  };
  const std::vector<Case> cases = {
      {"bad_missing_data_pkl.pt", {"missing data.pkl", "archive/data.pkl"}},
      {"bad_legacy.pt", {"legacy", "_use_new_zipfile_serialization"}},
      {"bad_memo_out_of_range.pt", {"archive/data.pkl", "BINGET", "memo index 99"}},
      {"bad_deep_nesting.pt", {"APPEND", "nested deeper than 1000"}},
      {"bad_length_2_62.pt", {"BINUNICODE8", "4611686018427387904"}},
      {"bad_no_stop.pt", {"without a STOP"}},
      {"dict.txt", {"not a zip archive"}},
  };
  for (const Case& c : cases) {
    auto checkpoint = TorchCheckpoint::Open(ConverterFixture(c.fixture));
    ASSERT_FALSE(checkpoint.ok()) << c.fixture;
    for (const char* part : c.parts) {
      EXPECT_TRUE(absl::StrContains(checkpoint.status().message(), part))
          << c.fixture << ": \"" << part << "\" not in " << checkpoint.status();
    }
    EXPECT_TRUE(absl::StrContains(checkpoint.status().message(), c.fixture));
  }
  auto missing = TorchCheckpoint::Open(ConverterFixture("no_such_file.pt"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(TorchCheckpoint, StorageShorterThanTheTensorNeeds) {
  auto checkpoint = OpenFixture("bad_short_storage.pt");
  ASSERT_NE(checkpoint, nullptr);
  const TensorInfo& embed = Tensor(*checkpoint, "decoder.embed_tokens.weight");
  auto bytes = checkpoint->ReadTensor(embed, "decoder.embed_tokens.weight");
  ASSERT_FALSE(bytes.ok());
  EXPECT_TRUE(absl::StrContains(bytes.status().message(), "storage shorter than the tensor needs"))
      << bytes.status();
  EXPECT_TRUE(absl::StrContains(bytes.status().message(), "decoder.embed_tokens.weight"));
  EXPECT_TRUE(absl::StrContains(bytes.status().message(), "archive/data/1"));

  auto no_storage = OpenFixture("bad_missing_storage.pt");
  auto missing = no_storage->ReadTensor(Tensor(*no_storage, "decoder.embed_tokens.weight"),
                                        "decoder.embed_tokens.weight");
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "which the archive lacks"));
}

TEST(TorchCheckpoint, TensorExtentBeyondTheDeclaredStorage) {
  auto checkpoint = OpenFixture("basic.pt");
  TensorInfo tensor = Tensor(*checkpoint, "decoder.embed_tokens.weight");  // a copy
  tensor.storage_offset = 1;  // one element past the storage's end
  auto bytes = checkpoint->ReadTensor(tensor, "shifted");
  ASSERT_FALSE(bytes.ok());
  EXPECT_TRUE(absl::StrContains(bytes.status().message(), "declares only 80"));
  tensor.storage_offset = 0;
  tensor.shape = {int64_t{1} << 13, int64_t{1} << 12};
  tensor.stride = {0, 0};  // one element broadcast to 2^25
  EXPECT_TRUE(absl::StrContains(checkpoint->ReadTensor(tensor, "broadcast").status().message(),
                                "broadcast views over"));
  tensor.shape = {8, 8};  // a small broadcast is fine (an expand()ed parameter)
  auto small = checkpoint->ReadTensor(tensor, "small");
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_TRUE(small->copied());
  tensor.shape = {int64_t{1} << 30, int64_t{1} << 30};
  tensor.stride = {1, 1};
  EXPECT_TRUE(
      absl::StrContains(checkpoint->ReadTensor(tensor, "huge").status().message(), "elements"));
}

TEST(TorchCheckpoint, CorruptedStorageFailsItsCrc) {
  std::vector<uint8_t> bytes = ReadBytes(ConverterFixture("basic.pt"));
  auto archive = ZipArchive::Open(bytes, "x");
  ASSERT_TRUE(archive.ok());
  bytes[archive->Find("archive/data/1")->data_offset] ^= 0x01;
  auto checkpoint = TorchCheckpoint::FromBytes(bytes, "flipped.pt");
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  auto read = (*checkpoint)
                  ->ReadTensor(Tensor(**checkpoint, "decoder.embed_tokens.weight"),
                               "decoder.embed_tokens.weight");
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(read.status().message(), "CRC-32"));
}

// Reads everything a conversion would from a damaged copy; any outcome but a crash is fine.
void ReadAll(absl::Span<const uint8_t> bytes) {
  auto checkpoint = TorchCheckpoint::FromBytes(bytes, "damaged.pt");
  if (!checkpoint.ok()) {
    EXPECT_TRUE(absl::StrContains(checkpoint.status().message(), "damaged.pt"));
    return;
  }
  auto fairseq = ReadFairseqCheckpoint((*checkpoint)->root(), "damaged.pt");
  if (!fairseq.ok()) return;
  for (const StateDictEntry& entry : fairseq->model) {
    if (entry.value->kind == Kind::kTensor) {
      (void)(*checkpoint)->ReadTensor(*entry.value->tensor, entry.name);
    }
  }
}

TEST(TorchCheckpoint, EveryTruncationFails) {
  const std::vector<uint8_t> bytes = ReadBytes(ConverterFixture("basic.pt"));
  for (size_t length = 0; length < bytes.size(); length += 7) {
    auto checkpoint =
        TorchCheckpoint::FromBytes(absl::MakeConstSpan(bytes.data(), length), "cut.pt");
    EXPECT_FALSE(checkpoint.ok()) << length;
  }
}

TEST(TorchCheckpoint, EverySingleByteFlipIsHandled) {
  std::vector<uint8_t> bytes = ReadBytes(ConverterFixture("basic.pt"));
  for (size_t at = 0; at < bytes.size(); ++at) {
    for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xff}}) {
      bytes[at] ^= mask;
      ReadAll(bytes);
      bytes[at] ^= mask;
    }
  }
}

}  // namespace
}  // namespace seqboat::convert
