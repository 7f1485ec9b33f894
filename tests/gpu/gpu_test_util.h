// Helpers of the GPU tests: random model files, dtype copies of model files, a runner that
// teacher-forces a sequence through any Backend, and comparisons with stated tolerances.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/backend.h"
#include "runtime/model/config.h"
#include "runtime/util/dtype.h"

namespace seqboat::gpu_testing {

// How the router of a random model behaves.
enum class Routing { kBalanced, kAllOn, kAllOff };

struct RandomModelSpec {
  ModelConfig config;
  Routing routing = Routing::kBalanced;
  uint64_t seed = 1;
  DType dtype = DType::kF32;
};

// A small config exercising every option the runtime supports; tweak fields before use.
ModelConfig SmallConfig();
// The paper's enwik8 configuration (L=14, D=616, Z=128, H=1232, N=16, w=1024, V=260).
ModelConfig Enwik8Config();

// Writes a random model file (weights scaled so activations stay O(1)) to `path`.
absl::Status WriteRandomModel(const RandomModelSpec& spec, const std::string& path);
// Writes a copy of the model file at `from` with every tensor converted to `dtype`.
absl::Status ConvertModelFile(const std::string& from, const std::string& to, DType dtype);

// A unique path under the temp directory.
std::string TempPath(const std::string& stem);

struct RunResult {
  std::vector<float> logits;         // [T, V]
  std::vector<uint8_t> activations;  // [T, L]
  std::vector<float> confidences;    // [T, L]
};
// Teacher-forces `tokens` through `slot` (reset first) in chunks of `chunk` tokens with every
// logit row requested.
absl::StatusOr<RunResult> RunChunked(Backend& backend, SlotId slot,
                                     const std::vector<int32_t>& tokens, int64_t chunk, int vocab,
                                     int layers);

std::vector<int32_t> RandomTokens(int64_t count, int vocab, uint64_t seed);

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b);
int64_t CountDifferent(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b);

// Returns 77 (ctest's skip code) with a message when no CUDA device is usable, else runs
// every gtest test. Used as each GPU test binary's main.
int GpuTestMain(int argc, char** argv);

}  // namespace seqboat::gpu_testing
