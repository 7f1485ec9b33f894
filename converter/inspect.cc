// --inspect: what a checkpoint holds (args, tensors, globals), for debugging conversions.
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "converter/convert.h"
#include "converter/fairseq_checkpoint.h"
#include "converter/torch_checkpoint.h"
#include "runtime/util/status_macros.h"

namespace seqboat::convert {
namespace {

bool IsContiguous(const TensorInfo& t) {
  int64_t expected = 1;
  for (size_t d = t.shape.size(); d-- > 0;) {
    if (t.shape[d] != 1 && t.stride[d] != expected) return false;
    expected *= t.shape[d];
  }
  return true;
}

}  // namespace

absl::StatusOr<std::string> InspectCheckpoint(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<TorchCheckpoint> checkpoint, TorchCheckpoint::Open(path));
  return DescribeCheckpoint(*checkpoint);
}

std::string DescribeCheckpoint(const TorchCheckpoint& checkpoint) {
  std::string out;
  absl::StrAppend(&out, "checkpoint  ", checkpoint.label(), "\n");
  absl::StrAppend(&out, "  archive   \"", checkpoint.archive_name(), "\", ",
                  checkpoint.archive().entries().size(), " zip entries, ", checkpoint.file_size(),
                  " bytes, ", checkpoint.big_endian() ? "big" : "little", "-endian storages, ",
                  checkpoint.pickle().value_count(), " pickled values\n");

  const Value& root = checkpoint.root();
  if (root.kind != Kind::kDict) {
    absl::StrAppend(&out, "top level   ", Describe(root),
                    " (not a dict: not a fairseq checkpoint)\n");
  }
  auto fairseq = ReadFairseqCheckpoint(root, checkpoint.label());
  if (root.kind == Kind::kDict) {
    absl::StrAppend(&out, "top-level keys\n");
    for (size_t i = 0; i + 1 < root.items.size(); i += 2) {
      absl::StrAppend(&out, "  ", Describe(*root.items[i]), ": ", Describe(*root.items[i + 1]),
                      "\n");
    }
  }
  if (!fairseq.ok()) {
    absl::StrAppend(&out, "not convertible: ", fairseq.status().message(), "\n");
  } else {
    const auto fields = fairseq->args.Fields();
    absl::StrAppend(&out, "model args from ", fairseq->args.origin(), " (", fields.size(),
                    " fields)\n");
    for (const auto& [name, value] : fields) {
      absl::StrAppend(&out, "  ", name, " = ", Describe(*value), "\n");
    }
    absl::StrAppend(&out, "state dict \"model\" (", fairseq->model.size(), " entries)\n");
    // Which tensors share a storage: a tied embedding shows up here.
    absl::flat_hash_map<std::string, std::vector<std::string>> by_storage;
    for (const StateDictEntry& entry : fairseq->model) {
      if (entry.value->kind == Kind::kTensor) {
        by_storage[entry.value->tensor->storage_info().key].push_back(entry.name);
      }
    }
    int64_t parameters = 0;
    for (const StateDictEntry& entry : fairseq->model) {
      if (entry.value->kind != Kind::kTensor) {
        absl::StrAppend(&out, "  ", entry.name, "  ", Describe(*entry.value), "\n");
        continue;
      }
      const TensorInfo& t = *entry.value->tensor;
      int64_t numel = 1;
      for (int64_t d : t.shape) numel *= d;
      parameters += numel;
      absl::StrAppend(&out, "  ", entry.name, "  ", TorchDTypeName(t.storage_info().dtype), " [",
                      absl::StrJoin(t.shape, ", "), "]");
      if (!IsContiguous(t)) {
        absl::StrAppend(&out, "  strides (", absl::StrJoin(t.stride, ", "), ")");
      }
      if (t.storage_offset != 0) absl::StrAppend(&out, "  offset ", t.storage_offset);
      const auto& sharing = by_storage[t.storage_info().key];
      if (sharing.size() > 1) {
        std::vector<std::string> others;
        for (const std::string& name : sharing) {
          if (name != entry.name) others.push_back(name);
        }
        absl::StrAppend(&out, "  shares storage ", t.storage_info().key, " with ",
                        absl::StrJoin(others, ", "));
      }
      absl::StrAppend(&out, "\n");
    }
    absl::StrAppend(&out, "  ", parameters, " elements in the state dict's tensors\n");
  }
  absl::StrAppend(&out, "globals named by the pickle (recorded, never called)\n");
  for (const std::string& global : checkpoint.pickle().globals()) {
    absl::StrAppend(&out, "  ", global,
                    IsAllowListedGlobal(global) ? "" : "  (outside the allow-list: opaque)", "\n");
  }
  return out;
}

}  // namespace seqboat::convert
