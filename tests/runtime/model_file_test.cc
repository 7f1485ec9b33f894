// The model file reader and writer: round trips in every dtype, and every kind of bad file
// is an error that names the problem (never a crash).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/model/config.h"
#include "runtime/model/model.h"
#include "runtime/model/safetensors.h"

namespace seqboat {
namespace {

ModelConfig TinyConfig() {
  ModelConfig c;
  c.embed_dim = 6;
  c.z_dim = 4;
  c.hidden_dim = 5;
  c.n_dim = 2;
  c.layers = 2;
  c.window = 3;
  c.vocab_size = 9;
  c.truncation_length = 8;
  c.max_positions = 16;
  c.ffn_dim = 7;
  c.tied_embeddings = false;
  return c;
}

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("seqboat_model_file_test_" + name)).string();
}

std::map<std::string, std::string> Metadata(const ModelConfig& config) {
  return {{"format", "seqboat"},
          {"format_version", "1"},
          {"config", ModelConfigToJson(config)},
          {"tokenizer",
           R"({"style":"word","symbols":["<s>","<pad>","</s>","<unk>","a","b","c","d","e"]})"},
          {"source_sha256", "00"}};
}

// Writes a complete model of `config` whose element i of every tensor is (i % 7 - 3) / 8
// (exact in every dtype), in `dtype`.
void WriteModel(const std::string& path, const ModelConfig& config, DType dtype,
                std::map<std::string, std::string> metadata = {}) {
  if (metadata.empty()) metadata = Metadata(config);
  std::vector<std::vector<uint8_t>> storage;
  std::vector<TensorToWrite> tensors;
  for (const ExpectedTensor& t : ExpectedTensors(config)) {
    int64_t count = 1;
    for (int64_t d : t.shape) count *= d;
    std::vector<uint8_t> bytes(count * DTypeSize(dtype));
    for (int64_t i = 0; i < count; ++i) {
      const float value = static_cast<float>(i % 7 - 3) / 8.0f;
      if (dtype == DType::kF32) {
        std::memcpy(bytes.data() + 4 * i, &value, 4);
      } else {
        const uint16_t half = dtype == DType::kF16 ? FloatToF16(value) : FloatToBf16(value);
        std::memcpy(bytes.data() + 2 * i, &half, 2);
      }
    }
    storage.push_back(std::move(bytes));
    tensors.push_back({t.name, dtype, t.shape, absl::MakeConstSpan(storage.back())});
  }
  ASSERT_TRUE(WriteSafetensors(path, metadata, tensors).ok());
}

// A raw file: 8-byte length, header text, data bytes.
void WriteRaw(const std::string& path, const std::string& header, const std::string& data,
              uint64_t header_len_override = 0) {
  std::ofstream out(path, std::ios::binary);
  uint64_t len = header_len_override ? header_len_override : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(len >> (8 * i)));
  out << header << data;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void ExpectError(const absl::Status& status, const std::string& needle) {
  ASSERT_FALSE(status.ok()) << "expected an error mentioning \"" << needle << "\"";
  EXPECT_NE(std::string(status.message()).find(needle), std::string::npos) << status.message();
}

TEST(ModelFile, RoundTripsInEveryDtype) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    const std::string path = TempPath(std::string("roundtrip_") + DTypeName(dtype));
    WriteModel(path, TinyConfig(), dtype);
    auto model = Model::Load(path);
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ((*model)->stored_dtype(), dtype);
    EXPECT_EQ((*model)->config().ffn_dim, 7);
    const LayerWeights& layer = (*model)->weights().layers[1];
    for (int i = 0; i < 6 * 6; ++i)
      EXPECT_EQ(layer.hx_proj_weight[i], static_cast<float>(i % 7 - 3) / 8.0f);
    EXPECT_NE((*model)->weights().output, (*model)->weights().embed);  // untied
    std::remove(path.c_str());
  }
}

TEST(ModelFile, ConfigJsonRoundTrips) {
  ModelConfig c = TinyConfig();
  c.attention = AttentionKind::kLaplace;
  c.position = PositionKind::kSimple;
  c.norm = NormKind::kRmsNorm;
  c.normalize_before = false;
  auto parsed = ParseModelConfig(ModelConfigToJson(c));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(ModelConfigToJson(*parsed), ModelConfigToJson(c));
}

TEST(ModelFile, MissingFileIsNotFound) {
  auto model = Model::Load(TempPath("does_not_exist"));
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
}

TEST(ModelFile, TruncatedFile) {
  const std::string path = TempPath("truncated");
  WriteModel(path, TinyConfig(), DType::kF32);
  std::string bytes = ReadAll(path);
  std::ofstream(path, std::ios::binary) << bytes.substr(0, bytes.size() - 10);
  ExpectError(Model::Load(path).status(), "outside the");
  std::ofstream(path, std::ios::binary) << bytes.substr(0, 5);
  ExpectError(Model::Load(path).status(), "8-byte header length");
  std::remove(path.c_str());
}

TEST(ModelFile, HeaderLengthPastEnd) {
  const std::string path = TempPath("header_past_end");
  WriteRaw(path, "{}", "", 1ull << 40);
  ExpectError(SafetensorsFile::Open(path).status(), "runs past the end");
  std::remove(path.c_str());
}

TEST(ModelFile, HeaderNotJson) {
  const std::string path = TempPath("header_not_json");
  WriteRaw(path, "{\"a\": [1, 2", "");
  ExpectError(SafetensorsFile::Open(path).status(), "not a JSON object");
  std::remove(path.c_str());
}

TEST(ModelFile, OverlappingOffsets) {
  const std::string path = TempPath("overlap");
  WriteRaw(path,
           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
           std::string(12, '\0'));
  ExpectError(SafetensorsFile::Open(path).status(), "overlaps");
  std::remove(path.c_str());
}

TEST(ModelFile, OutOfRangeOffsets) {
  const std::string path = TempPath("out_of_range");
  WriteRaw(path, R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
           std::string(8, '\0'));
  ExpectError(SafetensorsFile::Open(path).status(), "lie outside");
  WriteRaw(path, R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}})",
           std::string(16, '\0'));
  ExpectError(SafetensorsFile::Open(path).status(), "lie outside");
  std::remove(path.c_str());
}

TEST(ModelFile, SizeDisagreesWithShape) {
  const std::string path = TempPath("size_shape");
  WriteRaw(path, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0'));
  ExpectError(SafetensorsFile::Open(path).status(), "needs 12");
  std::remove(path.c_str());
}

TEST(ModelFile, GapAndTrailingBytes) {
  const std::string path = TempPath("gap");
  WriteRaw(path, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0'));
  ExpectError(SafetensorsFile::Open(path).status(), "gap of 4 bytes");
  WriteRaw(path, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(8, '\0'));
  ExpectError(SafetensorsFile::Open(path).status(), "trailing bytes");
  std::remove(path.c_str());
}

TEST(ModelFile, UnsupportedDtype) {
  const std::string path = TempPath("dtype");
  WriteRaw(path, R"({"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0'));
  ExpectError(SafetensorsFile::Open(path).status(), "unsupported dtype \"I32\"");
  std::remove(path.c_str());
}

TEST(ModelFile, BadEntryFields) {
  const std::string path = TempPath("fields");
  WriteRaw(path, R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
           std::string(4, '\0'));
  ExpectError(SafetensorsFile::Open(path).status(), "non-negative integers");
  WriteRaw(path, R"({"a":{"dtype":"F32","shape":[1]}})", std::string(4, '\0'));
  ExpectError(SafetensorsFile::Open(path).status(), "data_offsets");
  WriteRaw(path, R"({"__metadata__":{"k":1}})", "");
  ExpectError(SafetensorsFile::Open(path).status(), "not a string");
  std::remove(path.c_str());
}

TEST(ModelFile, WrongShape) {
  const std::string path = TempPath("wrong_shape");
  ModelConfig small = TinyConfig();
  ModelConfig other = small;
  other.hidden_dim = 4;  // tensors for H=4, metadata claims H=5
  WriteModel(path, other, DType::kF32, Metadata(small));
  ExpectError(
      Model::Load(path).status(),
      "layers.0.slag_layer.mx_proj.weight\" has shape [12, 6], the config requires [14, 6]");
  std::remove(path.c_str());
}

TEST(ModelFile, MissingTensor) {
  const std::string path = TempPath("missing_tensor");
  ModelConfig with_ffn = TinyConfig();
  ModelConfig no_ffn = with_ffn;
  no_ffn.ffn_dim = 0;
  WriteModel(path, no_ffn, DType::kF32, Metadata(with_ffn));
  ExpectError(Model::Load(path).status(), "missing tensor \"layers.0.nffn.norm.norm.weight\"");
  std::remove(path.c_str());
}

TEST(ModelFile, UnexpectedTensor) {
  const std::string path = TempPath("unexpected_tensor");
  ModelConfig three = TinyConfig();
  three.layers = 3;
  WriteModel(path, three, DType::kF32, Metadata(TinyConfig()));
  ExpectError(Model::Load(path).status(), "unexpected tensor \"layers.2.");
  std::remove(path.c_str());
}

TEST(ModelFile, UnknownConfigValues) {
  const std::string path = TempPath("unknown_config");
  auto metadata = Metadata(TinyConfig());
  std::string config = metadata["config"];
  metadata["config"] = config.replace(config.find("\"softmax\""), 9, "\"cosine\"");
  WriteModel(path, TinyConfig(), DType::kF32, metadata);
  ExpectError(Model::Load(path).status(), "attention_activation\": \"cosine\" is not supported");
  metadata = Metadata(TinyConfig());
  metadata["config"] = "{\"embed_dim\": 6}";
  WriteModel(path, TinyConfig(), DType::kF32, metadata);
  ExpectError(Model::Load(path).status(), "\"z_dim\": missing");
  std::remove(path.c_str());
}

TEST(ModelFile, HostileLayerCountIsRefusedCheaply) {
  const std::string path = TempPath("hostile_layers");
  ModelConfig huge = TinyConfig();
  huge.layers = 1000000000;
  WriteModel(path, TinyConfig(), DType::kF32, Metadata(huge));
  ExpectError(Model::Load(path).status(),
              "the config has 1000000000 layers but the file holds only");
  std::remove(path.c_str());
}

TEST(ModelFile, MetadataChecks) {
  const std::string path = TempPath("metadata");
  auto metadata = Metadata(TinyConfig());
  metadata["format_version"] = "99";
  WriteModel(path, TinyConfig(), DType::kF32, metadata);
  ExpectError(Model::Load(path).status(), "format_version \"99\" is not supported");
  metadata = Metadata(TinyConfig());
  metadata.erase("config");
  WriteModel(path, TinyConfig(), DType::kF32, metadata);
  ExpectError(Model::Load(path).status(), "lacks \"config\"");
  std::remove(path.c_str());
}

TEST(ModelFile, NonFiniteWeight) {
  const std::string path = TempPath("non_finite");
  WriteModel(path, TinyConfig(), DType::kF32);
  std::string bytes = ReadAll(path);
  const float nan = std::nanf("");
  std::memcpy(&bytes[bytes.size() - 4], &nan, 4);  // the last tensor's last element
  std::ofstream(path, std::ios::binary) << bytes;
  ExpectError(Model::Load(path).status(), "non-finite value");
  std::remove(path.c_str());
}

TEST(ModelFile, HalfConversions) {
  EXPECT_EQ(F16ToFloat(FloatToF16(1.0f)), 1.0f);
  EXPECT_EQ(F16ToFloat(FloatToF16(-2.5f)), -2.5f);
  EXPECT_EQ(F16ToFloat(FloatToF16(65504.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(F16ToFloat(FloatToF16(70000.0f))));
  EXPECT_EQ(F16ToFloat(FloatToF16(5.9604645e-8f)), 5.9604645e-8f);  // smallest subnormal
  EXPECT_EQ(F16ToFloat(0x3555), 0.33325195f);
  EXPECT_EQ(FloatToF16(1.0f + 1.0f / 2048), 0x3c00);  // halfway rounds to even
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(3.0f)), 3.0f);
  EXPECT_EQ(FloatToBf16(1.0f + 1.0f / 256), 0x3f80);  // halfway rounds to even
}

}  // namespace
}  // namespace seqboat
