// seqboat-convert: a fairseq SeqBoat checkpoint + dict.txt -> the model file, without Python
// and without executing anything from the checkpoint. --inspect lists a checkpoint's args and
// tensors. Exit status: 0 done, 2 bad input or usage (the message says what and where).
#include <cstdio>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "converter/convert.h"

ABSL_FLAG(std::string, checkpoint, "", "fairseq checkpoint (.pt written by torch.save).");
ABSL_FLAG(std::string, dict, "", "The data directory's dict.txt the model was trained with.");
ABSL_FLAG(std::string, out, "", "Model file to write (.safetensors).");
ABSL_FLAG(std::string, dtype, "fp32", "Weights in the model file: fp32, fp16 or bf16.");
ABSL_FLAG(std::string, inspect, "",
          "List this checkpoint's args and every tensor (name, dtype, shape); convert nothing.");

namespace {

constexpr int kExitBadInput = 2;

int Fail(const std::string& message) {
  std::cerr << "seqboat-convert: " << message << "\n";
  return kExitBadInput;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "fairseq SeqBoat checkpoint -> model file.\n"
      "  seqboat-convert --checkpoint checkpoint_best.pt --dict dict.txt --out model.safetensors "
      "[--dtype fp32|fp16|bf16]\n"
      "  seqboat-convert --inspect checkpoint_best.pt");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    return Fail(absl::StrCat("unexpected argument \"", positional[1], "\"; see --help"));
  }

  if (const std::string path = absl::GetFlag(FLAGS_inspect); !path.empty()) {
    auto text = seqboat::convert::InspectCheckpoint(path);
    if (!text.ok()) return Fail(std::string(text.status().message()));
    std::cout << *text;
    return 0;
  }

  seqboat::convert::ConvertOptions options;
  options.checkpoint_path = absl::GetFlag(FLAGS_checkpoint);
  options.dict_path = absl::GetFlag(FLAGS_dict);
  options.out_path = absl::GetFlag(FLAGS_out);
  if (options.checkpoint_path.empty() || options.dict_path.empty() || options.out_path.empty()) {
    return Fail("--checkpoint, --dict and --out are required (or --inspect PATH); see --help");
  }
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (dtype == "fp32") {
    options.dtype = seqboat::DType::kF32;
  } else if (dtype == "fp16") {
    options.dtype = seqboat::DType::kF16;
  } else if (dtype == "bf16") {
    options.dtype = seqboat::DType::kBF16;
  } else {
    return Fail(absl::StrCat("--dtype \"", dtype, "\" is not fp32, fp16 or bf16"));
  }
  options.progress = [](const std::string& line) { std::cerr << "  " << line << "\n"; };

  const absl::Time start = absl::Now();
  auto report = seqboat::convert::ConvertCheckpoint(options);
  if (!report.ok()) return Fail(std::string(report.status().message()));
  std::cout << seqboat::convert::FormatReport(*report, options);
  std::cout << "  took        " << absl::FormatDuration(absl::Now() - start) << "\n";
  return 0;
}
