// ConvertCheckpoint: read, validate, convert dtypes, write, verify by loading.
#include "converter/convert.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "converter/fairseq_checkpoint.h"
#include "converter/model_tensors.h"
#include "converter/torch_checkpoint.h"
#include "converter/vocabulary.h"
#include "runtime/model/model.h"
#include "runtime/model/safetensors.h"
#include "runtime/util/status_macros.h"

namespace seqboat::convert {
namespace {

constexpr uint64_t kProgressThresholdBytes = uint64_t{32} << 20;

// Hex SHA-256 of a file, read in chunks (a mapping would pull every page into memory).
absl::StatusOr<std::string> Sha256File(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> context(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  bool ok = context != nullptr && EVP_DigestInit_ex(context.get(), EVP_sha256(), nullptr) == 1;
  std::vector<uint8_t> buffer(size_t{4} << 20);
  while (ok) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = n == 0;
      break;
    }
    ok = EVP_DigestUpdate(context.get(), buffer.data(), static_cast<size_t>(n)) == 1;
  }
  ::close(fd);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (!ok || EVP_DigestFinal_ex(context.get(), digest, &length) != 1) {
    return absl::InternalError(absl::StrCat(path, ": cannot hash"));
  }
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) absl::StrAppendFormat(&hex, "%02x", digest[i]);
  return hex;
}

float LoadF32(const uint8_t* p) {
  float value;
  std::memcpy(&value, p, 4);
  return value;
}
uint16_t LoadU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

absl::StatusOr<DType> ModelDType(TorchDType dtype) {
  switch (dtype) {
    case TorchDType::kFloat32: return DType::kF32;
    case TorchDType::kFloat16: return DType::kF16;
    case TorchDType::kBFloat16: return DType::kBF16;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unsupported dtype ", TorchDTypeName(dtype)));
  }
}

float ElementToFloat(DType dtype, const uint8_t* p) {
  switch (dtype) {
    case DType::kF32: return LoadF32(p);
    case DType::kF16: return F16ToFloat(LoadU16(p));
    case DType::kBF16: return Bf16ToFloat(LoadU16(p));
  }
  return 0.0f;
}

// Converts `in` to `out_dtype`, checking every value is finite before and after. When no
// conversion is needed the result views `in`'s bytes.
absl::Status ConvertElements(const std::string& label, const std::string& name,
                             const TensorBytes& in, DType out_dtype, absl::Span<const uint8_t>* out,
                             std::vector<uint8_t>* owned) {
  ASSIGN_OR_RETURN(DType in_dtype, ModelDType(in.dtype));
  const size_t in_size = DTypeSize(in_dtype);
  for (int64_t i = 0; i < in.numel; ++i) {
    const float value = ElementToFloat(in_dtype, in.bytes.data() + i * in_size);
    if (!std::isfinite(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": tensor \"", name, "\" holds a non-finite value (", value,
                       ") at element ", i, "; a model file must be finite"));
    }
  }
  if (in_dtype == out_dtype) {
    *out = in.bytes;
    return absl::OkStatus();
  }
  owned->resize(static_cast<size_t>(in.numel) * DTypeSize(out_dtype));
  for (int64_t i = 0; i < in.numel; ++i) {
    const float value = ElementToFloat(in_dtype, in.bytes.data() + i * in_size);
    uint8_t* dst = owned->data() + i * DTypeSize(out_dtype);
    if (out_dtype == DType::kF32) {
      std::memcpy(dst, &value, 4);
      continue;
    }
    const uint16_t bits = out_dtype == DType::kF16 ? FloatToF16(value) : FloatToBf16(value);
    if (!std::isfinite(ElementToFloat(out_dtype, reinterpret_cast<const uint8_t*>(&bits)))) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": tensor \"", name, "\" value ", value, " at element ", i,
                       " overflows ", DTypeName(out_dtype), "; convert with --dtype ",
                       out_dtype == DType::kF16 ? "bf16 or fp32" : "fp32"));
    }
    dst[0] = static_cast<uint8_t>(bits);
    dst[1] = static_cast<uint8_t>(bits >> 8);
  }
  *out = absl::MakeConstSpan(*owned);
  return absl::OkStatus();
}

std::string Megabytes(uint64_t bytes) { return absl::StrFormat("%.1f MB", bytes / 1e6); }

}  // namespace

bool IsAllowListedGlobal(const std::string& name) {
  static const auto* kAllowed = new absl::flat_hash_set<std::string>{
      "torch._utils._rebuild_tensor_v2",
      "torch._utils._rebuild_tensor",
      "torch._utils._rebuild_parameter",
      "torch._utils._rebuild_parameter_with_state",
      "collections.OrderedDict",
      "argparse.Namespace",
      "builtins.set",
      "builtins.frozenset",
      "_codecs.encode",
  };
  if (kAllowed->contains(name)) return true;
  if (absl::StartsWith(name, "torch.") && absl::EndsWith(name, "Storage") &&
      name.find('.', 6) == std::string::npos) {
    return true;
  }
  return absl::StartsWith(name, "omegaconf.dictconfig.DictConfig") ||
         absl::StartsWith(name, "omegaconf.nodes.");
}

absl::StatusOr<ConvertReport> ConvertCheckpoint(const ConvertOptions& options) {
  ConvertReport report;
  report.dtype = options.dtype;
  // Writing over an input would destroy it (the rename replaces it).
  for (const std::string* input : {&options.checkpoint_path, &options.dict_path}) {
    std::error_code error;
    if (std::filesystem::equivalent(*input, options.out_path, error)) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.out_path, ": is the input ", *input, "; choose another --out"));
    }
  }
  ASSIGN_OR_RETURN(Vocabulary vocab, ReadVocabulary(options.dict_path));
  report.tokenizer_style = vocab.style;

  std::map<std::string, std::string> metadata;
  std::vector<TensorToWrite> to_write;
  std::vector<TensorBytes> read_tensors;        // keep views/copies alive until written
  std::vector<std::vector<uint8_t>> converted;  // dtype conversions
  {
    ASSIGN_OR_RETURN(std::unique_ptr<TorchCheckpoint> checkpoint,
                     TorchCheckpoint::Open(options.checkpoint_path));
    const std::string& label = checkpoint->label();
    report.checkpoint_bytes = checkpoint->file_size();
    for (const std::string& global : checkpoint->pickle().globals()) {
      if (!IsAllowListedGlobal(global)) report.foreign_globals.push_back(global);
    }
    ASSIGN_OR_RETURN(FairseqCheckpoint fairseq, ReadFairseqCheckpoint(checkpoint->root(), label));
    report.skipped = fairseq.skipped;
    report.args_origin = fairseq.args.origin();
    auto model =
        ModelConfigFromArgs(fairseq.args, fairseq.task, static_cast<int>(vocab.symbols.size()));
    if (!model.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(label, ": ", model.status().message()));
    }
    report.model = *std::move(model);
    const ModelConfig& config = report.model.config;
    // The runtime's own validation of the config, before any tensor is read.
    const std::string config_json = ModelConfigToJson(config);
    if (auto parsed = ParseModelConfig(config_json); !parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(label, ": ", parsed.status().message()));
    }
    ASSIGN_OR_RETURN(std::vector<SelectedTensor> selected,
                     SelectModelTensors(label, fairseq, config, options.dict_path));

    // Tied embeddings: fairseq stores the shared parameter under both names; it must really
    // be the same data, or the args lie about the tie.
    if (const TensorInfo* output = TiedOutputProjection(fairseq, config)) {
      const TensorInfo* embed = selected.front().tensor;  // embed_tokens.weight comes first
      if (!TorchCheckpoint::SameView(*embed, *output)) {
        ASSIGN_OR_RETURN(TensorBytes a,
                         checkpoint->ReadTensor(*embed, "decoder.embed_tokens.weight"));
        ASSIGN_OR_RETURN(TensorBytes b,
                         checkpoint->ReadTensor(*output, "decoder.output_projection.weight"));
        if (a.dtype != b.dtype || a.shape != b.shape ||
            std::memcmp(a.bytes.data(), b.bytes.data(), a.bytes.size()) != 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              label, ": ", report.args_origin,
              ".share_decoder_input_output_embed is True but decoder.output_projection.weight "
              "differs from decoder.embed_tokens.weight"));
        }
      }
    }

    // Write in state-dict order (the reference's order too).
    absl::flat_hash_map<std::string, size_t> order;
    for (size_t i = 0; i < fairseq.model.size(); ++i) order[fairseq.model[i].name] = i;
    std::sort(selected.begin(), selected.end(),
              [&](const SelectedTensor& a, const SelectedTensor& b) {
                return order[a.source_name] < order[b.source_name];
              });

    uint64_t total_bytes = 0;
    for (const SelectedTensor& s : selected) {
      int64_t numel = 1;
      for (int64_t d : s.tensor->shape) numel *= d;
      total_bytes += static_cast<uint64_t>(numel) * TorchDTypeSize(s.tensor->storage_info().dtype);
    }
    const bool show_progress = options.progress && total_bytes >= kProgressThresholdBytes;
    read_tensors.reserve(selected.size());
    converted.reserve(selected.size());
    uint64_t done_bytes = 0;
    int last_percent = -1;
    for (const SelectedTensor& s : selected) {
      ASSIGN_OR_RETURN(TensorBytes bytes, checkpoint->ReadTensor(*s.tensor, s.source_name));
      std::vector<uint8_t>& owned = converted.emplace_back();
      absl::Span<const uint8_t> out;
      RETURN_IF_ERROR(ConvertElements(label, s.source_name, bytes, options.dtype, &out, &owned));
      if (bytes.copied() || !owned.empty()) ++report.tensors_copied;
      to_write.push_back({s.name, options.dtype, s.tensor->shape, out});
      report.parameter_count += bytes.numel;
      done_bytes += bytes.bytes.size();
      read_tensors.push_back(std::move(bytes));
      const int percent = total_bytes == 0 ? 100 : static_cast<int>(100 * done_bytes / total_bytes);
      if (show_progress && percent / 10 != last_percent / 10) {
        last_percent = percent;
        options.progress(absl::StrCat("converting: ", to_write.size(), "/", selected.size(),
                                      " tensors, ", Megabytes(done_bytes), " of ",
                                      Megabytes(total_bytes)));
      }
    }
    report.tensors = static_cast<int>(to_write.size());

    ASSIGN_OR_RETURN(report.source_sha256, Sha256File(options.checkpoint_path));
    metadata = {
        {"format", "seqboat"},
        {"format_version", std::to_string(kModelFormatVersion)},
        {"config", config_json},
        {"tokenizer", vocab.tokenizer_json},
        {"source_sha256", report.source_sha256},
        {"converter_version", kConverterVersion},
    };
    if (show_progress) options.progress(absl::StrCat("writing ", options.out_path));
    RETURN_IF_ERROR(WriteSafetensors(options.out_path, metadata, to_write));
    // The checkpoint mapping is released here, before the output is loaded back.
  }
  to_write.clear();
  read_tensors.clear();
  converted.clear();

  auto loaded = Model::Load(options.out_path);
  if (!loaded.ok()) {
    std::remove(options.out_path.c_str());
    return absl::InternalError(
        absl::StrCat("the converted file does not load (removed it): ", loaded.status().message()));
  }
  report.output_bytes = (*loaded)->file().file_size();
  report.parameter_count = (*loaded)->parameter_count();
  return report;
}

std::string FormatReport(const ConvertReport& report, const ConvertOptions& options) {
  const ModelConfig& c = report.model.config;
  std::string out =
      absl::StrCat("seqboat-convert: ", options.checkpoint_path, " -> ", options.out_path, "\n");
  absl::StrAppend(&out, "  config      from ", report.args_origin,
                  report.model.arch.empty() ? "" : absl::StrCat(", arch ", report.model.arch),
                  "\n");
  absl::StrAppend(&out, "  layers      ", c.layers, "  (D=", c.embed_dim, " Z=", c.z_dim,
                  " H=", c.hidden_dim, " N=", c.n_dim, ", FFN ",
                  c.ffn_dim > 0 ? absl::StrCat("F=", c.ffn_dim) : std::string("none"), ")\n");
  absl::StrAppend(&out, "  memory      w=", c.window,
                  c.window <= 0 ? " (SeqBoat-full: serve with an explicit FIFO bound)" : "",
                  ", truncation_length ",
                  c.truncation_length > 0 ? absl::StrCat(c.truncation_length) : "none", "\n");
  absl::StrAppend(
      &out, "  attention   ", AttentionKindName(c.attention), ", positions ",
      PositionKindName(c.position),
      c.position == PositionKind::kSimple ? absl::StrCat(" (P=", c.max_positions, ")") : "", "\n");
  absl::StrAppend(&out, "  norm        ", NormKindName(c.norm),
                  c.normalize_before ? ", pre-norm" : ", post-norm",
                  c.normalize_before ? (c.final_norm_affine ? ", affine final norm"
                                                            : ", final norm without affine")
                                     : "",
                  c.normalize_embedding ? ", embedding norm" : "", "\n");
  absl::StrAppend(&out, "  embeddings  ", c.tied_embeddings ? "tied" : "untied",
                  c.scale_embedding ? ", scaled by sqrt(D)" : ", unscaled", "\n");
  absl::StrAppend(&out, "  vocabulary  ", report.tokenizer_style, ", ", c.vocab_size, " symbols (",
                  c.vocab_size - 4, " from ", options.dict_path, " + 4 specials)\n");
  absl::StrAppend(&out, "  parameters  ", report.parameter_count, " in ", report.tensors,
                  " tensors (", report.tensors_copied, " copied: strided or converted)\n");
  absl::StrAppend(&out, "  output      ", Megabytes(report.output_bytes), " ",
                  DTypeName(report.dtype), " (checkpoint ", Megabytes(report.checkpoint_bytes),
                  ", sha256 ", report.source_sha256.substr(0, 16), "...)\n");
  for (const std::string& line : report.model.defaults) {
    absl::StrAppend(&out, "  default     ", line, " (not in the checkpoint)\n");
  }
  if (!report.skipped.empty()) {
    absl::StrAppend(&out, "  skipped     ", absl::StrJoin(report.skipped, ", "),
                    " (training leftovers)\n");
  }
  if (!report.foreign_globals.empty()) {
    absl::StrAppend(&out, "  note        the pickle names ", report.foreign_globals.size(),
                    " globals outside the allow-list, recorded and never called: ",
                    absl::StrJoin(report.foreign_globals, ", "), "\n");
  }
  return out;
}

}  // namespace seqboat::convert
