// Results of seqboat-bench-runtime and their two renderings: the printed table and JSON.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "bench/router_calibration.h"
#include "runtime/backend.h"
#include "runtime/model/config.h"

namespace seqboat::bench {

// The CPU backend's dtypes of one measured configuration.
struct BackendDTypes {
  WeightDType weights = WeightDType::kF32;  // the matrices' (--weight_dtype)
  WeightDType fifo = WeightDType::kF32;     // the FIFO keys' and values' (--fifo_dtype)
};

// What one run measures and how hard it tries.
struct BenchSettings {
  bool quick = false;
  int threads = 1;
  uint64_t seed = 1;
  std::string model_path;
  // The CPU backend's dtypes to measure, each on the same model: every --weight_dtypes entry
  // with every --fifo_dtypes entry.
  std::vector<BackendDTypes> dtypes = {BackendDTypes{}};
  std::vector<int> batches = {1, 4, 16, 64};
  std::vector<int64_t> positions = {1024, 16384};
  int decode_rounds = 1;  // each decode row measured this many times, rates in turn
  int warmup_steps = 2;
  int min_steps = 8;
  int max_steps = 100;
  double step_budget_s = 1.0;  // timed decode steps per configuration stop after this long
  std::vector<int> prompt_lengths = {512, 2048};
  // Chunk of the chunked prefill rows, and of the prefills that carry a slot to a position.
  int prefill_chunk = 512;
  int prefill_reps = 3;
  CalibrationOptions calibration;
  double contention_threshold = 0.15;  // measure again above this share of other processes
  int contention_retries = 2;
  size_t bandwidth_bytes = size_t{1} << 30;
  int bandwidth_passes = 3;
};

// One activation-rate setting: how its model is made and what calibration measured.
struct RateSpec {
  std::string label;     // "0%", "10%", "50%", "100%", "natural"
  double target = 0.0;   // < 0 for the natural rate
  bool natural = false;  // the dense-router model at bias 0 (else the token-channel model)
  std::vector<float> layer_biases;  // [L]
  double probe_rate = -1.0;         // measured on the calibration probe (< 0: not yet)
  std::vector<double> probe_layer_rates;
  int passes = 0;  // calibration passes (0: none needed)
};

struct Machine {
  int nproc = 0;
  std::string cpu_model;
  std::string cpu_family_model;  // "family F model M stepping S" from /proc/cpuinfo
  std::string date;
  std::string blas_config;
  double read_bw_single = 0.0;  // bytes/s
  double read_bw_all = 0.0;
  double bandwidth_others_share = 0.0;  // CPU share other processes took while it was measured
  double load_average_start = 0.0;      // 1-minute load averages around the whole run
  double load_average_end = 0.0;
  double run_others_share = 0.0;  // CPU share other processes took over the whole run

  // The roofline's denominator: the better of the two (contention can make either low).
  double bound_bandwidth() const { return std::max(read_bw_single, read_bw_all); }
};

struct DecodeRow {
  std::string rate_label;
  std::string weight_dtype;  // f32 | bf16 | int8
  std::string fifo_dtype;    // f32 | bf16
  int batch = 0;
  int64_t position = 0;  // tokens per slot before the first timed step
  int steps = 0;
  double median_ms = 0, p90_ms = 0, mean_ms = 0, tokens_per_s = 0;
  double measured_rate = 0;         // activated (slot, layer) pairs / all, over the timed steps
  std::vector<double> layer_rates;  // [L] likewise per layer
  double busy_layer_rate = 0;       // (step, layer) pairs with >= 1 activated slot / all
  double fifo_min = 0, fifo_mean = 0, fifo_max = 0;  // entries per layer before timing, slot 0
  double weight_bytes = 0, fifo_bytes = 0;           // per step, mean over timed steps
  double weight_bound_ms = 0, weight_fifo_bound_ms = 0;
  double state_bytes = 0;   // MD-EMA state read and written per step (S)
  double all_bound_ms = 0;  // W + F + S at the bound bandwidth
  double others_share = 0;  // CPU share other processes took during the timed steps
  int attempts = 0;         // measurements made (more than 1 when contended)
  // With --decode_rounds: the round this row is from, and every round's median and contention.
  int kept_round = 0;
  std::vector<double> round_median_ms, round_others_share;
};

struct PrefillRow {
  std::string rate_label;
  std::string weight_dtype;
  std::string fifo_dtype;
  int prompt = 0;
  int chunk = 0;
  int reps = 0;
  double median_s = 0, tokens_per_s = 0, measured_rate = 0;
  double others_share = 0;  // CPU share other processes took during the timed runs (mean)
  int attempts = 0;         // runs made (more than reps when contended)
};

struct StateRow {
  std::string horizon;
  std::string fifo_dtype;
  size_t backend_bytes = 0;
  double formula_bytes = 0;  // MODEL.md with FIFO entries of the row's dtype, positions not counted
};

// Everything one run measured.
struct BenchResults {
  Machine machine;
  ModelConfig config;
  int64_t parameters = 0;
  std::vector<RateSpec> rates;
  std::vector<DecodeRow> decode;
  std::vector<PrefillRow> prefill;
  std::vector<StateRow> state;
};

// The human-readable tables, one row per configuration, on stdout.
void PrintReport(const BenchSettings& settings, const BenchResults& results);
// Machine facts, settings, config and every measurement, as pretty-printed JSON text.
std::string ReportJson(const BenchSettings& settings, const BenchResults& results);

}  // namespace seqboat::bench
