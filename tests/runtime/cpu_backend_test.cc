// CpuBackend contract: bad batches are named errors that change no slot; SeqBoat-full
// models need an explicit FIFO bound; slot bookkeeping.
#include "runtime/cpu/cpu_backend.h"

#include <cmath>
#include <filesystem>
#include <memory>

#include "gtest/gtest.h"
#include "runtime/model/model.h"
#include "runtime/model/safetensors.h"
#include "tests/runtime/fixture_util.h"

namespace seqboat {
namespace {

const char kModel[] = "enwik8_tiny";

std::string ModelPath() { return testing::FixturesDir() + "/" + kModel + "/model.safetensors"; }

class CpuBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = Model::Load(ModelPath());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    CpuBackendOptions options;
    options.num_slots = 2;
    auto backend = CpuBackend::Create(*model_, options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
    expected_ = testing::LoadExpected(kModel, 0, "exact");
  }

  void ExpectForwardError(std::vector<SequenceChunk> batch, size_t logit_floats,
                          const std::string& needle) {
    std::vector<float> logits(logit_floats);
    absl::Status status = backend_->Forward(batch, {absl::MakeSpan(logits), {}, {}});
    ASSERT_FALSE(status.ok()) << "expected an error mentioning " << needle;
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(status.message()).find(needle), std::string::npos) << status.message();
  }

  int V() const { return model_->config().vocab_size; }

  std::unique_ptr<Model> model_;
  std::unique_ptr<CpuBackend> backend_;
  testing::Expected expected_;
};

TEST_F(CpuBackendTest, BadBatchesAreNamedErrors) {
  const int32_t good[] = {2, 40, 41};
  const int32_t out_of_range[] = {2, 100000};
  const int32_t negative[] = {-4};
  const int32_t pad[] = {2, 1};
  ExpectForwardError({{5, good, false}}, V(), "slot 5 out of range");
  ExpectForwardError({{0, good, false}, {0, good, false}}, 2 * V(), "slot 0 appears twice");
  ExpectForwardError({{0, {}, false}}, V(), "has no tokens");
  ExpectForwardError({{0, out_of_range, false}}, V(),
                     "token 1: id 100000 is outside the vocabulary");
  ExpectForwardError({{0, negative, false}}, V(), "token 0: id -4 is outside");
  ExpectForwardError({{0, pad, false}}, V(), "padding id");
  ExpectForwardError({{0, good, true}}, V(), "logits buffer holds");
  const float two_biases[] = {1.0f, 2.0f};  // the model has 3 layers
  ExpectForwardError({{0, good, false, two_biases}}, V(),
                     "chunk 0 has 2 activation biases; expected none or one per layer (3)");
  const float nan_bias[] = {0.0f, std::nanf(""), 0.0f};
  ExpectForwardError({{0, good, false, nan_bias}}, V(), "activation bias of layer 1 is nan");
  std::vector<float> logits(V());
  std::vector<uint8_t> activations(1);
  SequenceChunk chunk{0, good, false};
  absl::Status status =
      backend_->Forward({&chunk, 1}, {absl::MakeSpan(logits), absl::MakeSpan(activations), {}});
  EXPECT_FALSE(status.ok());
  // Nothing above touched slot 0: it still starts at position 0.
  SlotStats stats;
  ASSERT_TRUE(backend_->Stats(0, &stats).ok());
  EXPECT_EQ(stats.tokens, 0);
}

TEST_F(CpuBackendTest, FailedBatchChangesNoSlot) {
  const int64_t T = expected_.tokens.size();
  std::vector<float> logits(T * V());
  const int32_t pad[] = {1};
  // Slot 0 valid, slot 1 bad: the whole batch fails before either slot moves.
  SequenceChunk batch[] = {{0, absl::MakeConstSpan(expected_.tokens.data(), 3), false},
                           {1, pad, false}};
  std::vector<float> two(2 * V());
  ASSERT_FALSE(backend_->Forward(batch, {absl::MakeSpan(two), {}, {}}).ok());
  SequenceChunk all{0, absl::MakeConstSpan(expected_.tokens), true};
  ASSERT_TRUE(backend_->Forward({&all, 1}, {absl::MakeSpan(logits), {}, {}}).ok());
  float worst = 0.0f;
  for (size_t i = 0; i < logits.size(); ++i)
    worst = std::max(worst, std::fabs(logits[i] - expected_.logits[i]));
  EXPECT_LE(worst, 1e-4f);
}

// A bias of 0 on every layer is the model's own routing, to the bit.
TEST_F(CpuBackendTest, ZeroActivationBiasChangesNothing) {
  const int64_t T = expected_.tokens.size();
  const std::vector<float> zeros(model_->config().layers, 0.0f);
  std::vector<float> plain(T * V()), biased(T * V());
  SequenceChunk a{0, absl::MakeConstSpan(expected_.tokens), true};
  SequenceChunk b{1, absl::MakeConstSpan(expected_.tokens), true, zeros};
  ASSERT_TRUE(backend_->Forward({&a, 1}, {absl::MakeSpan(plain), {}, {}}).ok());
  ASSERT_TRUE(backend_->Forward({&b, 1}, {absl::MakeSpan(biased), {}, {}}).ok());
  EXPECT_EQ(plain, biased);
}

TEST_F(CpuBackendTest, SlotCallsCheckRange) {
  EXPECT_FALSE(backend_->ResetSlot(-1).ok());
  EXPECT_FALSE(backend_->CopySlot(0, 2).ok());
  SlotStats stats;
  EXPECT_FALSE(backend_->Stats(9, &stats).ok());
  EXPECT_TRUE(backend_->CopySlot(1, 1).ok());
}

TEST_F(CpuBackendTest, StateBytesFollowTheFormula) {
  const ModelConfig& c = model_->config();
  const size_t per_layer =
      c.embed_dim * c.n_dim * 4 + c.window * (c.z_dim + c.hidden_dim) * 4 + c.window * 8;
  EXPECT_EQ(backend_->state_bytes_per_slot(), c.layers * per_layer);
  CpuBackendOptions trained;
  trained.ema_horizon = EmaHorizon::kTrained;
  auto backend = CpuBackend::Create(*model_, trained);
  ASSERT_TRUE(backend.ok());
  EXPECT_EQ((*backend)->state_bytes_per_slot(),
            c.layers * (per_layer + static_cast<size_t>(c.truncation_length) * c.embed_dim * 4));
  // A bf16 FIFO halves the keys' and values' bytes, nothing else.
  CpuBackendOptions bf16_fifo;
  bf16_fifo.fifo_dtype = WeightDType::kBF16;
  auto half = CpuBackend::Create(*model_, bf16_fifo);
  ASSERT_TRUE(half.ok()) << half.status();
  EXPECT_STREQ((*half)->fifo_dtype(), "bf16");
  EXPECT_STREQ(backend_->fifo_dtype(), "f32");
  EXPECT_EQ((*half)->state_bytes_per_slot(),
            c.layers * (per_layer - c.window * (c.z_dim + c.hidden_dim) * 2));
}

// The server sizes its slots from the model alone: the number must be what a backend holds.
TEST_F(CpuBackendTest, StateBytesWithoutABackendAreWhatOneHolds) {
  // Reduced-precision matrices change the weights, never the per-slot state; the FIFO dtype
  // does change it.
  for (EmaHorizon horizon : {EmaHorizon::kExact, EmaHorizon::kTrained}) {
    for (WeightDType dtype : {WeightDType::kAsStored, WeightDType::kBF16, WeightDType::kInt8}) {
      for (WeightDType fifo_dtype : {WeightDType::kAsStored, WeightDType::kBF16}) {
        CpuBackendOptions options;
        options.ema_horizon = horizon;
        options.weight_dtype = dtype;
        options.fifo_dtype = fifo_dtype;
        auto predicted = CpuBackend::StateBytesPerSlot(model_->config(), options);
        ASSERT_TRUE(predicted.ok()) << predicted.status();
        auto backend = CpuBackend::Create(*model_, options);
        ASSERT_TRUE(backend.ok()) << backend.status();
        EXPECT_EQ(*predicted, (*backend)->state_bytes_per_slot())
            << EmaHorizonName(horizon) << " " << WeightDTypeName(dtype) << " fifo "
            << WeightDTypeName(fifo_dtype);
      }
    }
  }
  CpuBackendOptions f16;
  f16.weight_dtype = WeightDType::kF16;  // refused by both, with the same reason
  EXPECT_NE(std::string(CpuBackend::StateBytesPerSlot(model_->config(), f16).status().message())
                .find("the CPU backend keeps matrices in f32 (as_stored), bf16 or int8"),
            std::string::npos);
  EXPECT_FALSE(CpuBackend::Create(*model_, f16).ok());
}

TEST_F(CpuBackendTest, OptionsAreChecked) {
  CpuBackendOptions options;
  options.num_slots = 0;
  EXPECT_FALSE(CpuBackend::Create(*model_, options).ok());
  options.num_slots = 1;
  options.fifo_capacity = model_->config().window + 1;
  auto status = CpuBackend::Create(*model_, options).status();
  EXPECT_NE(std::string(status.message()).find("differs from the model's chunk_size"),
            std::string::npos);
}

// A SeqBoat-full copy of the fixture (chunk_size 0) needs a FIFO bound; bounded at the
// original w it must reproduce the original model exactly.
TEST_F(CpuBackendTest, SeqBoatFullNeedsABoundAndMatchesAtW) {
  auto file = SafetensorsFile::Open(ModelPath());
  ASSERT_TRUE(file.ok());
  std::map<std::string, std::string> metadata = (*file)->metadata();
  ModelConfig config = model_->config();
  const int w = config.window;
  config.window = 0;
  metadata["config"] = ModelConfigToJson(config);
  std::vector<TensorToWrite> tensors;
  for (const TensorView& view : (*file)->tensors()) {
    tensors.push_back(
        {view.name, view.dtype, view.shape, absl::MakeConstSpan(view.data, view.nbytes)});
  }
  const std::string path =
      (std::filesystem::temp_directory_path() / "seqboat_full_model.safetensors").string();
  ASSERT_TRUE(WriteSafetensors(path, metadata, tensors).ok());
  auto full = Model::Load(path);
  ASSERT_TRUE(full.ok()) << full.status();
  auto unbounded = CpuBackend::Create(**full, CpuBackendOptions{});
  ASSERT_FALSE(unbounded.ok());
  EXPECT_NE(std::string(unbounded.status().message()).find("SeqBoat-full"), std::string::npos);
  CpuBackendOptions bounded;
  bounded.fifo_capacity = w;
  auto backend = CpuBackend::Create(**full, bounded);
  ASSERT_TRUE(backend.ok()) << backend.status();
  const int64_t T = expected_.tokens.size();
  std::vector<float> logits(T * V());
  SequenceChunk all{0, absl::MakeConstSpan(expected_.tokens), true};
  ASSERT_TRUE((*backend)->Forward({&all, 1}, {absl::MakeSpan(logits), {}, {}}).ok());
  float worst = 0.0f;
  for (size_t i = 0; i < logits.size(); ++i)
    worst = std::max(worst, std::fabs(logits[i] - expected_.logits[i]));
  EXPECT_LE(worst, 1e-4f);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace seqboat
