// seqboat-eval as a user runs it: its .npy outputs equal the reference fixtures in both
// modes, and bad flags or inputs are one-line errors with exit code 2.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/util/npy.h"
#include "tests/runtime/fixture_util.h"

namespace seqboat {
namespace {

std::string Eval() { return std::string(SEQBOAT_BIN_DIR) + "/seqboat-eval"; }

int RunEval(const std::string& args) {
  const int status = std::system((Eval() + " " + args + " > /dev/null 2>&1").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(EvalCli, OutputsMatchTheReferenceInBothModes) {
  const std::string dir = testing::FixturesDir() + "/enwik8_tiny";
  const std::string tmp = std::filesystem::temp_directory_path().string();
  for (const std::string mode : {"step", "prefill"}) {
    for (const std::string horizon : {"exact", "trained"}) {
      const std::string logits = absl::StrCat(tmp, "/eval_cli_logits_", mode, horizon, ".npy");
      const std::string activations = absl::StrCat(tmp, "/eval_cli_act_", mode, horizon, ".npy");
      ASSERT_EQ(RunEval(absl::StrCat("--model ", dir, "/model.safetensors --tokens_file ", dir,
                                     "/seq0.tokens.npy --mode ", mode, " --ema_horizon ", horizon,
                                     " --logits_out ", logits, " --activations_out ", activations)),
                0);
      const testing::Expected expected = testing::LoadExpected("enwik8_tiny", 0, horizon);
      auto got_logits = ReadNpy(logits);
      auto got_activations = ReadNpy(activations);
      ASSERT_TRUE(got_logits.ok() && got_activations.ok());
      EXPECT_EQ(got_logits->shape,
                (std::vector<int64_t>{
                    static_cast<int64_t>(expected.tokens.size()),
                    static_cast<int64_t>(expected.logits.size() / expected.tokens.size())}));
      const std::vector<float> values = *got_logits->AsFloat();
      float worst = 0.0f;
      for (size_t i = 0; i < values.size(); ++i)
        worst = std::max(worst, std::fabs(values[i] - expected.logits[i]));
      EXPECT_LE(worst, 1e-4f) << mode << " " << horizon;
      EXPECT_EQ(*got_activations->AsUint8(), expected.activations) << mode << " " << horizon;
      std::filesystem::remove(logits);
      std::filesystem::remove(activations);
    }
  }
}

TEST(EvalCli, BadInputExitsWithTwo) {
  const std::string model = testing::FixturesDir() + "/enwik8_tiny/model.safetensors";
  EXPECT_EQ(RunEval("--tokens 2,5"), 2);  // no --model
  EXPECT_EQ(RunEval("--model /does/not/exist --tokens 2"), 2);
  EXPECT_EQ(RunEval("--model " + model), 2);  // no sequence
  EXPECT_EQ(RunEval("--model " + model + " --tokens 2,x"), 2);
  EXPECT_EQ(RunEval("--model " + model + " --tokens 2,1"), 2);  // padding id
  EXPECT_EQ(RunEval("--model " + model + " --tokens 2,99999"), 2);
  EXPECT_EQ(RunEval("--model " + model + " --tokens 2 --mode fast"), 2);
  EXPECT_EQ(RunEval("--model " + model + " --tokens 2 --ema_horizon long"), 2);
  EXPECT_EQ(RunEval("--model " + model + " --tokens 2 --no_such_flag"),
            1);  // absl's own flag error
  EXPECT_EQ(RunEval("--model " + model + " --tokens 2,5"), 0);
}

}  // namespace
}  // namespace seqboat
