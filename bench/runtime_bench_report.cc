// seqboat-bench-runtime's report: fixed-width tables for people, JSON for tools.
#include "bench/runtime_bench_report.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace seqboat::bench {
namespace {

using Json = nlohmann::ordered_json;

std::string Percent(double rate) { return absl::StrFormat("%.1f%%", 100.0 * rate); }

std::string DTypeList(const BenchSettings& settings) {
  std::vector<std::string> names;
  for (const BackendDTypes& dtypes : settings.dtypes) {
    names.push_back(absl::StrCat(WeightDTypeName(dtypes.weights), " (FIFO ",
                                 WeightDTypeName(dtypes.fifo), ")"));
  }
  return absl::StrJoin(names, ", ");
}

}  // namespace

void PrintReport(const BenchSettings& settings, const BenchResults& results) {
  const Machine& machine = results.machine;
  const ModelConfig& config = results.config;
  const int64_t parameters = results.parameters;
  std::printf(
      "seqboat-bench-runtime%s: CPU backend, enwik8 config (L=%d D=%d Z=%d H=%d N=%d "
      "w=%d V=%d), random weights, %.1fM parameters, matrices in %s\n",
      settings.quick ? " (--quick)" : "", config.layers, config.embed_dim, config.z_dim,
      config.hidden_dim, config.n_dim, config.window, config.vocab_size, parameters / 1e6,
      DTypeList(settings).c_str());
  std::printf("machine: %s (%s), nproc %d, %d threads, %s; %s\n", machine.cpu_model.c_str(),
              machine.cpu_family_model.c_str(), machine.nproc, settings.threads,
              machine.date.c_str(), machine.blas_config.c_str());
  std::printf(
      "read bandwidth (%zu MiB buffer): 1 thread %.2f GB/s, %d threads %.2f GB/s "
      "(bounds below use the larger)\n",
      settings.bandwidth_bytes >> 20, machine.read_bw_single / 1e9, settings.threads,
      machine.read_bw_all / 1e9);
  std::printf(
      "contention: other processes took %.0f%% of all CPU time during the run (%.0f%% "
      "during the bandwidth test); load average %.2f at start, %.2f at end; column "
      "oth%% = their share during each row\n\n",
      100 * machine.run_others_share, 100 * machine.bandwidth_others_share,
      machine.load_average_start, machine.load_average_end);

  std::printf(
      "router calibration (probe: %d warm-up tokens, then %d tokens covering every byte "
      "id equally); per-layer biases; natural = dense random router at bias 0\n",
      settings.calibration.probe.warmup_tokens, settings.calibration.probe.tokens);
  std::printf("  %-8s %-14s %16s %10s %16s %6s\n", "target", "router", "bias min/max", "probe_rate",
              "layer min/max", "passes");
  for (const RateSpec& rate : results.rates) {
    const auto [bias_min, bias_max] =
        std::minmax_element(rate.layer_biases.begin(), rate.layer_biases.end());
    const auto [layer_min, layer_max] =
        std::minmax_element(rate.probe_layer_rates.begin(), rate.probe_layer_rates.end());
    std::printf("  %-8s %-14s %16s %10s %16s %6d\n", rate.label.c_str(),
                rate.natural ? "dense" : "token-channel",
                absl::StrFormat("%.3g/%.3g", *bias_min, *bias_max).c_str(),
                Percent(rate.probe_rate).c_str(),
                absl::StrFormat("%s/%s", Percent(*layer_min), Percent(*layer_max)).c_str(),
                rate.passes);
  }

  std::printf(
      "\ndecode: one token per slot per step; rate = measured share of (slot, layer) "
      "GAU activations in the timed steps; fifo = entries per layer before timing "
      "(min/mean/max over layers);\n"
      "  dtype = the matrices' (biases fp32; int8 with an fp32 scale per 32 weights); kv = the "
      "FIFO keys' and values'; W = "
      "weights the step reads in that dtype (hx_proj every layer, mx_proj+h_proj in "
      "layers where any slot activated, output proj.); F = FIFO keys+values the "
      "activated slots attend to; S = every slot's MD-EMA state, read and written; xW, xWF, "
      "xWFS = median / bound\n");
  std::printf("%-7s %5s %4s %6s %6s %5s %15s %5s %9s %9s %9s %8s %6s %8s %6s %8s %6s %5s\n",
              "target", "dtype", "kv", "rate", "pos", "batch", "fifo", "steps", "med_ms", "p90_ms",
              "tok/s", "W_ms", "xW", "W+F_ms", "xWF", "W+F+S_ms", "xWFS", "oth%");
  for (const DecodeRow& r : results.decode) {
    std::printf(
        "%-7s %5s %4s %6s %6lld %5d %15s %5d %9.3f %9.3f %9.1f %8.3f %6.2f %8.3f %6.2f %8.3f "
        "%6.2f %5.0f\n",
        r.rate_label.c_str(), r.weight_dtype.c_str(), r.fifo_dtype.c_str(),
        Percent(r.measured_rate).c_str(), static_cast<long long>(r.position), r.batch,
        absl::StrFormat("%.0f/%.0f/%.0f", r.fifo_min, r.fifo_mean, r.fifo_max).c_str(), r.steps,
        r.median_ms, r.p90_ms, r.tokens_per_s, r.weight_bound_ms, r.median_ms / r.weight_bound_ms,
        r.weight_fifo_bound_ms, r.median_ms / r.weight_fifo_bound_ms, r.all_bound_ms,
        r.median_ms / r.all_bound_ms, 100 * r.others_share);
  }

  if (!results.prefill.empty()) {  // --decode_rates measures decode only
    std::printf("\nprefill: one sequence from position 0; rate = measured activation share\n");
    std::printf("%-8s %5s %4s %7s %7s %7s %5s %10s %10s %5s\n", "target", "dtype", "kv", "rate",
                "prompt", "chunk", "reps", "median_s", "tok/s", "oth%");
    for (const PrefillRow& r : results.prefill) {
      std::printf("%-8s %5s %4s %7s %7d %7d %5d %10.3f %10.1f %5.0f\n", r.rate_label.c_str(),
                  r.weight_dtype.c_str(), r.fifo_dtype.c_str(), Percent(r.measured_rate).c_str(),
                  r.prompt, r.chunk, r.reps, r.median_s, r.tokens_per_s, 100 * r.others_share);
    }
  }

  std::printf(
      "\nstate per sequence: backend state_bytes_per_slot (plus 8-byte FIFO positions; the "
      "same for every matrix dtype) vs MODEL.md L*(D*N*4 + w*(Z+H)*bytes) [+ L*T*D*4 trained], "
      "bytes = the FIFO dtype's\n");
  std::printf("%-8s %4s %14s %14s\n", "horizon", "kv", "backend_MB", "formula_MB");
  for (const StateRow& r : results.state) {
    std::printf("%-8s %4s %14.3f %14.3f\n", r.horizon.c_str(), r.fifo_dtype.c_str(),
                r.backend_bytes / 1e6, r.formula_bytes / 1e6);
  }
  std::fflush(stdout);
}

std::string ReportJson(const BenchSettings& settings, const BenchResults& results) {
  const Machine& machine = results.machine;
  Json json;
  json["benchmark"] = "seqboat-bench-runtime";
  json["backend"] = "cpu";
  json["machine"] = {
      {"nproc", machine.nproc},
      {"cpu_model", machine.cpu_model},
      {"cpu_family_model", machine.cpu_family_model},
      {"date", machine.date},
      {"threads", settings.threads},
      {"blas", machine.blas_config},
      {"load_average_1m",
       {{"start", machine.load_average_start}, {"end", machine.load_average_end}}},
      {"others_cpu_share",
       {{"run", machine.run_others_share}, {"bandwidth_test", machine.bandwidth_others_share}}},
      {"read_bandwidth_bytes_per_s",
       {{"buffer_bytes", settings.bandwidth_bytes},
        {"single_thread", machine.read_bw_single},
        {"all_threads", machine.read_bw_all},
        {"used_for_bounds", machine.bound_bandwidth()}}}};
  json["settings"] = {{"quick", settings.quick},
                      {"seed", settings.seed},
                      {"decode_batches", settings.batches},
                      {"decode_positions", settings.positions},
                      {"decode_rounds", settings.decode_rounds},
                      {"warmup_steps", settings.warmup_steps},
                      {"min_steps", settings.min_steps},
                      {"max_steps", settings.max_steps},
                      {"step_budget_s", settings.step_budget_s},
                      {"prefill_reps", settings.prefill_reps},
                      {"contention_threshold", settings.contention_threshold},
                      {"contention_retries", settings.contention_retries},
                      {"prefill_chunk", settings.prefill_chunk},
                      {"calibration_probe_warmup_tokens", settings.calibration.probe.warmup_tokens},
                      {"calibration_probe_tokens", settings.calibration.probe.tokens},
                      {"calibration_tolerance", settings.calibration.tolerance}};
  json["config"] = Json::parse(ModelConfigToJson(results.config));
  json["parameters"] = results.parameters;
  json["weights"] = "random (bench/random_model.h), stored F32";
  Json dtypes = Json::array();
  for (const BackendDTypes& d : settings.dtypes) {
    dtypes.push_back(
        {{"weight_dtype", WeightDTypeName(d.weights)}, {"fifo_dtype", WeightDTypeName(d.fifo)}});
  }
  json["dtypes"] = dtypes;
  Json calibration = Json::array();
  for (const RateSpec& rate : results.rates) {
    Json entry = {{"label", rate.label},
                  {"router_style", rate.natural ? "dense" : "token_channel"},
                  {"target_rate", rate.target >= 0 ? Json(rate.target) : Json(nullptr)},
                  {"layer_router_biases", rate.layer_biases},
                  {"probe_rate", rate.probe_rate},
                  {"probe_layer_rates", rate.probe_layer_rates},
                  {"calibration_passes", rate.passes}};
    calibration.push_back(entry);
  }
  json["calibration"] = calibration;
  Json decode_json = Json::array();
  for (const DecodeRow& r : results.decode) {
    decode_json.push_back(
        {{"rate_label", r.rate_label},
         {"weight_dtype", r.weight_dtype},
         {"fifo_dtype", r.fifo_dtype},
         {"measured_rate", r.measured_rate},
         {"measured_layer_rates", r.layer_rates},
         {"busy_layer_rate", r.busy_layer_rate},
         {"batch", r.batch},
         {"position", r.position},
         {"fifo_entries", {{"min", r.fifo_min}, {"mean", r.fifo_mean}, {"max", r.fifo_max}}},
         {"steps", r.steps},
         {"step_ms", {{"median", r.median_ms}, {"p90", r.p90_ms}, {"mean", r.mean_ms}}},
         {"tokens_per_s", r.tokens_per_s},
         {"weight_bytes_per_step", r.weight_bytes},
         {"fifo_bytes_per_step", r.fifo_bytes},
         {"weight_bound_ms", r.weight_bound_ms},
         {"weight_fifo_bound_ms", r.weight_fifo_bound_ms},
         {"x_weight_bound", r.median_ms / r.weight_bound_ms},
         {"x_weight_fifo_bound", r.median_ms / r.weight_fifo_bound_ms},
         {"ema_state_bytes_per_step", r.state_bytes},
         {"weight_fifo_state_bound_ms", r.all_bound_ms},
         {"x_weight_fifo_state_bound", r.median_ms / r.all_bound_ms},
         {"others_cpu_share", r.others_share},
         {"attempts", r.attempts},
         {"kept_round", r.kept_round},
         {"round_median_ms", r.round_median_ms},
         {"round_others_cpu_share", r.round_others_share}});
  }
  json["decode"] = decode_json;
  Json prefill_json = Json::array();
  for (const PrefillRow& r : results.prefill) {
    prefill_json.push_back({{"rate_label", r.rate_label},
                            {"weight_dtype", r.weight_dtype},
                            {"fifo_dtype", r.fifo_dtype},
                            {"measured_rate", r.measured_rate},
                            {"prompt_tokens", r.prompt},
                            {"chunk_tokens", r.chunk},
                            {"reps", r.reps},
                            {"median_s", r.median_s},
                            {"tokens_per_s", r.tokens_per_s},
                            {"others_cpu_share", r.others_share},
                            {"attempts", r.attempts}});
  }
  json["prefill"] = prefill_json;
  Json state_json = Json::array();
  for (const StateRow& r : results.state) {
    state_json.push_back({{"ema_horizon", r.horizon},
                          {"fifo_dtype", r.fifo_dtype},
                          {"state_bytes_per_slot", r.backend_bytes},
                          {"formula_bytes", r.formula_bytes}});
  }
  json["state_bytes"] = state_json;
  return json.dump(2) + "\n";
}

}  // namespace seqboat::bench
