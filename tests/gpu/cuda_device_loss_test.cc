// Backend::CheckHealth on the CUDA backend: OK on a working device and after a call that
// failed for its own reasons (a bad batch); an error once the context is lost to a sticky
// fault, after which Forward fails too. The fault poisons this process's CUDA context, so
// this binary holds this one test alone.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_backend.h"
#include "runtime/model/model.h"
#include "tests/gpu/fault_kernel.h"
#include "tests/gpu/gpu_test_util.h"

namespace seqboat {
namespace {

TEST(CudaDeviceLossTest, HealthIsOkUntilAStickyFaultThenForwardAndHealthFail) {
  gpu_testing::RandomModelSpec spec;
  spec.config = gpu_testing::SmallConfig();
  const std::string path = gpu_testing::TempPath("device_loss.safetensors");
  ASSERT_TRUE(gpu_testing::WriteRandomModel(spec, path).ok());
  auto model = Model::Load(path);
  std::filesystem::remove(path);
  ASSERT_TRUE(model.ok()) << model.status();
  CudaBackendOptions options;
  options.num_slots = 2;
  auto made = CreateCudaBackend(**model, options);
  ASSERT_TRUE(made.ok()) << made.status();
  Backend& backend = **made;
  const int V = (*model)->config().vocab_size;

  const int32_t tokens[] = {2, 5, 7, 9};
  std::vector<float> logits(V);
  SequenceChunk chunk{0, tokens, false};
  ASSERT_TRUE(backend.Forward({&chunk, 1}, {absl::MakeSpan(logits), {}, {}}).ok());
  EXPECT_TRUE(backend.CheckHealth().ok());

  // A bad batch fails alone: the device is fine.
  const int32_t out_of_range[] = {2, V + 7};
  SequenceChunk bad{1, out_of_range, false};
  EXPECT_EQ(backend.Forward({&bad, 1}, {absl::MakeSpan(logits), {}, {}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(backend.CheckHealth().ok());

  // A sticky fault loses the context for good.
  const cudaError_t fault = gpu_testing::LaunchIllegalWrite();
  ASSERT_NE(fault, cudaSuccess) << "the faulting kernel did not fault";
  const int32_t next[] = {11};
  SequenceChunk step{0, next, false};
  const absl::Status after = backend.Forward({&step, 1}, {absl::MakeSpan(logits), {}, {}});
  EXPECT_EQ(after.code(), absl::StatusCode::kInternal) << after;
  const absl::Status health = backend.CheckHealth();
  EXPECT_EQ(health.code(), absl::StatusCode::kInternal) << health;
  EXPECT_EQ(backend.CheckHealth().code(), absl::StatusCode::kInternal) << "a sticky error stays";
}

}  // namespace
}  // namespace seqboat

int main(int argc, char** argv) { return seqboat::gpu_testing::GpuTestMain(argc, argv); }
