// Helpers of the GPU tests: a runner that teacher-forces a sequence through any Backend,
// comparisons with stated tolerances, and the skip-without-a-GPU main.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/random_model.h"
#include "runtime/backend.h"
#include "runtime/model/config.h"
#include "runtime/util/dtype.h"
#include "tests/util/random_model_file.h"

namespace seqboat::gpu_testing {

// The random model files of the tests (tests/util) and the paper's configuration (bench/).
using bench::PaperEnwik8Config;
using test_util::ConvertModelFile;
using test_util::RandomModelSpec;
using test_util::RandomTokens;
using test_util::Routing;
using test_util::SmallConfig;
using test_util::TempPath;
using test_util::WriteRandomModel;

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

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b);
int64_t CountDifferent(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b);

// Returns 77 (ctest's skip code) with a message when no CUDA device is usable, else runs
// every gtest test. Used as each GPU test binary's main.
int GpuTestMain(int argc, char** argv);

}  // namespace seqboat::gpu_testing
