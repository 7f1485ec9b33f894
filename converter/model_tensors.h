// Picks the state-dict tensors a model file needs (ExpectedTensors of the config) and checks
// each one's presence and shape against the config before anything is read; any tensor the
// config does not account for is refused, so no part of the model is silently dropped.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "converter/fairseq_checkpoint.h"
#include "converter/pickle_value.h"
#include "runtime/model/config.h"

namespace seqboat::convert {

inline constexpr char kStateDictPrefix[] = "decoder.";

struct SelectedTensor {
  std::string name;         // model-file name (no "decoder." prefix)
  std::string source_name;  // state-dict name
  const TensorInfo* tensor = nullptr;
};

// Errors name the tensor, its shape, the required shape and the args behind it. `args_origin`
// ("args", "cfg.model") and `dict_path` only shape the messages.
absl::StatusOr<std::vector<SelectedTensor>> SelectModelTensors(const std::string& label,
                                                               const FairseqCheckpoint& checkpoint,
                                                               const ModelConfig& config,
                                                               const std::string& dict_path);

// The output_projection.weight entry when the config ties embeddings and the state dict
// still holds it (fairseq saves the shared parameter under both names), else null.
const TensorInfo* TiedOutputProjection(const FairseqCheckpoint& checkpoint,
                                       const ModelConfig& config);

}  // namespace seqboat::convert
