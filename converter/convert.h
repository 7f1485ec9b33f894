// The conversion pipeline behind seqboat-convert: checkpoint + dict.txt -> model file.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "converter/fairseq_config.h"
#include "converter/torch_checkpoint.h"
#include "runtime/util/dtype.h"

namespace seqboat::convert {

inline constexpr char kConverterVersion[] = "seqboat-convert 0.1.0";

struct ConvertOptions {
  std::string checkpoint_path;
  std::string dict_path;
  std::string out_path;
  DType dtype = DType::kF32;
  // Receives progress lines while large checkpoints convert; may be empty.
  std::function<void(const std::string&)> progress;
};

struct ConvertReport {
  FairseqModelConfig model;     // config, arch, defaults applied
  std::string args_origin;      // "args" or "cfg.model"
  std::string tokenizer_style;  // "byte", "char", "word"
  DType dtype = DType::kF32;
  int tensors = 0;              // tensors written
  int tensors_copied = 0;       // strided, byte-swapped or dtype-converted on the way
  int64_t parameter_count = 0;  // elements written (as Model::Load counts them)
  uint64_t checkpoint_bytes = 0;
  uint64_t output_bytes = 0;
  std::string source_sha256;
  std::vector<std::string> skipped;          // top-level keys left unread
  std::vector<std::string> foreign_globals;  // globals outside the allow-list (never called)
};

// Converts, writes `out_path` atomically, then loads it back with Model::Load; the output
// is removed again if that fails. Errors name the file, entry, tensor or arg at fault.
absl::StatusOr<ConvertReport> ConvertCheckpoint(const ConvertOptions& options);

// The human summary seqboat-convert prints.
std::string FormatReport(const ConvertReport& report, const ConvertOptions& options);

// --inspect: the args and every tensor (name, dtype, shape) without converting.
absl::StatusOr<std::string> InspectCheckpoint(const std::string& path);
// The same report for an open checkpoint; never fails past opening.
std::string DescribeCheckpoint(const TorchCheckpoint& checkpoint);

// Globals torch checkpoints legitimately name and whose calls the unpickler interprets or
// the converter reads (tensor rebuilds, storage types, OrderedDict, argparse.Namespace...).
bool IsAllowListedGlobal(const std::string& module_dot_name);

}  // namespace seqboat::convert
