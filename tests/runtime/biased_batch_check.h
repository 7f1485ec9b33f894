// A check shared by every backend's tests: the reference's activation-bias fixtures, one
// sequence under the model's own routing and under every fixture bias side by side in one
// batch (a prefill chunk, then single steps), each row against its own reference.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/backend.h"
#include "runtime/model/model.h"
#include "tests/runtime/fixture_util.h"

namespace seqboat::testing {

// Makes the backend under test with `slots` slots (null on failure, with the test failed).
using BackendFactory = std::function<std::unique_ptr<Backend>(const Model& model, int slots)>;

inline void ExpectBiasedBatchesMatchTheReference(const BackendFactory& make,
                                                 float logit_tolerance) {
  int models_with_biases = 0;
  for (const std::string& name : FixtureModels()) {
    const std::vector<std::vector<float>> biases = FixtureActivationBiases(name);
    if (biases.empty()) continue;
    ++models_with_biases;
    auto model = Model::Load(FixturesDir() + "/" + name + "/model.safetensors");
    ASSERT_TRUE(model.ok()) << model.status();
    const int V = (*model)->config().vocab_size, L = (*model)->config().layers;
    const int S = 1 + static_cast<int>(biases.size());
    std::vector<Expected> expected{LoadExpected(name, 0, "exact")};
    for (size_t j = 0; j < biases.size(); ++j)
      expected.push_back(LoadExpected(name, 0, "exact.bias" + std::to_string(j)));
    for (int s = 1; s < S; ++s)  // else the check could not tell a bias from none
      EXPECT_NE(expected[s].activations, expected[0].activations) << name << " bias " << s - 1;
    std::unique_ptr<Backend> backend = make(**model, S);
    ASSERT_NE(backend, nullptr);
    const int64_t T = expected[0].tokens.size();
    for (int64_t t = 0; t < T;) {
      const int64_t n = t == 0 ? 9 : 1;
      std::vector<SequenceChunk> batch;
      for (int s = 0; s < S; ++s) {
        batch.push_back({s, absl::MakeConstSpan(expected[0].tokens.data() + t, n), true,
                         s == 0 ? absl::Span<const float>() : absl::MakeConstSpan(biases[s - 1])});
      }
      std::vector<float> logits(S * n * V);
      std::vector<uint8_t> activations(S * n * L);
      ASSERT_TRUE(
          backend->Forward(batch, {absl::MakeSpan(logits), absl::MakeSpan(activations), {}}).ok());
      for (int s = 0; s < S; ++s) {
        float worst = 0.0f;
        int mismatches = 0;
        for (int64_t i = 0; i < n; ++i) {
          for (int v = 0; v < V; ++v) {
            worst = std::max(worst, std::fabs(logits[(s * n + i) * V + v] -
                                              expected[s].logits[(t + i) * V + v]));
          }
          for (int l = 0; l < L; ++l) {
            mismatches +=
                activations[(s * n + i) * L + l] != expected[s].activations[l * T + t + i];
          }
        }
        EXPECT_LE(worst, logit_tolerance) << name << " row " << s << " position " << t;
        EXPECT_EQ(mismatches, 0) << name << " row " << s << " position " << t;
      }
      t += n;
    }
  }
  EXPECT_GE(models_with_biases, 1) << "no fixture has activation biases";
}

}  // namespace seqboat::testing
