// libFuzzer target: the zip reader, the restricted unpickler and everything the converter
// reads from them. Inputs starting with "PK" are whole checkpoints; any other input is a
// bare pickle (data.pkl), so the unpickler is reached without a zip wrapper.
#include <cstdint>
#include <cstring>

#include "converter/fairseq_checkpoint.h"
#include "converter/fairseq_config.h"
#include "converter/model_tensors.h"
#include "converter/torch_checkpoint.h"
#include "converter/unpickler.h"

namespace seqboat::convert {
namespace {

// Limits well below the defaults keep each run fast and inside libFuzzer's RSS limit.
UnpicklerLimits FuzzLimits() {
  UnpicklerLimits limits;
  limits.max_values = 1 << 16;
  limits.max_memo = 1 << 16;
  limits.max_elements = 1 << 18;
  limits.max_stack = 1 << 16;
  return limits;
}

// What a conversion reads: args, config, the state dict's tensors (and their bytes when a
// checkpoint is given).
void Exercise(const Value& root, const TorchCheckpoint* checkpoint) {
  volatile size_t sink = Describe(root).size();
  auto fairseq = ReadFairseqCheckpoint(root, "fuzz");
  if (!fairseq.ok()) return;
  for (const auto& [name, value] : fairseq->args.Fields()) sink = sink + Describe(*value).size();
  int vocab_size = 10;
  for (const StateDictEntry& entry : fairseq->model) {
    sink = sink + Describe(*entry.value).size();
    if (entry.name == "decoder.embed_tokens.weight" && entry.value->kind == Kind::kTensor &&
        entry.value->tensor->shape.size() == 2 && entry.value->tensor->shape[0] > 4 &&
        entry.value->tensor->shape[0] < (1 << 20)) {
      vocab_size = static_cast<int>(entry.value->tensor->shape[0]);
    }
  }
  auto model = ModelConfigFromArgs(fairseq->args, fairseq->task, vocab_size);
  if (!model.ok()) return;
  auto selected = SelectModelTensors("fuzz", *fairseq, model->config, "dict.txt");
  if (!selected.ok() || checkpoint == nullptr) return;
  for (const SelectedTensor& tensor : *selected) {
    auto bytes = checkpoint->ReadTensor(*tensor.tensor, tensor.source_name);
    if (bytes.ok() && !bytes->bytes.empty()) {
      sink = sink + bytes->bytes[0] + bytes->bytes[bytes->bytes.size() - 1];
    }
  }
  (void)sink;
}

}  // namespace
}  // namespace seqboat::convert

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace seqboat::convert;
  const absl::Span<const uint8_t> bytes(data, size);
  if (size >= 2 && data[0] == 'P' && data[1] == 'K') {
    auto checkpoint = TorchCheckpoint::FromBytes(bytes, "fuzz.pt", FuzzLimits());
    if (checkpoint.ok()) Exercise((*checkpoint)->root(), checkpoint->get());
  } else {
    auto pickle = Unpickle(bytes, "fuzz.pkl", FuzzLimits());
    if (pickle.ok()) Exercise((*pickle)->root(), nullptr);
  }
  return 0;
}
