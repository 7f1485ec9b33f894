// Random model files for tests (see random_model_file.h).
#include "tests/util/random_model_file.h"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "runtime/model/model.h"
#include "runtime/model/safetensors.h"
#include "runtime/util/status_macros.h"

namespace seqboat::test_util {
namespace {

void Store(DType dtype, const std::vector<float>& values, std::vector<uint8_t>* bytes) {
  bytes->resize(values.size() * DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(bytes->data() + 4 * i, &values[i], 4);
    } else {
      const uint16_t bits = dtype == DType::kF16 ? FloatToF16(values[i]) : FloatToBf16(values[i]);
      std::memcpy(bytes->data() + 2 * i, &bits, 2);
    }
  }
}

}  // namespace

ModelConfig SmallConfig() {
  ModelConfig c;
  c.embed_dim = 12;
  c.z_dim = 8;
  c.hidden_dim = 10;
  c.n_dim = 3;
  c.layers = 2;
  c.window = 5;
  c.vocab_size = 23;
  c.truncation_length = 9;
  c.max_positions = 32;
  return c;
}

absl::Status WriteRandomModel(const RandomModelSpec& spec, const std::string& path) {
  const ModelConfig& c = spec.config;
  std::mt19937_64 rng(spec.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<uint8_t>> storage;
  std::vector<TensorToWrite> tensors;
  const std::vector<ExpectedTensor> expected = ExpectedTensors(c);
  storage.reserve(expected.size());
  for (const ExpectedTensor& t : expected) {
    int64_t count = 1;
    for (int64_t d : t.shape) count *= d;
    const float scale =
        t.shape.size() == 2 ? 1.0f / std::sqrt(static_cast<float>(t.shape[1])) : 0.5f;
    std::vector<float> values(count);
    for (float& v : values) v = normal(rng) * scale;
    if (absl::EndsWith(t.name, "norm.weight") || absl::EndsWith(t.name, "norm.scalar")) {
      for (float& v : values) v = 1.0f + 0.1f * v;
    }
    if (absl::EndsWith(t.name, "hx_proj.weight")) {  // decisive router rows: few near-ties
      for (int64_t i = 0; i < 2 * c.embed_dim; ++i) values[i] *= 6.0f;
    }
    if (absl::EndsWith(t.name, "hx_proj.bias") && spec.routing != Routing::kBalanced) {
      const float push = spec.routing == Routing::kAllOn ? 1000.0f : -1000.0f;
      values[0] = -push;
      values[1] = push;
    }
    if (absl::EndsWith(t.name, "embed_tokens.weight")) {
      for (int64_t d = 0; d < c.embed_dim; ++d) values[1 * c.embed_dim + d] = 0.0f;  // <pad> row
    }
    storage.emplace_back();
    Store(spec.dtype, values, &storage.back());
    tensors.push_back({t.name, spec.dtype, t.shape, absl::MakeConstSpan(storage.back())});
  }
  const std::map<std::string, std::string> metadata = {{"format", "seqboat"},
                                                       {"format_version", "1"},
                                                       {"config", ModelConfigToJson(c)},
                                                       {"tokenizer", "{}"}};
  return WriteSafetensors(path, metadata, tensors);
}

absl::Status ConvertModelFile(const std::string& from, const std::string& to, DType dtype) {
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(from));
  std::vector<std::vector<uint8_t>> storage;
  storage.reserve(file->tensors().size());
  std::vector<TensorToWrite> tensors;
  for (const TensorView& view : file->tensors()) {
    std::vector<float> values(view.NumElements());
    ConvertToFloat(view.dtype, view.data, values.size(), values.data());
    storage.emplace_back();
    Store(dtype, values, &storage.back());
    tensors.push_back({view.name, dtype, view.shape, absl::MakeConstSpan(storage.back())});
  }
  return WriteSafetensors(to, file->metadata(), tensors);
}

std::string TempPath(const std::string& stem) {
  static std::atomic<int> counter{0};
  return (std::filesystem::temp_directory_path() /
          absl::StrCat("seqboat_test_", getpid(), "_", counter++, "_", stem))
      .string();
}

std::vector<int32_t> RandomTokens(int64_t count, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> tokens(count);
  for (int32_t& t : tokens) t = 2 + static_cast<int32_t>(rng() % (vocab - 2));  // never <s>, <pad>
  return tokens;
}

}  // namespace seqboat::test_util
