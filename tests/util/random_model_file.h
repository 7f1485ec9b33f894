// Small random model files for tests: every tensor drawn N(0, 1) scaled by its fan-in, so that
// activations stay O(1) at any size, with decisive router rows (few near-ties between the two
// router logits) and a router that can be forced on or off. Shared by the CPU consistency
// sweep and the GPU tests. (Benchmarks use bench/random_model.h instead: realistic initial
// values and a router bias calibrated to a wanted activation rate.)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "runtime/model/config.h"
#include "runtime/util/dtype.h"

namespace seqboat::test_util {

// How the router of a random model behaves.
enum class Routing {
  kBalanced,  // the random rows decide (some tokens activate, some do not)
  kAllOn,     // every token activates every layer's GAU
  kAllOff,    // none does
};

struct RandomModelSpec {
  ModelConfig config;
  Routing routing = Routing::kBalanced;
  uint64_t seed = 1;
  DType dtype = DType::kF32;  // of every tensor in the file
};

// A small config (L=2, D=12, Z=8, H=10, N=3, w=5, V=23, T=9); tweak fields before use.
ModelConfig SmallConfig();

// Writes a random model file to `path`. The values depend on the spec only (std::mt19937_64
// and std::normal_distribution: the same on one standard library, not across them).
absl::Status WriteRandomModel(const RandomModelSpec& spec, const std::string& path);

// Writes a copy of the model file at `from` with every tensor converted to `dtype`.
absl::Status ConvertModelFile(const std::string& from, const std::string& to, DType dtype);

// A path under the temp directory, unique within this process and among processes.
std::string TempPath(const std::string& stem);

// `count` ids in [2, vocab): never <s> (0) or the padding id (1).
std::vector<int32_t> RandomTokens(int64_t count, int vocab, uint64_t seed);

}  // namespace seqboat::test_util
