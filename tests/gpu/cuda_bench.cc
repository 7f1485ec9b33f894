// seqboat-bench-cuda: the CUDA backend on the paper's enwik8 configuration (L=14, D=616, Z=128,
// H=1232, N=16, w=1024, V=260) with random weights: decode tokens/s at batch 1, 8, 64, 256,
// inter-token latency at batch 1, time to first token for 512- and 2048-token prompts, state
// bytes per slot. Prints a table and writes JSON.
//   seqboat-bench-cuda [--dtype bf16|f16|f32] [--json PATH] [--steps N] [--profile]
// --profile runs one 2048-token prefill and one decode step at batch 256 and at batch 1, eagerly
// (no graphs), for a kernel profiler (ncu) to time; it prints no table.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/cuda_backend.h"
#include "runtime/model/model.h"
#include "tests/gpu/gpu_test_util.h"

namespace seqboat {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
}

int Run(int argc, char** argv) {
  std::string dtype_name = "bf16", json_path;
  int steps = 50;
  bool profile = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--dtype" && i + 1 < argc)
      dtype_name = argv[++i];
    else if (arg == "--json" && i + 1 < argc)
      json_path = argv[++i];
    else if (arg == "--steps" && i + 1 < argc)
      steps = std::max(5, std::atoi(argv[++i]));
    else if (arg == "--profile")
      profile = true;
    else {
      std::fprintf(stderr,
                   "usage: %s [--dtype bf16|f16|f32] [--json PATH] [--steps N] [--profile]\n",
                   argv[0]);
      return 2;
    }
  }
  const absl::Status device = CudaDeviceAvailable(0);
  if (!device.ok()) {
    std::fprintf(stderr, "SKIPPED: %s\n", std::string(device.message()).c_str());
    return 77;
  }
  const DType dtype = dtype_name == "f32"   ? DType::kF32
                      : dtype_name == "f16" ? DType::kF16
                                            : DType::kBF16;
  gpu_testing::RandomModelSpec spec;
  spec.config = gpu_testing::PaperEnwik8Config();
  spec.dtype = dtype;
  spec.seed = 2024;
  const std::string path = gpu_testing::TempPath("enwik8_bench.safetensors");
  if (absl::Status s = gpu_testing::WriteRandomModel(spec, path); !s.ok()) {
    std::fprintf(stderr, "writing the model: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  auto model = Model::Load(path);
  std::filesystem::remove(path);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  const ModelConfig& c = (*model)->config();
  const int V = c.vocab_size;
  constexpr int kMaxBatch = 256;
  CudaBackendOptions options;
  options.num_slots = kMaxBatch;
  options.use_cuda_graphs = !profile;
  auto created = CreateCudaBackend(**model, options);
  if (!created.ok()) {
    std::fprintf(stderr, "%s\n", std::string(created.status().message()).c_str());
    return 1;
  }
  Backend& backend = **created;
  auto check = [](const absl::Status& s) {
    if (!s.ok()) {
      std::fprintf(stderr, "backend error: %s\n", std::string(s.message()).c_str());
      std::exit(1);
    }
  };

  // Time to first token: a whole prompt in one call, last logits only.
  std::vector<float> logits(kMaxBatch * V);
  const std::vector<int32_t> prompt = gpu_testing::RandomTokens(2048, V, 1);
  if (profile) {
    SequenceChunk chunk{0, absl::MakeConstSpan(prompt), false};
    check(backend.Forward({&chunk, 1}, {absl::MakeSpan(logits.data(), V), {}, {}}));
    for (int s = 1; s < kMaxBatch; ++s) check(backend.CopySlot(0, s));
    for (int batch : {256, 1}) {
      std::vector<SequenceChunk> chunks;
      for (int s = 0; s < batch; ++s)
        chunks.push_back({s, absl::MakeConstSpan(&prompt[s], 1), false});
      check(backend.Forward(chunks, {absl::MakeSpan(logits.data(), batch * V), {}, {}}));
    }
    std::printf("profile run done\n");
    return 0;
  }
  double ttft[2] = {0, 0};
  const int prompt_lengths[2] = {512, 2048};
  for (int k = 0; k < 2; ++k) {
    std::vector<double> times;
    for (int rep = 0; rep < 6; ++rep) {
      check(backend.ResetSlot(0));
      SequenceChunk chunk{0, absl::MakeConstSpan(prompt.data(), prompt_lengths[k]), false};
      const auto start = Clock::now();
      check(backend.Forward({&chunk, 1}, {absl::MakeSpan(logits.data(), V), {}, {}}));
      if (rep > 0) times.push_back(Seconds(start, Clock::now()));  // the first warms up
    }
    ttft[k] = Median(times);
  }
  // Slot 0 now holds a 2048-token prompt (FIFOs full at w = 1024 where half the tokens route
  // in); every slot starts decoding from a copy of it.
  SlotStats stats;
  check(backend.Stats(0, &stats));
  double activation = 0;
  int full_fifos = 0;
  for (int l = 0; l < c.layers; ++l) {
    activation += static_cast<double>(stats.activated[l]) / stats.tokens / c.layers;
    full_fifos += stats.fifo_entries[l] == c.window;
  }
  for (int s = 1; s < kMaxBatch; ++s) check(backend.CopySlot(0, s));

  struct Row {
    int batch;
    double step_ms_p50, step_ms_p90, tokens_per_s;
  };
  std::vector<Row> rows;
  const std::vector<int32_t> next = gpu_testing::RandomTokens(kMaxBatch * (steps + 10), V, 2);
  for (int batch : {1, 8, 64, 256}) {
    std::vector<double> times;
    for (int step = 0; step < steps + 5; ++step) {
      std::vector<SequenceChunk> chunks;
      for (int s = 0; s < batch; ++s)
        chunks.push_back({s, absl::MakeConstSpan(&next[step * kMaxBatch + s], 1), false});
      const auto start = Clock::now();
      check(backend.Forward(chunks, {absl::MakeSpan(logits.data(), batch * V), {}, {}}));
      if (step >= 5) times.push_back(Seconds(start, Clock::now()));
    }
    double total = 0;
    for (double t : times) total += t;
    rows.push_back(
        {batch, Median(times) * 1e3, Percentile(times, 0.9) * 1e3, batch * times.size() / total});
  }

  const size_t state_bytes = backend.state_bytes_per_slot();
  std::printf(
      "\nseqboat-bench-cuda: enwik8 configuration (L=%d D=%d Z=%d H=%d N=%d w=%d V=%d), random "
      "weights, %s\n",
      c.layers, c.embed_dim, c.z_dim, c.hidden_dim, c.n_dim, c.window, V, dtype_name.c_str());
  std::printf(
      "GAU activation rate after the 2048-token prompt: %.1f%%; full FIFOs: %d of %d layers\n",
      100 * activation, full_fifos, c.layers);
  std::printf("\n| metric | value | target (issue 6, H100) |\n|---|---|---|\n");
  for (const Row& r : rows) {
    std::printf("| decode tokens/s, batch %d | %.0f (step p50 %.3f ms, p90 %.3f ms) | %s |\n",
                r.batch, r.tokens_per_s, r.step_ms_p50, r.step_ms_p90,
                r.batch == 256 ? ">= 150000" : "");
  }
  std::printf("| inter-token latency, batch 1 (p50) | %.3f ms | <= 0.3 ms |\n",
              rows[0].step_ms_p50);
  std::printf("| time to first token, 512-token prompt | %.3f ms | |\n", ttft[0] * 1e3);
  std::printf("| time to first token, 2048-token prompt | %.3f ms | <= 5 ms |\n", ttft[1] * 1e3);
  std::printf("| state bytes per slot | %zu (%.1f MB) | |\n", state_bytes, state_bytes / 1e6);

  std::string json = absl::StrCat("{\"config\":\"enwik8\",\"dtype\":\"", dtype_name,
                                  "\",\"activation_rate\":", activation, ",\"decode\":[");
  for (size_t i = 0; i < rows.size(); ++i) {
    absl::StrAppend(
        &json, i ? "," : "",
        absl::StrFormat(
            "{\"batch\":%d,\"tokens_per_s\":%.1f,\"step_ms_p50\":%.4f,\"step_ms_p90\":%.4f}",
            rows[i].batch, rows[i].tokens_per_s, rows[i].step_ms_p50, rows[i].step_ms_p90));
  }
  absl::StrAppend(&json,
                  absl::StrFormat("],\"inter_token_latency_ms_batch1\":%.4f,\"ttft_ms_512\":%.4f,"
                                  "\"ttft_ms_2048\":%.4f,\"state_bytes_per_slot\":%zu}",
                                  rows[0].step_ms_p50, ttft[0] * 1e3, ttft[1] * 1e3, state_bytes));
  std::printf("\n%s\n", json.c_str());
  if (!json_path.empty()) std::ofstream(json_path) << json << "\n";
  return 0;
}

}  // namespace
}  // namespace seqboat

int main(int argc, char** argv) { return seqboat::Run(argc, argv); }
