// seqboat-convert as a program: exit status 0 with a summary, 2 with a one-line named error.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/converter/converter_test_util.h"

namespace seqboat::convert {
namespace {

using testing::ConverterFixture;
using testing::ScratchDir;

struct RunResult {
  int status = -1;
  std::string output;  // stdout and stderr
};

RunResult RunConvert(const std::string& args) {
  RunResult run;
  const std::string command = absl::StrCat(SEQBOAT_CONVERT_BINARY, " ", args, " 2>&1");
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return run;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    run.output.append(buffer.data(), n);
  const int raw = ::pclose(pipe);
  run.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return run;
}

TEST(Cli, ConvertsAndSummarises) {
  ScratchDir dir;
  const std::string out = dir / "m.safetensors";
  const RunResult run =
      RunConvert(absl::StrCat("--checkpoint ", ConverterFixture("leftovers.pt"), " --dict ",
                              ConverterFixture("dict.txt"), " --out ", out, " --dtype bf16"));
  EXPECT_EQ(run.status, 0) << run.output;
  EXPECT_TRUE(absl::StrContains(run.output, "parameters")) << run.output;
  EXPECT_TRUE(absl::StrContains(run.output, "BF16")) << run.output;
  EXPECT_TRUE(std::filesystem::exists(out));
}

TEST(Cli, InspectPrintsTensors) {
  const RunResult run = RunConvert(absl::StrCat("--inspect ", ConverterFixture("basic.pt")));
  EXPECT_EQ(run.status, 0) << run.output;
  EXPECT_TRUE(
      absl::StrContains(run.output, "decoder.layers.1.slag_layer.h_proj.weight  float32 [8, 6]"))
      << run.output;
}

TEST(Cli, BadInputExitsTwoWithTheMessage) {
  ScratchDir dir;
  const std::string out = dir / "m.safetensors";
  for (const char* fixture : {"bad_os_system_args.pt", "bad_deep_nesting.pt",
                              "bad_missing_data_pkl.pt", "bad_shape_mismatch.pt"}) {
    const RunResult run =
        RunConvert(absl::StrCat("--checkpoint ", ConverterFixture(fixture), " --dict ",
                                ConverterFixture("dict.txt"), " --out ", out));
    EXPECT_EQ(run.status, 2) << fixture << ": " << run.output;
    EXPECT_TRUE(absl::StartsWith(run.output, "seqboat-convert: ")) << run.output;
    EXPECT_TRUE(absl::StrContains(run.output, fixture)) << run.output;
    EXPECT_FALSE(std::filesystem::exists(out));
  }
  const RunResult inspect =
      RunConvert(absl::StrCat("--inspect ", ConverterFixture("bad_length_2_62.pt")));
  EXPECT_EQ(inspect.status, 2) << inspect.output;
  EXPECT_TRUE(absl::StrContains(inspect.output, "BINUNICODE8")) << inspect.output;
}

TEST(Cli, UsageErrorsExitTwo) {
  EXPECT_EQ(RunConvert("--checkpoint x.pt").status, 2);
  EXPECT_EQ(RunConvert(absl::StrCat("--checkpoint ", ConverterFixture("basic.pt"), " --dict ",
                                    ConverterFixture("dict.txt"), " --out /tmp/x --dtype fp8"))
                .status,
            2);
  EXPECT_EQ(RunConvert("stray_argument").status, 2);
}

}  // namespace
}  // namespace seqboat::convert
