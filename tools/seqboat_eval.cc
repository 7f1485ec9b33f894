// seqboat-eval: teacher-forces a token sequence through a model file on the CPU backend and
// reports bits per token and GAU activation rates; optionally dumps logits and decisions.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/model/model.h"
#include "runtime/model/tokenizer.h"
#include "runtime/util/npy.h"
#include "runtime/util/status_macros.h"

ABSL_FLAG(std::string, model, "", "Model file (.safetensors written by seqboat-convert).");
ABSL_FLAG(std::string, tokens, "", "Comma-separated token ids, e.g. 2,17,9.");
ABSL_FLAG(std::string, tokens_file, "",
          "File of token ids: .npy (int32/int64) or text separated by commas/whitespace.");
ABSL_FLAG(std::string, text_file, "", "UTF-8 text file, encoded with the model's tokenizer.");
ABSL_FLAG(
    bool, prepend_eos, true,
    "With --text_file: start the sequence with </s> (id 2), fairseq's start-of-sequence token.");
ABSL_FLAG(std::string, mode, "step",
          "step: one decode step per token; prefill: chunks of --prefill_chunk tokens.");
ABSL_FLAG(int, prefill_chunk, 64, "Chunk length in prefill mode.");
ABSL_FLAG(std::string, ema_horizon, "exact",
          "exact (untruncated recurrence) or trained (truncated kernel).");
ABSL_FLAG(int, fifo_capacity, 0,
          "FIFO bound; required only for SeqBoat-full models (chunk_size <= 0).");
ABSL_FLAG(int, threads, 0, "CPU threads (0 = all).");
ABSL_FLAG(std::string, weight_dtype, "as_stored",
          "Matrix dtype: as_stored (the file's f32), bf16 or int8, as seqboat-server's flag: "
          "bits/token then tells what a reduced precision costs.");
ABSL_FLAG(std::string, fifo_dtype, "as_stored",
          "FIFO keys/values dtype: as_stored (f32) or bf16, as seqboat-server's flag.");
ABSL_FLAG(std::string, logits_out, "", "Write logits [T, V] float32 as .npy.");
ABSL_FLAG(std::string, activations_out, "", "Write GAU activation decisions [L, T] uint8 as .npy.");

namespace seqboat {
namespace {

absl::StatusOr<std::vector<int32_t>> ParseIdList(absl::string_view text, absl::string_view source) {
  std::vector<int32_t> ids;
  for (absl::string_view part :
       absl::StrSplit(text, absl::ByAnyChar(", \t\r\n"), absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": \"", part, "\" is not a token id"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

absl::StatusOr<std::vector<int32_t>> LoadTokens(const Model& model) {
  const std::string tokens = absl::GetFlag(FLAGS_tokens),
                    tokens_file = absl::GetFlag(FLAGS_tokens_file),
                    text_file = absl::GetFlag(FLAGS_text_file);
  const int given = !tokens.empty() + !tokens_file.empty() + !text_file.empty();
  if (given != 1) {
    return absl::InvalidArgumentError("give exactly one of --tokens, --tokens_file, --text_file");
  }
  if (!tokens.empty()) return ParseIdList(tokens, "--tokens");
  if (!tokens_file.empty()) {
    if (absl::EndsWith(tokens_file, ".npy")) {
      ASSIGN_OR_RETURN(NpyArray array, ReadNpy(tokens_file));
      return array.AsInt32();
    }
    ASSIGN_OR_RETURN(std::string text, ReadFile(tokens_file));
    return ParseIdList(text, tokens_file);
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(text_file));
  ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::FromJson(model.tokenizer_json()));
  return absl::GetFlag(FLAGS_prepend_eos) ? tokenizer.EncodePrompt(text) : tokenizer.Encode(text);
}

absl::Status Run() {
  if (absl::GetFlag(FLAGS_model).empty()) return absl::InvalidArgumentError("--model is required");
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "step" && mode != "prefill") {
    return absl::InvalidArgumentError(absl::StrCat("--mode=", mode, ": expected step or prefill"));
  }
  absl::StatusOr<EmaHorizon> horizon = ParseEmaHorizon(absl::GetFlag(FLAGS_ema_horizon));
  if (!horizon.ok())
    return absl::InvalidArgumentError(absl::StrCat("--ema_horizon: ", horizon.status().message()));
  absl::StatusOr<WeightDType> weight_dtype = ParseWeightDType(absl::GetFlag(FLAGS_weight_dtype));
  if (!weight_dtype.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--weight_dtype: ", weight_dtype.status().message()));
  }
  absl::StatusOr<WeightDType> fifo_dtype = ParseWeightDType(absl::GetFlag(FLAGS_fifo_dtype));
  if (!fifo_dtype.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--fifo_dtype: ", fifo_dtype.status().message()));
  }
  const int chunk_len = absl::GetFlag(FLAGS_prefill_chunk);
  if (chunk_len < 1) return absl::InvalidArgumentError("--prefill_chunk must be >= 1");

  const absl::Time load_start = absl::Now();
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Load(absl::GetFlag(FLAGS_model)));
  const double load_ms = absl::ToDoubleMilliseconds(absl::Now() - load_start);
  ASSIGN_OR_RETURN(std::vector<int32_t> tokens, LoadTokens(*model));
  if (tokens.empty()) return absl::InvalidArgumentError("the token sequence is empty");
  if (std::optional<BadTokenId> bad = FindBadTokenId(tokens, model->config().vocab_size)) {
    return absl::InvalidArgumentError(absl::StrCat("token ", bad->index, ": ", bad->problem));
  }

  CpuBackendOptions options;
  options.num_slots = 1;
  options.ema_horizon = *horizon;
  options.fifo_capacity = absl::GetFlag(FLAGS_fifo_capacity);
  options.num_threads = absl::GetFlag(FLAGS_threads);
  options.weight_dtype = *weight_dtype;
  options.fifo_dtype = *fifo_dtype;
  ASSIGN_OR_RETURN(std::unique_ptr<CpuBackend> backend, CpuBackend::Create(*model, options));

  const ModelConfig& config = model->config();
  const int64_t T = tokens.size(), V = config.vocab_size, L = config.layers;
  std::vector<float> logits(T * V);
  std::vector<uint8_t> activations(T * L);  // [T, L] as the backend writes it
  const int64_t step = mode == "step" ? 1 : chunk_len;
  const absl::Time run_start = absl::Now();
  for (int64_t begin = 0; begin < T; begin += step) {
    const int64_t n = std::min<int64_t>(step, T - begin);
    SequenceChunk chunk{0, absl::MakeConstSpan(tokens.data() + begin, n), /*all_logits=*/true};
    ForwardOutputs out{absl::MakeSpan(logits.data() + begin * V, n * V),
                       absl::MakeSpan(activations.data() + begin * L, n * L),
                       {}};
    RETURN_IF_ERROR(backend->Forward({&chunk, 1}, out));
  }
  const double run_s = absl::ToDoubleSeconds(absl::Now() - run_start);

  // Bits per token: -log2 p(token[t+1] | prefix) averaged over the T-1 predictions.
  double bits = 0.0;
  for (int64_t t = 0; t + 1 < T; ++t) {
    const float* row = logits.data() + t * V;
    double top = row[0];
    for (int64_t v = 1; v < V; ++v) top = std::max<double>(top, row[v]);
    double sum = 0.0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(row[v] - top);
    bits += (std::log(sum) + top - row[tokens[t + 1]]) / std::log(2.0);
  }
  std::vector<uint8_t> by_layer(L * T);  // [L, T]
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t l = 0; l < L; ++l) by_layer[l * T + t] = activations[t * L + l];
  }

  std::printf("model      %s (%s, %lld parameters, loaded in %.1f ms)\n",
              absl::GetFlag(FLAGS_model).c_str(), DTypeName(model->stored_dtype()),
              static_cast<long long>(model->parameter_count()), load_ms);
  std::printf(
      "mode       %s, ema_horizon %s, weight_dtype %s, fifo_dtype %s, %lld tokens in %.3f s "
      "(%.1f tokens/s)\n",
      mode.c_str(), EmaHorizonName(*horizon), backend->weight_dtype(), backend->fifo_dtype(),
      static_cast<long long>(T), run_s, T / std::max(run_s, 1e-9));
  const int64_t shown = std::min<int64_t>(T, 32);
  std::printf("tokens     %s%s\n",
              absl::StrJoin(tokens.begin(), tokens.begin() + shown, ",").c_str(),
              T > shown ? absl::StrFormat(",... (%d more)", T - shown).c_str() : "");
  if (T > 1) {
    std::printf("bits/token %.6f over %lld predictions\n", bits / (T - 1),
                static_cast<long long>(T - 1));
  }
  std::printf("GAU activation rate per layer:");
  for (int64_t l = 0; l < L; ++l) {
    int64_t on = 0;
    for (int64_t t = 0; t < T; ++t) on += by_layer[l * T + t];
    std::printf(" %.3f", static_cast<double>(on) / T);
  }
  std::printf("\n");

  if (!absl::GetFlag(FLAGS_logits_out).empty()) {
    RETURN_IF_ERROR(WriteNpyFloat(absl::GetFlag(FLAGS_logits_out), {T, V}, logits));
  }
  if (!absl::GetFlag(FLAGS_activations_out).empty()) {
    RETURN_IF_ERROR(WriteNpyUint8(absl::GetFlag(FLAGS_activations_out), {L, T}, by_layer));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace seqboat

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "seqboat-eval --model FILE (--tokens 5,9,12 | --tokens_file F | --text_file F) [--mode "
      "step|prefill] "
      "[--ema_horizon exact|trained] [--logits_out F.npy] [--activations_out F.npy]");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    std::fprintf(stderr, "seqboat-eval: unexpected argument \"%s\"; see --help\n", rest[1]);
    return 2;
  }
  absl::Status status = seqboat::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "seqboat-eval: %s\n", std::string(status.message()).c_str());
    return 2;
  }
  return 0;
}
