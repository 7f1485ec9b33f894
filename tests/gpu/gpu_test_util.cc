// GPU test helpers (see gpu_test_util.h).
#include "tests/gpu/gpu_test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "gtest/gtest.h"
#include "kernels/cuda_backend.h"
#include "runtime/util/status_macros.h"

namespace seqboat::gpu_testing {

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
