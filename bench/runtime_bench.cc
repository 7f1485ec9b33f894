// seqboat-bench-runtime: CPU backend decode and prefill speed on the paper's enwik8 model with
// random weights, at set GAU activation rates, against this machine's memory-bandwidth roofline.
#include <cblas.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/cpu_contention.h"
#include "bench/memory_bandwidth.h"
#include "bench/random_model.h"
#include "bench/router_calibration.h"
#include "bench/runtime_bench_report.h"
#include "nlohmann/json.hpp"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/model/config.h"
#include "runtime/model/model.h"
#include "runtime/util/status_macros.h"

ABSL_FLAG(std::string, json_out, "", "Write every measurement as JSON to this path (empty: none).");
ABSL_FLAG(int, threads, 0,
          "CPU threads of the backend's pool (0 = all hardware threads; OpenBLAS runs "
          "single-threaded on them).");
ABSL_FLAG(bool, quick, false,
          "Smoke run: fewer steps and repetitions, 1k positions only, a looser calibration.");
ABSL_FLAG(std::string, model_dir, "/tmp", "Folder for the temporary random model files.");
ABSL_FLAG(std::string, write_model, "",
          "Only write the paper-size random model, its routers calibrated to --write_model_rate, "
          "to this path (for serving benchmarks) and exit.");
ABSL_FLAG(double, write_model_rate, 0.5,
          "GAU activation rate the --write_model routers are calibrated to.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the random weights and token streams.");
ABSL_FLAG(int64_t, long_context, 0,
          "Only the long-context run: one sequence prefilled to 1,024 tokens and one to this "
          "many, then decode steps of both interleaved (batch 1 and 8), on the paper config "
          "cut to --long_layers layers with every token activating its GAU (full FIFOs); peak "
          "RSS after each prefill. 0: off.");
ABSL_FLAG(int64_t, prefill_after, 0,
          "Only the prefill-onto-history run: a 201-token prefill (a conversation turn's new "
          "tokens) timed from an empty state and from one that already ran this many tokens, "
          "interleaved, on the paper-size model at --write_model_rate activation. 0: off.");
ABSL_FLAG(int, long_layers, 2,
          "Layers of the --long_context model (the paper's per-layer sizes; fewer layers make "
          "the long prefill affordable, and a step's cost per layer does not depend on L).");
ABSL_FLAG(double, contention_threshold, 0.15,
          "Measure a configuration again when other processes took more than this share of "
          "all CPUs while it ran (the table's oth% column).");
ABSL_FLAG(int, contention_retries, 2,
          "How many times a contended configuration is measured again; the least contended "
          "attempt is kept.");
ABSL_FLAG(std::string, decode_rates, "",
          "Comma-separated GAU activation rates in [0, 1] (e.g. 0.12,0.46) that replace the "
          "rates 0, 10, 50, 100% and natural: only decode is measured, at each of them (0 and 1 "
          "by a bias that decides every token, the others calibrated per layer). Empty: the "
          "default rates, decode and prefill.");
ABSL_FLAG(std::string, decode_batches, "",
          "Comma-separated decode batch sizes (>= 1) that replace 1,4,16,64. Empty: those.");
ABSL_FLAG(std::string, decode_positions, "",
          "Comma-separated decode positions (>= 1 tokens in each slot before the timed steps) "
          "that replace 1024,16384 (1024 with --quick). Empty: those.");
ABSL_FLAG(std::string, weight_dtypes, "f32",
          "Comma-separated matrix dtypes of the CPU backend to measure decode and prefill with, "
          "each on the same model: f32, bf16, int8 (--weight_dtype of the server).");
ABSL_FLAG(std::string, fifo_dtypes, "f32",
          "Comma-separated FIFO key/value dtypes of the CPU backend, each measured with every "
          "--weight_dtypes entry: f32, bf16 (--fifo_dtype of the server).");
ABSL_FLAG(int, decode_rounds, 1,
          "Time every decode configuration this many times, all the rates in turn in each "
          "round (odd rounds backwards), and keep per configuration the fastest round: a load "
          "that comes and goes then reaches every rate alike. The JSON keeps every round's "
          "median.");

namespace seqboat::bench {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;

// A router bias this large decides every token (logit difference 2e4): rates exactly 0 and 1.
constexpr float kAlwaysBias = 1.0e4f;

// Removes the temporary model file (and the writer's .tmp) however the run ends.
class TemporaryFile {
 public:
  explicit TemporaryFile(std::string path) : path_(std::move(path)) {}
  ~TemporaryFile() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
    std::filesystem::remove(path_ + ".tmp", ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Bytes of weights a decode step reads, by part (matrices in the row's dtype, biases fp32).
struct WeightBytes {
  double hx_per_layer = 0.0;   // hx_proj weight + bias (always)
  double gau_per_layer = 0.0;  // mx_proj + h_proj, weights + biases (when any row activates)
  double output = 0.0;         // output projection (tied: the embedding)
  double fifo_entry = 0.0;     // one FIFO entry's key + value
  double ema_state = 0.0;      // one slot's MD-EMA state in one layer, read and written each step
};

double Percentile(std::vector<double> values, double fraction) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const double index = fraction * (values.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(index));
  const size_t above = std::min(values.size() - 1, below + 1);
  return values[below] + (index - below) * (values[above] - values[below]);
}

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Progress lines on stderr, stamped with the seconds since the first one.
void Progress(const std::string& line) {
  static const Clock::time_point first = Clock::now();
  std::cerr << absl::StrFormat("[bench %6.1fs] ", Seconds(first)) << line << std::endl;
}

// The numbers of a comma-separated list flag (`--name`), each within what `expected` says
// (`valid` checks it). Empty parts are skipped; a list with no number is an error.
template <typename Number, typename Valid>
absl::StatusOr<std::vector<Number>> ParseListFlag(absl::string_view name, absl::string_view value,
                                                  absl::string_view expected, Valid valid) {
  std::vector<Number> numbers;
  for (absl::string_view part : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
    part = absl::StripAsciiWhitespace(part);
    Number number;
    bool parsed;
    if constexpr (std::is_floating_point_v<Number>) {
      parsed = absl::SimpleAtod(part, &number);
    } else {
      parsed = absl::SimpleAtoi(part, &number);
    }
    if (!parsed || !valid(number)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, "=", value, ": \"", part, "\" is not ", expected));
    }
    numbers.push_back(number);
  }
  if (numbers.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", name, "=", value, ": no value; expected comma-separated values, each ", expected));
  }
  return numbers;
}

Machine DescribeMachine(const BenchSettings& settings) {
  Machine machine;
  cpu_set_t cpus;
  machine.nproc = sched_getaffinity(0, sizeof(cpus), &cpus) == 0
                      ? CPU_COUNT(&cpus)
                      : static_cast<int>(std::thread::hardware_concurrency());
  // The first processor's entry; "model name" alone can be as vague as "AMD EPYC" in a VM.
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string family, model_number, stepping;
  for (std::string line; std::getline(cpuinfo, line) && !line.empty();) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key(absl::StripAsciiWhitespace(line.substr(0, colon)));
    const std::string value(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    if (key == "model name") machine.cpu_model = value;
    if (key == "cpu family") family = value;
    if (key == "model") model_number = value;
    if (key == "stepping") stepping = value;
  }
  machine.cpu_family_model =
      absl::StrCat("family ", family, " model ", model_number, " stepping ", stepping);
  machine.date = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
  const char* blas = openblas_get_config();
  machine.blas_config = blas != nullptr ? blas : "";
  Progress(absl::StrFormat("read bandwidth over %d MiB", settings.bandwidth_bytes >> 20));
  // Contention only lowers a bandwidth: keep the best of the attempts.
  for (int attempt = 0; attempt <= settings.contention_retries; ++attempt) {
    const CpuContention contention;
    const ReadBandwidth bandwidth =
        MeasureReadBandwidth(settings.bandwidth_bytes, settings.threads, settings.bandwidth_passes);
    const double others = contention.OthersShare();
    if (attempt == 0 || bandwidth.all_threads > machine.read_bw_all) {
      machine.read_bw_all = bandwidth.all_threads;
      machine.bandwidth_others_share = others;
    }
    machine.read_bw_single = std::max(machine.read_bw_single, bandwidth.single_thread);
    if (others <= settings.contention_threshold) break;
  }
  return machine;
}

// Bytes of one matrix weight in the CPU backend's `dtype` (int8: one fp32 scale per group).
double MatrixElementBytes(WeightDType dtype) {
  switch (dtype) {
    case WeightDType::kBF16: return 2.0;
    case WeightDType::kInt8: return 1.0 + 4.0 / cpu::kQuantGroup;
    default: return 4.0;
  }
}

// Bytes of one FIFO key or value element in the CPU backend's FIFO `dtype`.
double FifoElementBytes(WeightDType dtype) { return dtype == WeightDType::kBF16 ? 2.0 : 4.0; }

WeightBytes StepWeightBytes(const ModelConfig& c, const BackendDTypes& dtypes) {
  const double D = c.embed_dim, Z = c.z_dim, H = c.hidden_dim, V = c.vocab_size;
  const double m = MatrixElementBytes(dtypes.weights);
  WeightBytes bytes;
  bytes.hx_per_layer = m * (2 + D) * D + 4.0 * (2 + D);
  bytes.gau_per_layer = m * ((Z + 2 * H) * D + D * H) + 4.0 * ((Z + 2 * H) + D);
  bytes.output = m * V * D;
  bytes.fifo_entry = FifoElementBytes(dtypes.fifo) * (Z + H);
  bytes.ema_state = 4.0 * D * c.n_dim;
  return bytes;
}

// Copies `source` into slots 0..batch-1, then times decode steps of one token per slot.
absl::StatusOr<DecodeRow> TimeDecode(CpuBackend& backend, const ModelConfig& config, SlotId source,
                                     int batch, uint64_t token_seed, const BenchSettings& settings,
                                     const Machine& machine, const BackendDTypes& dtypes) {
  const int L = config.layers, V = config.vocab_size;
  const int64_t cap = backend.fifo_capacity();
  const WeightBytes weight = StepWeightBytes(config, dtypes);
  for (SlotId s = 0; s < batch; ++s) RETURN_IF_ERROR(backend.CopySlot(source, s));
  const int total_steps = settings.warmup_steps + settings.max_steps;
  const std::vector<int32_t> step_tokens =
      RandomTokens(static_cast<int64_t>(batch) * total_steps, V, token_seed);
  std::vector<float> logits(static_cast<size_t>(batch) * V);
  std::vector<uint8_t> activations(static_cast<size_t>(batch) * L);
  ForwardOutputs out;
  out.logits = absl::MakeSpan(logits);
  out.activations = absl::MakeSpan(activations);
  std::vector<SequenceChunk> chunks(batch);
  auto set_step = [&](int step) {
    for (int b = 0; b < batch; ++b) {
      chunks[b] = {
          b, absl::MakeConstSpan(step_tokens).subspan(static_cast<size_t>(step) * batch + b, 1),
          false};
    }
  };
  for (int step = 0; step < settings.warmup_steps; ++step) {
    set_step(step);
    RETURN_IF_ERROR(backend.Forward(chunks, out));
  }

  DecodeRow row;
  row.batch = batch;
  row.weight_dtype = backend.weight_dtype();
  row.fifo_dtype = backend.fifo_dtype();
  row.layer_rates.assign(L, 0.0);
  // FIFO fill before the first timed step: slot 0 for the report, every slot for the
  // bytes each step's attention reads (tracked exactly from the activations).
  std::vector<int32_t> fill(static_cast<size_t>(batch) * L);
  for (int b = 0; b < batch; ++b) {
    SlotStats stats;
    RETURN_IF_ERROR(backend.Stats(b, &stats));
    if (b == 0) {
      row.position = stats.tokens;
      double sum = 0;
      row.fifo_min = row.fifo_max = stats.fifo_entries[0];
      for (int32_t entries : stats.fifo_entries) {
        sum += entries;
        row.fifo_min = std::min<double>(row.fifo_min, entries);
        row.fifo_max = std::max<double>(row.fifo_max, entries);
      }
      row.fifo_mean = sum / L;
    }
    std::copy(stats.fifo_entries.begin(), stats.fifo_entries.end(), fill.begin() + b * L);
  }

  std::vector<double> step_ms;
  int64_t activated = 0, busy_layers = 0;
  double weight_bytes = 0, fifo_bytes = 0;
  const auto timing_start = Clock::now();
  const CpuContention contention;
  for (int step = 0; step < settings.max_steps; ++step) {
    set_step(settings.warmup_steps + step);
    const auto start = Clock::now();
    RETURN_IF_ERROR(backend.Forward(chunks, out));
    step_ms.push_back(1e3 * Seconds(start));
    weight_bytes += L * weight.hx_per_layer + weight.output;
    for (int l = 0; l < L; ++l) {
      bool busy = false;
      for (int b = 0; b < batch; ++b) {
        if (!activations[b * L + l]) continue;
        busy = true;
        ++activated;
        row.layer_rates[l] += 1.0;
        int32_t& entries = fill[b * L + l];
        fifo_bytes += entries * weight.fifo_entry;
        entries = static_cast<int32_t>(std::min<int64_t>(entries + 1, cap));
      }
      if (busy) {
        ++busy_layers;
        weight_bytes += weight.gau_per_layer;
      }
    }
    if (static_cast<int>(step_ms.size()) >= settings.min_steps &&
        Seconds(timing_start) >= settings.step_budget_s) {
      break;
    }
  }
  row.others_share = contention.OthersShare();
  row.steps = static_cast<int>(step_ms.size());
  row.median_ms = Percentile(step_ms, 0.5);
  row.p90_ms = Percentile(step_ms, 0.9);
  double total_ms = 0;
  for (double ms : step_ms) total_ms += ms;
  row.mean_ms = total_ms / row.steps;
  row.tokens_per_s = batch / (row.median_ms * 1e-3);
  row.measured_rate = static_cast<double>(activated) / (static_cast<double>(row.steps) * batch * L);
  for (double& rate_l : row.layer_rates) rate_l /= static_cast<double>(row.steps) * batch;
  row.busy_layer_rate = static_cast<double>(busy_layers) / (static_cast<double>(row.steps) * L);
  row.weight_bytes = weight_bytes / row.steps;
  row.fifo_bytes = fifo_bytes / row.steps;
  row.weight_bound_ms = 1e3 * row.weight_bytes / machine.bound_bandwidth();
  row.weight_fifo_bound_ms = 1e3 * (row.weight_bytes + row.fifo_bytes) / machine.bound_bandwidth();
  row.state_bytes = 2.0 * batch * L * weight.ema_state;  // every slot's state, read and written
  row.all_bound_ms =
      1e3 * (row.weight_bytes + row.fifo_bytes + row.state_bytes) / machine.bound_bandwidth();
  return row;
}

// Decode steps at every (position, batch) for one model: one slot is prefilled to each
// position and copied into the batch's slots, then each step appends one token per slot.
absl::Status BenchDecode(const Model& model, const RateSpec& rate, const BackendDTypes& dtypes,
                         const BenchSettings& settings, const Machine& machine,
                         std::vector<DecodeRow>* rows) {
  const ModelConfig& config = model.config();
  const int V = config.vocab_size;
  const int max_batch = *std::max_element(settings.batches.begin(), settings.batches.end());
  CpuBackendOptions options;
  options.num_slots = max_batch + 1;
  options.num_threads = settings.threads;
  options.weight_dtype = dtypes.weights;
  options.fifo_dtype = dtypes.fifo;
  ASSIGN_OR_RETURN(std::unique_ptr<CpuBackend> backend, CpuBackend::Create(model, options));
  const SlotId source = max_batch;

  const int64_t last_position =
      *std::max_element(settings.positions.begin(), settings.positions.end());
  const std::vector<int32_t> prompt = RandomTokens(last_position, V, settings.seed + 11);
  std::vector<float> prompt_logits(V);
  int64_t consumed = 0;
  for (int64_t position : settings.positions) {
    const auto prefill_start = Clock::now();
    while (consumed < position) {
      const int64_t n = std::min<int64_t>(settings.prefill_chunk, position - consumed);
      const SequenceChunk chunk{source, absl::MakeConstSpan(prompt).subspan(consumed, n), false};
      ForwardOutputs out;
      out.logits = absl::MakeSpan(prompt_logits);
      RETURN_IF_ERROR(backend->Forward({&chunk, 1}, out));
      consumed += n;
    }
    Progress(absl::StrFormat("rate %s: prefilled to %d in %.1f s", rate.label, position,
                             Seconds(prefill_start)));
    for (int batch : settings.batches) {
      DecodeRow row;
      for (int attempt = 0; attempt <= settings.contention_retries; ++attempt) {
        ASSIGN_OR_RETURN(DecodeRow timed, TimeDecode(*backend, config, source, batch,
                                                     settings.seed + 1000 * position + batch,
                                                     settings, machine, dtypes));
        timed.attempts = attempt + 1;
        if (attempt == 0 || timed.others_share < row.others_share) row = std::move(timed);
        if (row.others_share <= settings.contention_threshold ||
            attempt == settings.contention_retries) {
          break;
        }
        Progress(
            absl::StrFormat("rate %s pos %d batch %d: other processes took %.0f%% of the "
                            "CPUs; measuring again",
                            rate.label, position, batch, 100 * row.others_share));
      }
      row.rate_label = rate.label;
      Progress(absl::StrFormat("rate %s %s (FIFO %s) pos %d batch %d: %.3f ms/step (%d steps)",
                               rate.label, row.weight_dtype, row.fifo_dtype, row.position, batch,
                               row.median_ms, row.steps));
      rows->push_back(row);
    }
  }
  return absl::OkStatus();
}

// One row per configuration from `round_rows` ([round][row], the same rows in each round): the
// fastest round's, since other processes and noise only ever slow a step down; every round's
// median and contention stay in the row.
std::vector<DecodeRow> KeepFastestRounds(const std::vector<std::vector<DecodeRow>>& round_rows) {
  std::vector<DecodeRow> kept;
  for (size_t i = 0; i < round_rows[0].size(); ++i) {
    size_t fastest = 0;
    for (size_t round = 1; round < round_rows.size(); ++round) {
      if (round_rows[round][i].median_ms < round_rows[fastest][i].median_ms) fastest = round;
    }
    DecodeRow row = round_rows[fastest][i];
    row.kept_round = static_cast<int>(fastest);
    row.round_median_ms.clear();
    row.round_others_share.clear();
    for (const std::vector<DecodeRow>& rows : round_rows) {
      row.round_median_ms.push_back(rows[i].median_ms);
      row.round_others_share.push_back(rows[i].others_share);
    }
    kept.push_back(std::move(row));
  }
  return kept;
}

// Single-sequence prefill of random prompts, as one Forward call and in chunks.
absl::Status BenchPrefill(const Model& model, const RateSpec& rate, const BackendDTypes& dtypes,
                          const BenchSettings& settings, std::vector<PrefillRow>* rows) {
  const ModelConfig& config = model.config();
  CpuBackendOptions options;
  options.num_slots = 1;
  options.num_threads = settings.threads;
  options.weight_dtype = dtypes.weights;
  options.fifo_dtype = dtypes.fifo;
  ASSIGN_OR_RETURN(std::unique_ptr<CpuBackend> backend, CpuBackend::Create(model, options));
  std::vector<float> logits(config.vocab_size);
  // Returns the activation rate of one run of `tokens` in chunks of `chunk` from position 0.
  auto run = [&](const std::vector<int32_t>& tokens, int chunk) -> absl::StatusOr<double> {
    RETURN_IF_ERROR(backend->ResetSlot(0));
    std::vector<uint8_t> activations(static_cast<size_t>(chunk) * config.layers);
    int64_t activated = 0;
    for (size_t begin = 0; begin < tokens.size(); begin += chunk) {
      const size_t n = std::min<size_t>(chunk, tokens.size() - begin);
      const SequenceChunk piece{0, absl::MakeConstSpan(tokens).subspan(begin, n), false};
      ForwardOutputs out;
      out.logits = absl::MakeSpan(logits);
      out.activations = absl::MakeSpan(activations.data(), n * config.layers);
      RETURN_IF_ERROR(backend->Forward({&piece, 1}, out));
      for (size_t i = 0; i < n * config.layers; ++i) activated += activations[i];
    }
    return static_cast<double>(activated) / (tokens.size() * config.layers);
  };
  // One untimed run sizes the backend's scratch buffers.
  RETURN_IF_ERROR(run(RandomTokens(settings.prefill_chunk, config.vocab_size, settings.seed + 5),
                      settings.prefill_chunk)
                      .status());
  for (int length : settings.prompt_lengths) {
    const std::vector<int32_t> tokens = RandomTokens(length, config.vocab_size, settings.seed + 7);
    std::vector<int> chunks = {length};
    if (length > settings.prefill_chunk) chunks.push_back(settings.prefill_chunk);
    for (int chunk : chunks) {
      PrefillRow row;
      row.rate_label = rate.label;
      row.weight_dtype = backend->weight_dtype();
      row.fifo_dtype = backend->fifo_dtype();
      row.prompt = length;
      row.chunk = chunk;
      row.reps = settings.prefill_reps;
      // Each repetition is measured again (up to contention_retries times) while other
      // processes take more than contention_threshold of the CPUs; the least contended counts.
      std::vector<double> seconds;
      double others_sum = 0.0;
      for (int rep = 0; rep < settings.prefill_reps; ++rep) {
        double best_seconds = 0.0, best_others = 2.0;
        for (int attempt = 0; attempt <= settings.contention_retries; ++attempt) {
          const CpuContention contention;
          const auto start = Clock::now();
          ASSIGN_OR_RETURN(row.measured_rate, run(tokens, chunk));
          const double elapsed = Seconds(start), others = contention.OthersShare();
          ++row.attempts;
          if (others < best_others) {
            best_seconds = elapsed;
            best_others = others;
          }
          if (best_others <= settings.contention_threshold) break;
        }
        seconds.push_back(best_seconds);
        others_sum += best_others;
      }
      row.others_share = others_sum / settings.prefill_reps;
      row.median_s = Percentile(seconds, 0.5);
      row.tokens_per_s = length / row.median_s;
      Progress(absl::StrFormat("rate %s %s (FIFO %s) prefill %d in chunks of %d: %.0f tokens/s",
                               rate.label, row.weight_dtype, row.fifo_dtype, length, chunk,
                               row.tokens_per_s));
      rows->push_back(row);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<StateRow>> BenchStateBytes(const Model& model) {
  const ModelConfig& c = model.config();
  const double L = c.layers, D = c.embed_dim, N = c.n_dim, w = c.window, Z = c.z_dim,
               H = c.hidden_dim, T = c.truncation_length;
  std::vector<StateRow> rows;
  for (EmaHorizon horizon : {EmaHorizon::kExact, EmaHorizon::kTrained}) {
    for (WeightDType fifo : {WeightDType::kF32, WeightDType::kBF16}) {
      CpuBackendOptions options;
      options.num_slots = 1;
      options.num_threads = 1;
      options.ema_horizon = horizon;
      options.fifo_dtype = fifo;
      ASSIGN_OR_RETURN(std::unique_ptr<CpuBackend> backend, CpuBackend::Create(model, options));
      StateRow row;
      const bool trained = horizon == EmaHorizon::kTrained;
      row.horizon = trained ? "trained" : "exact";
      row.fifo_dtype = backend->fifo_dtype();
      row.backend_bytes = backend->state_bytes_per_slot();
      const double ring = trained ? L * T * D * 4 : 0.0;
      row.formula_bytes = L * (D * N * 4 + w * (Z + H) * FifoElementBytes(fifo)) + ring;
      rows.push_back(row);
    }
  }
  return rows;
}

// Peak resident set size of this process (VmHWM), bytes.
int64_t PeakRssBytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

// Decode at a short and a very long position, side by side: slots prefilled to 1,024 and to
// `far` tokens (random, every token activating, so each FIFO holds w entries), copied into
// `batch` slots each, then steps alternating between the two so that both see the same
// machine. A SeqBoat step's cost must not depend on the position.
absl::Status BenchLongContext(const BenchSettings& settings, int64_t far, int layers,
                              const std::string& json_out) {
  ModelConfig config = PaperEnwik8Config();
  config.layers = layers;
  const int V = config.vocab_size, L = config.layers;
  ASSIGN_OR_RETURN(std::unique_ptr<RandomModel> random_model,
                   RandomModel::Generate(config, settings.seed));
  RETURN_IF_ERROR(random_model->Write(settings.model_path, std::vector<float>(L, kAlwaysBias)));
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Load(settings.model_path));
  const std::vector<int> batches = {1, 8};
  const int max_batch = 8;
  CpuBackendOptions options;
  options.num_slots = 2 + 2 * max_batch;
  options.num_threads = settings.threads;
  ASSIGN_OR_RETURN(std::unique_ptr<CpuBackend> backend, CpuBackend::Create(*model, options));
  const SlotId near_source = 2 * max_batch, far_source = near_source + 1;
  const int64_t near = 1024;
  Json json;
  json["benchmark"] = "seqboat-bench-runtime --long_context";
  json["date"] = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
  json["config"] = Json::parse(ModelConfigToJson(config));
  json["threads"] = settings.threads;
  const int64_t rss_loaded = PeakRssBytes();
  // Prefill in chunks of random tokens made as they go: the prompt itself is never held.
  std::vector<float> logits(V);
  // Feeds `slot` from position `from` (0 resets it) to `to`; returns the seconds taken.
  auto prefill = [&](SlotId slot, int64_t from, int64_t to) -> absl::StatusOr<double> {
    if (from == 0) RETURN_IF_ERROR(backend->ResetSlot(slot));
    const auto start = Clock::now();
    const int64_t tokens = to - from;
    for (int64_t done = 0, chunk_index = from / settings.prefill_chunk; done < tokens;
         ++chunk_index) {
      const int64_t n = std::min<int64_t>(settings.prefill_chunk, tokens - done);
      const std::vector<int32_t> chunk_tokens =
          RandomTokens(n, V, settings.seed + 7919 * static_cast<uint64_t>(chunk_index) + slot);
      const SequenceChunk chunk{slot, absl::MakeConstSpan(chunk_tokens), false};
      ForwardOutputs out;
      out.logits = absl::MakeSpan(logits);
      RETURN_IF_ERROR(backend->Forward({&chunk, 1}, out));
      done += n;
      if (chunk_index % 256 == 255) {
        Progress(absl::StrFormat("prefilled %d of %d tokens (%.0f tokens/s)", done, tokens,
                                 done / Seconds(start)));
      }
    }
    return Seconds(start);
  };
  // Both slots to 1,024 first (every page of their FIFOs touched), then one on to `far`: the
  // peak RSS between the two readings is what the long prefill adds.
  ASSIGN_OR_RETURN(const double near_s, prefill(near_source, 0, near));
  ASSIGN_OR_RETURN(const double far_head_s, prefill(far_source, 0, near));
  const int64_t rss_near = PeakRssBytes();
  ASSIGN_OR_RETURN(const double far_tail_s, prefill(far_source, near, far));
  const double far_s = far_head_s + far_tail_s;
  const int64_t rss_far = PeakRssBytes();
  Progress(
      absl::StrFormat("prefilled %d tokens in %.1f s; peak RSS %.1f MB after %d tokens, "
                      "%.1f MB after %d",
                      far, far_s, rss_near / 1e6, near, rss_far / 1e6, far));
  json["prefill"] = {{"near_tokens", near},
                     {"near_s", near_s},
                     {"far_tokens", far},
                     {"far_s", far_s},
                     {"far_tokens_per_s", far / far_s},
                     {"peak_rss_loaded_bytes", rss_loaded},
                     {"peak_rss_after_near_bytes", rss_near},
                     {"peak_rss_after_far_bytes", rss_far}};

  std::printf(
      "\nlong context: %d layers (paper sizes, every token activating, w=%d), %d "
      "threads, %s\n",
      L, config.window, settings.threads, json["date"].get<std::string>().c_str());
  std::printf(
      "prefill to %lld tokens: %.1f s (%.0f tokens/s); peak RSS %.1f MB after %lld "
      "tokens, %.1f MB after %lld (model loaded: %.1f MB)\n",
      static_cast<long long>(far), far_s, far / far_s, rss_near / 1e6, static_cast<long long>(near),
      rss_far / 1e6, static_cast<long long>(far), rss_loaded / 1e6);
  std::printf("%5s  %12s  %12s  %12s  %12s  %8s  %6s\n", "batch", "pos", "near ms", "pos", "far ms",
              "far/near", "steps");
  std::vector<int32_t> fifo_near, fifo_far;
  for (int batch : batches) {
    for (int b = 0; b < batch; ++b) {
      RETURN_IF_ERROR(backend->CopySlot(near_source, b));
      RETURN_IF_ERROR(backend->CopySlot(far_source, max_batch + b));
    }
    SlotStats near_stats, far_stats;
    RETURN_IF_ERROR(backend->Stats(0, &near_stats));
    RETURN_IF_ERROR(backend->Stats(max_batch, &far_stats));
    const int steps = settings.quick ? 20 : 200, warmup = 5;
    const std::vector<int32_t> step_tokens =
        RandomTokens(static_cast<int64_t>(2 * batch) * (steps + warmup), V, settings.seed + batch);
    std::vector<float> step_logits(static_cast<size_t>(batch) * V);
    std::vector<SequenceChunk> chunks(batch);
    std::vector<double> near_ms, far_ms;
    const CpuContention contention;
    for (int step = 0; step < steps + warmup; ++step) {
      for (int side = 0; side < 2; ++side) {
        for (int b = 0; b < batch; ++b) {
          const size_t token = (static_cast<size_t>(step) * 2 + side) * batch + b;
          chunks[b] = {side * max_batch + b, absl::MakeConstSpan(step_tokens).subspan(token, 1),
                       false};
        }
        ForwardOutputs out;
        out.logits = absl::MakeSpan(step_logits);
        const auto start = Clock::now();
        RETURN_IF_ERROR(backend->Forward(chunks, out));
        if (step >= warmup) (side == 0 ? near_ms : far_ms).push_back(1e3 * Seconds(start));
      }
    }
    const double near_median = Percentile(near_ms, 0.5), far_median = Percentile(far_ms, 0.5);
    std::printf("%5d  %12lld  %12.3f  %12lld  %12.3f  %8.3f  %6d\n", batch,
                static_cast<long long>(near_stats.tokens), near_median,
                static_cast<long long>(far_stats.tokens), far_median, far_median / near_median,
                steps);
    json["decode"].push_back({{"batch", batch},
                              {"near_position", near_stats.tokens},
                              {"far_position", far_stats.tokens},
                              {"near_fifo_entries", near_stats.fifo_entries},
                              {"far_fifo_entries", far_stats.fifo_entries},
                              {"near_median_ms", near_median},
                              {"far_median_ms", far_median},
                              {"near_p90_ms", Percentile(near_ms, 0.9)},
                              {"far_p90_ms", Percentile(far_ms, 0.9)},
                              {"far_over_near", far_median / near_median},
                              {"steps", steps},
                              {"others_share", contention.OthersShare()}});
  }
  if (!json_out.empty()) {
    std::ofstream out(json_out);
    out << json.dump(2) << "\n";
    if (!out) return absl::PermissionDeniedError(absl::StrCat(json_out, ": cannot write"));
    Progress(absl::StrCat("wrote ", json_out));
  }
  return absl::OkStatus();
}

// What a conversation turn's new tokens cost by where they start: a prefill of `turn` tokens
// from an empty state and from one that ran `history` tokens (the GAU's FIFOs filled by
// then), the two timed alternately from saved copies so that both see the same machine.
absl::Status BenchPrefillAfterHistory(const BenchSettings& settings, int64_t history, double rate) {
  const int64_t turn = 201;
  const ModelConfig config = PaperEnwik8Config();
  const int V = config.vocab_size, L = config.layers;
  ASSIGN_OR_RETURN(std::unique_ptr<RandomModel> random_model,
                   RandomModel::Generate(config, settings.seed));
  ASSIGN_OR_RETURN(
      RouterCalibration calibration,
      CalibrateRouterBiases(*random_model, settings.model_path, rate, settings.calibration));
  RETURN_IF_ERROR(random_model->Write(settings.model_path, calibration.layer_biases));
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Load(settings.model_path));
  CpuBackendOptions options;
  options.num_slots = 3;
  options.num_threads = settings.threads;
  ASSIGN_OR_RETURN(std::unique_ptr<CpuBackend> backend, CpuBackend::Create(*model, options));
  const SlotId work = 0, empty = 1, after = 2;
  std::vector<float> logits(V);
  auto feed = [&](SlotId slot, absl::Span<const int32_t> tokens) -> absl::Status {
    for (size_t begin = 0; begin < tokens.size(); begin += settings.prefill_chunk) {
      const size_t n = std::min<size_t>(settings.prefill_chunk, tokens.size() - begin);
      const SequenceChunk chunk{slot, tokens.subspan(begin, n), false};
      ForwardOutputs out;
      out.logits = absl::MakeSpan(logits);
      RETURN_IF_ERROR(backend->Forward({&chunk, 1}, out));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(backend->ResetSlot(empty));
  RETURN_IF_ERROR(backend->ResetSlot(after));
  RETURN_IF_ERROR(feed(after, RandomTokens(history, V, settings.seed + 5)));
  SlotStats stats;
  RETURN_IF_ERROR(backend->Stats(after, &stats));
  double fifo = 0;
  for (int32_t entries : stats.fifo_entries) fifo += entries;
  const std::vector<int32_t> new_tokens = RandomTokens(turn, V, settings.seed + 6);
  std::vector<double> from_empty_ms, after_ms;
  const int reps = settings.quick ? 2 : 7;
  for (int rep = 0; rep < reps; ++rep) {
    for (SlotId source : {empty, after}) {
      RETURN_IF_ERROR(backend->CopySlot(source, work));
      const auto start = Clock::now();
      RETURN_IF_ERROR(feed(work, new_tokens));
      (source == empty ? from_empty_ms : after_ms).push_back(1e3 * Seconds(start));
    }
  }
  const double empty_median = Percentile(from_empty_ms, 0.5),
               after_median = Percentile(after_ms, 0.5);
  std::printf(
      "\nprefill of %lld new tokens, paper-size model, probe activation %.1f%%, %d "
      "threads, %s\n",
      static_cast<long long>(turn), 100 * calibration.probe_rate, settings.threads,
      absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone()).c_str());
  std::printf(
      "from an empty state: %.1f ms; after %lld tokens (FIFOs %.0f of %d entries on "
      "average): %.1f ms; ratio %.3f (medians of %d, interleaved)\n",
      empty_median, static_cast<long long>(history), fifo / L, config.window, after_median,
      after_median / empty_median, reps);
  return absl::OkStatus();
}

absl::Status Run() {
  BenchSettings settings;
  settings.quick = absl::GetFlag(FLAGS_quick);
  settings.seed = absl::GetFlag(FLAGS_seed);
  settings.contention_threshold = absl::GetFlag(FLAGS_contention_threshold);
  settings.contention_retries = std::max(0, absl::GetFlag(FLAGS_contention_retries));
  const int threads_flag = absl::GetFlag(FLAGS_threads);
  if (threads_flag < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--threads is ", threads_flag, "; expected >= 0"));
  }
  settings.threads = threads_flag > 0
                         ? threads_flag
                         : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const std::string model_dir = absl::GetFlag(FLAGS_model_dir);
  if (!std::filesystem::is_directory(model_dir)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--model_dir ", model_dir, " is not an existing folder"));
  }
  const TemporaryFile model_file((std::filesystem::path(model_dir) /
                                  absl::StrCat("seqboat_bench_random_", getpid(), ".safetensors"))
                                     .string());
  settings.model_path = model_file.path();
  settings.calibration.probe.num_threads = settings.threads;
  settings.calibration.probe.token_seed = settings.seed + 3;
  if (settings.quick) {
    settings.positions = {1024};
    settings.warmup_steps = 1;
    settings.min_steps = 3;
    settings.max_steps = 20;
    settings.step_budget_s = 0.2;
    settings.prefill_reps = 1;
    settings.calibration.probe.warmup_tokens = 512;
    settings.calibration.probe.tokens = 256;
    settings.calibration.tolerance = 0.03;
    settings.calibration.max_passes = 4;
    settings.bandwidth_bytes = size_t{512} << 20;
    settings.bandwidth_passes = 2;
  } else {
    settings.calibration.probe.warmup_tokens = 2048;
    settings.calibration.probe.tokens = 512;
    settings.calibration.tolerance = 0.01;
    settings.calibration.max_passes = 6;
  }
  std::vector<double> decode_rates;
  if (const std::string value = absl::GetFlag(FLAGS_decode_rates); !value.empty()) {
    ASSIGN_OR_RETURN(decode_rates,
                     ParseListFlag<double>("decode_rates", value, "a rate in [0, 1]",
                                           [](double rate) { return rate >= 0.0 && rate <= 1.0; }));
  }
  if (const std::string value = absl::GetFlag(FLAGS_decode_batches); !value.empty()) {
    ASSIGN_OR_RETURN(settings.batches,
                     ParseListFlag<int>("decode_batches", value, "a batch size >= 1",
                                        [](int batch) { return batch >= 1; }));
  }
  if (const std::string value = absl::GetFlag(FLAGS_decode_positions); !value.empty()) {
    ASSIGN_OR_RETURN(settings.positions,
                     ParseListFlag<int64_t>("decode_positions", value, "a position >= 1",
                                            [](int64_t position) { return position >= 1; }));
    // One slot is prefilled from one position to the next.
    std::sort(settings.positions.begin(), settings.positions.end());
    settings.positions.erase(std::unique(settings.positions.begin(), settings.positions.end()),
                             settings.positions.end());
  }
  // Each list: dtypes of `allowed`, at least one.
  const auto parse_dtypes = [](const char* flag, const std::string& list,
                               std::vector<WeightDType> allowed,
                               const char* expected) -> absl::StatusOr<std::vector<WeightDType>> {
    std::vector<WeightDType> dtypes;
    for (absl::string_view name : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
      absl::StatusOr<WeightDType> dtype = ParseWeightDType(absl::StripAsciiWhitespace(name));
      if (!dtype.ok() || std::find(allowed.begin(), allowed.end(), *dtype) == allowed.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", flag, " ", name, ": expected ", expected));
      }
      dtypes.push_back(*dtype);
    }
    if (dtypes.empty())
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": expected ", expected));
    return dtypes;
  };
  ASSIGN_OR_RETURN(const std::vector<WeightDType> weight_dtypes,
                   parse_dtypes("weight_dtypes", absl::GetFlag(FLAGS_weight_dtypes),
                                {WeightDType::kF32, WeightDType::kBF16, WeightDType::kInt8},
                                "f32, bf16 or int8 (the CPU backend's matrix dtypes)"));
  ASSIGN_OR_RETURN(const std::vector<WeightDType> fifo_dtypes,
                   parse_dtypes("fifo_dtypes", absl::GetFlag(FLAGS_fifo_dtypes),
                                {WeightDType::kF32, WeightDType::kBF16},
                                "f32 or bf16 (the CPU backend's FIFO dtypes)"));
  settings.dtypes.clear();
  for (WeightDType fifo : fifo_dtypes) {
    for (WeightDType weights : weight_dtypes) settings.dtypes.push_back({weights, fifo});
  }
  settings.decode_rounds = absl::GetFlag(FLAGS_decode_rounds);
  if (settings.decode_rounds < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--decode_rounds ", settings.decode_rounds, ": expected at least 1"));
  }
  const std::string json_out = absl::GetFlag(FLAGS_json_out);

  if (const int64_t history = absl::GetFlag(FLAGS_prefill_after); history != 0) {
    if (history < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--prefill_after ", history, ": expected a positive token count"));
    }
    return BenchPrefillAfterHistory(settings, history, absl::GetFlag(FLAGS_write_model_rate));
  }
  if (const int64_t far = absl::GetFlag(FLAGS_long_context); far != 0) {
    if (far < 2048) {
      return absl::InvalidArgumentError(
          absl::StrCat("--long_context ", far, ": expected at least 2048 tokens"));
    }
    const int layers = absl::GetFlag(FLAGS_long_layers);
    if (layers < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--long_layers ", layers, ": expected at least 1"));
    }
    return BenchLongContext(settings, far, layers, json_out);
  }

  if (const std::string out = absl::GetFlag(FLAGS_write_model); !out.empty()) {
    const double target = absl::GetFlag(FLAGS_write_model_rate);
    if (!(target > 0.0 && target < 1.0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--write_model_rate ", target, ": expected in (0, 1)"));
    }
    ASSIGN_OR_RETURN(std::unique_ptr<RandomModel> model,
                     RandomModel::Generate(PaperEnwik8Config(), settings.seed));
    ASSIGN_OR_RETURN(
        RouterCalibration calibration,
        CalibrateRouterBiases(*model, settings.model_path, target, settings.calibration));
    RETURN_IF_ERROR(model->Write(out, calibration.layer_biases));
    Progress(absl::StrFormat("wrote %s: %.1fM parameters, probe activation rate %.1f%%", out,
                             model->parameter_count() / 1e6, 100 * calibration.probe_rate));
    return absl::OkStatus();
  }

  BenchResults results;
  const CpuContention run_contention;
  const double load_average_start = LoadAverage1m();
  results.machine = DescribeMachine(settings);
  results.machine.load_average_start = load_average_start;
  results.config = PaperEnwik8Config();
  const ModelConfig& config = results.config;
  const auto generate_start = Clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<RandomModel> controlled,
                   RandomModel::Generate(config, settings.seed));
  RandomModelOptions dense_options;
  dense_options.router = RouterStyle::kDense;
  ASSIGN_OR_RETURN(std::unique_ptr<RandomModel> dense,
                   RandomModel::Generate(config, settings.seed, dense_options));
  results.parameters = controlled->parameter_count();
  Progress(absl::StrFormat("generated 2 x %.1fM random parameters in %.1f s",
                           controlled->parameter_count() / 1e6, Seconds(generate_start)));

  // Rates: 0 and 100% by a bias that decides every token; 10% and 50% calibrated per layer;
  // the natural rate is the dense-router model's own at bias 0.
  const int L = config.layers;
  auto rate_spec = [&](std::string label, double target, bool natural, float bias) {
    RateSpec rate;
    rate.label = std::move(label);
    rate.target = target;
    rate.natural = natural;
    rate.layer_biases.assign(L, bias);
    return rate;
  };
  std::vector<RateSpec>& rates = results.rates;
  if (decode_rates.empty()) {
    rates = {rate_spec("0%", 0.0, false, -kAlwaysBias), rate_spec("10%", 0.10, false, 0.0f),
             rate_spec("50%", 0.50, false, 0.0f), rate_spec("100%", 1.0, false, kAlwaysBias),
             rate_spec("natural", -1.0, true, 0.0f)};
  } else {
    for (double target : decode_rates) {
      const float bias = target == 0.0 ? -kAlwaysBias : target == 1.0 ? kAlwaysBias : 0.0f;
      rates.push_back(rate_spec(absl::StrFormat("%.4g%%", 100 * target), target, false, bias));
    }
  }
  for (RateSpec& rate : rates) {
    if (rate.target <= 0.0 || rate.target >= 1.0) continue;
    const auto start = Clock::now();
    ASSIGN_OR_RETURN(
        RouterCalibration calibration,
        CalibrateRouterBiases(*controlled, settings.model_path, rate.target, settings.calibration));
    rate.layer_biases = calibration.layer_biases;
    rate.probe_rate = calibration.probe_rate;
    rate.probe_layer_rates = calibration.layer_rates;
    rate.passes = calibration.passes;
    Progress(absl::StrFormat("calibrated %s: probe rate %.2f%% (%d passes, %.1f s)", rate.label,
                             100 * rate.probe_rate, calibration.passes, Seconds(start)));
  }

  // [rate][round][row]: each round measures the same (position, batch) rows of every rate, in
  // turn; odd rounds go through the rates backwards, so that a drift within a round favours no
  // rate.
  std::vector<std::vector<std::vector<DecodeRow>>> rate_rows(
      rates.size(), std::vector<std::vector<DecodeRow>>(settings.decode_rounds));
  for (int round = 0; round < settings.decode_rounds; ++round) {
    if (settings.decode_rounds > 1) {
      Progress(absl::StrFormat("decode round %d of %d", round + 1, settings.decode_rounds));
    }
    for (size_t turn = 0; turn < rates.size(); ++turn) {
      const size_t index = round % 2 == 0 ? turn : rates.size() - 1 - turn;
      RateSpec& rate = rates[index];
      const RandomModel& random_model = rate.natural ? *dense : *controlled;
      RETURN_IF_ERROR(random_model.Write(settings.model_path, rate.layer_biases));
      ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Load(settings.model_path));
      if (rate.probe_rate < 0) {
        ASSIGN_OR_RETURN(ProbeResult probe, RunActivationProbe(*model, settings.calibration.probe));
        rate.probe_rate = probe.rate;
        rate.probe_layer_rates = probe.layer_rates;
      }
      for (const BackendDTypes& dtypes : settings.dtypes) {
        if (!rate.natural) {
          RETURN_IF_ERROR(BenchDecode(*model, rate, dtypes, settings, results.machine,
                                      &rate_rows[index][round]));
        }
        if (round == 0 && decode_rates.empty() && (rate.label == "50%" || rate.natural)) {
          RETURN_IF_ERROR(BenchPrefill(*model, rate, dtypes, settings, &results.prefill));
        }
      }
      if (round > 0) continue;
      if (results.state.empty()) {
        ASSIGN_OR_RETURN(results.state, BenchStateBytes(*model));
      }
    }
  }
  for (const std::vector<std::vector<DecodeRow>>& round_rows : rate_rows) {
    for (DecodeRow& row : KeepFastestRounds(round_rows)) results.decode.push_back(std::move(row));
  }

  results.machine.load_average_end = LoadAverage1m();
  results.machine.run_others_share = run_contention.OthersShare();
  PrintReport(settings, results);
  if (!json_out.empty()) {
    std::filesystem::path out_path(json_out);
    std::error_code ignored;
    if (out_path.has_parent_path()) {
      std::filesystem::create_directories(out_path.parent_path(), ignored);
    }
    std::ofstream out(json_out);
    out << ReportJson(settings, results);
    if (!out) return absl::PermissionDeniedError(absl::StrCat(json_out, ": cannot write"));
    Progress(absl::StrCat("wrote ", json_out));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace seqboat::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Benchmarks the CPU backend on the paper's enwik8 SeqBoat config with random weights:\n"
      "decode step time by batch, activation rate and position; prefill throughput; state\n"
      "bytes; memory-bandwidth roofline. Prints a table; --json_out writes every number.");
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = seqboat::bench::Run();
  if (!status.ok()) {
    std::cerr << "seqboat-bench-runtime: " << status << std::endl;
    return 1;
  }
  return 0;
}
