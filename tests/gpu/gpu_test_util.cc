// GPU test helpers (see gpu_test_util.h).
#include "tests/gpu/gpu_test_util.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cuda_backend.h"
#include "runtime/model/model.h"
#include "runtime/model/safetensors.h"
#include "runtime/util/status_macros.h"

namespace seqboat::gpu_testing {

ModelConfig SmallConfig() {
  ModelConfig c;
  c.embed_dim = 12;
  c.z_dim = 8;
  c.hidden_dim = 10;
  c.n_dim = 3;
  c.layers = 2;
  c.chunk_size = 5;
  c.vocab_size = 23;
  c.truncation_length = 9;
  c.max_positions = 32;
  return c;
}

ModelConfig Enwik8Config() {
  ModelConfig c;
  c.embed_dim = 616;
  c.z_dim = 128;
  c.hidden_dim = 1232;
  c.n_dim = 16;
  c.layers = 14;
  c.chunk_size = 1024;
  c.vocab_size = 260;
  c.truncation_length = 2048;
  c.max_positions = 8192;
  c.attention = AttentionKind::kSoftmax;
  c.position = PositionKind::kRotary;
  c.norm = NormKind::kLayerNorm;
  c.normalize_before = true;
  c.final_norm_affine = false;
  c.scale_embedding = true;
  c.tied_embeddings = true;
  c.ffn_dim = 0;
  return c;
}

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
          absl::StrCat("seqboat_gpu_", getpid(), "_", counter++, "_", stem))
      .string();
}

absl::StatusOr<RunResult> RunChunked(Backend& backend, SlotId slot,
                                     const std::vector<int32_t>& tokens, int64_t chunk, int vocab,
                                     int layers) {
  RETURN_IF_ERROR(backend.ResetSlot(slot));
  const int64_t T = tokens.size();
  RunResult result;
  result.logits.assign(T * vocab, 0.0f);
  result.activations.assign(T * layers, 0);
  result.confidences.assign(T * layers, 0.0f);
  for (int64_t t = 0; t < T; t += chunk) {
    const int64_t n = std::min(chunk, T - t);
    SequenceChunk c{slot, absl::MakeConstSpan(tokens.data() + t, n), true};
    RETURN_IF_ERROR(backend.Forward(
        {&c, 1}, {absl::MakeSpan(result.logits.data() + t * vocab, n * vocab),
                  absl::MakeSpan(result.activations.data() + t * layers, n * layers),
                  absl::MakeSpan(result.confidences.data() + t * layers, n * layers)}));
  }
  return result;
}

std::vector<int32_t> RandomTokens(int64_t count, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> tokens(count);
  for (int32_t& t : tokens) t = 2 + static_cast<int32_t>(rng() % (vocab - 2));  // never <s>, <pad>
  return tokens;
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  float worst = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) {
    const float diff = std::fabs(a[i] - b[i]);
    if (!(diff <= worst)) worst = diff;  // NaN counts as the worst
  }
  return worst;
}

int64_t CountDifferent(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return -1;
  int64_t different = 0;
  for (size_t i = 0; i < a.size(); ++i) different += a[i] != b[i];
  return different;
}

int GpuTestMain(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const absl::Status device = CudaDeviceAvailable(0);
  if (!device.ok()) {
    std::fprintf(stderr, "SKIPPED: %s\n", std::string(device.message()).c_str());
    return 77;
  }
  return RUN_ALL_TESTS();
}

}  // namespace seqboat::gpu_testing
