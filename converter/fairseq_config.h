// The model configuration from a fairseq checkpoint's args, following the SeqBoat code's own
// defaults (base_lm_architecture and the registered slag_lm_* architectures) for args the
// checkpoint lacks, and refusing features MODEL.md excludes with a message naming the arg.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "converter/fairseq_checkpoint.h"
#include "runtime/model/config.h"

namespace seqboat::convert {

struct FairseqModelConfig {
  ModelConfig config;
  std::string arch;                   // args.arch (cfg: model._name); empty when absent
  std::vector<std::string> defaults;  // "decoder_n_dim = 16 (slag_lm default)" per missing arg
};

// `vocab_size` is V (len(dict.txt) + 4). `task` may be empty (it is only read for
// max_target_positions when cfg.model lacks it).
absl::StatusOr<FairseqModelConfig> ModelConfigFromArgs(const ArgFields& args, const ArgFields& task,
                                                       int vocab_size);

}  // namespace seqboat::convert
