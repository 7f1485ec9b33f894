// seqboat-bench-linear: the CPU backend's products (cpu::Linear) against OpenBLAS sgemm on its
// own threads (the backend's path before its own kernels), side by side in one run, at the
// enwik8-size model's matrix shapes and the row counts of decode batches and prefill chunks. A
// "step" is one product per layer through that many separate copies of the matrix, so that the
// weights come from memory as in a decode step. Prints a table and writes JSON.
#include <cblas.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bench/memory_bandwidth.h"
#include "nlohmann/json.hpp"
#include "runtime/cpu/cpu_ops.h"
#include "runtime/util/thread_pool.h"

ABSL_FLAG(int, threads, 0, "Threads for both kernels (0 = all hardware threads).");
ABSL_FLAG(int, layers, 14, "Copies of each matrix a step goes through (the model's layers).");
ABSL_FLAG(std::string, rows, "1,8,16,32,64,128,512",
          "Comma-separated row counts (decode batch sizes, prefill chunk lengths).");
ABSL_FLAG(int, repeats, 7, "Timed steps per case (the median is reported), after one untimed.");
ABSL_FLAG(std::string, json_out, "", "Write the results as JSON here.");
ABSL_FLAG(std::string, weight_dtypes, "f32",
          "Comma-separated matrix dtypes to time our kernels with: f32, bf16, int8 (the "
          "server's --weight_dtype). sgemm always reads the fp32 weights.");

namespace seqboat::bench {
namespace {

struct Shape {
  const char* name;
  int64_t out;
  int64_t in;
};
// The enwik8 configuration (D=616, Z=128, H=1232, V=260).
constexpr Shape kShapes[] = {
    {"hx_proj", 618, 616}, {"mx_proj", 2592, 616}, {"h_proj", 616, 1232}, {"output", 260, 616}};

// The path the backend took before its tiled kernel: sgemm with the bias copied into y first.
void SgemmLinear(const float* x, int64_t rows, int64_t in, const float* w, const float* bias,
                 int64_t out, float* y) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(y + r * out, bias, out * sizeof(float));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x, in, w, in, 1.0f, y,
              out);
}

template <typename Fn>
double MedianStepSeconds(int repeats, const Fn& step) {
  step();
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const absl::Time start = absl::Now();
    step();
    times.push_back(absl::ToDoubleSeconds(absl::Now() - start));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

int Run() {
  int threads = absl::GetFlag(FLAGS_threads);
  if (threads < 0) {
    std::fprintf(stderr, "seqboat-bench-linear: --threads %d: expected >= 0\n", threads);
    return 2;
  }
  if (threads == 0) threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const int layers = absl::GetFlag(FLAGS_layers);
  const int repeats = absl::GetFlag(FLAGS_repeats);
  if (layers < 1 || repeats < 1) {
    std::fprintf(stderr, "seqboat-bench-linear: --layers and --repeats: expected >= 1\n");
    return 2;
  }
  std::vector<int64_t> row_counts;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_rows), ',')) {
    int64_t value = 0;
    if (!absl::SimpleAtoi(part, &value) || value < 1) {
      std::fprintf(stderr, "seqboat-bench-linear: --rows entry '%s': expected an integer >= 1\n",
                   std::string(part).c_str());
      return 2;
    }
    row_counts.push_back(value);
  }
  std::vector<cpu::MatrixDType> dtypes;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_weight_dtypes), ',')) {
    if (part == "f32") {
      dtypes.push_back(cpu::MatrixDType::kF32);
    } else if (part == "bf16") {
      dtypes.push_back(cpu::MatrixDType::kBF16);
    } else if (part == "int8") {
      dtypes.push_back(cpu::MatrixDType::kInt8);
    } else {
      std::fprintf(stderr,
                   "seqboat-bench-linear: --weight_dtypes entry '%s': expected f32, bf16 "
                   "or int8\n",
                   std::string(part).c_str());
      return 2;
    }
  }
  ThreadPool pool(threads);
  const ReadBandwidth bandwidth = MeasureReadBandwidth(size_t{1} << 30, threads, 3);

  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  nlohmann::json json;
  json["threads"] = threads;
  json["layers"] = layers;
  json["read_bandwidth_gbs"] = bandwidth.all_threads / 1e9;
  json["date"] = absl::FormatTime("%Y-%m-%d %H:%M UTC", absl::Now(), absl::UTCTimeZone());
  std::printf(
      "seqboat-bench-linear: %d threads, %d copies of each matrix per step, read "
      "bandwidth %.1f GB/s, %s\n",
      threads, layers, bandwidth.all_threads / 1e9, json["date"].get<std::string>().c_str());
  std::printf("%-8s %5s %5s | %10s %8s %6s | %10s %8s | %7s\n", "matrix", "dtype", "rows",
              "ours ms", "GFLOP/s", "xW", "sgemm ms", "GFLOP/s", "sgemm/ours");
  for (const Shape& shape : kShapes) {
    std::vector<std::vector<float>> weights(layers, std::vector<float>(shape.out * shape.in));
    for (auto& w : weights) {
      for (float& v : w) v = normal(rng);
    }
    std::vector<float> bias(shape.out);
    for (float& v : bias) v = normal(rng);
    for (int64_t rows : row_counts) {
      std::vector<float> x(rows * shape.in), y(rows * shape.out);
      for (float& v : x) v = normal(rng);
      openblas_set_num_threads(threads);  // the previous path: OpenBLAS's own threads
      const double sgemm = MedianStepSeconds(repeats, [&] {
        for (const auto& w : weights)
          SgemmLinear(x.data(), rows, shape.in, w.data(), bias.data(), shape.out, y.data());
      });
      const double flops = 2.0 * layers * rows * shape.out * shape.in;
      for (cpu::MatrixDType dtype : dtypes) {
        std::vector<cpu::Matrix> matrices;
        for (const auto& w : weights)
          matrices.push_back(cpu::Matrix::Make(w.data(), shape.out, shape.in, dtype));
        const double weight_seconds =
            static_cast<double>(layers) * matrices[0].bytes() / bandwidth.all_threads;
        cpu::UseSingleThreadedBlas();  // as the backend runs it
        const double ours = MedianStepSeconds(repeats, [&] {
          for (const cpu::Matrix& m : matrices)
            cpu::Linear(x.data(), rows, m, bias.data(), y.data(), &pool);
        });
        const char* name = cpu::MatrixDTypeName(dtype);
        std::printf("%-8s %5s %5lld | %10.3f %8.1f %6.2f | %10.3f %8.1f | %7.2f\n", shape.name,
                    name, static_cast<long long>(rows), 1e3 * ours, flops / ours / 1e9,
                    ours / weight_seconds, 1e3 * sgemm, flops / sgemm / 1e9, sgemm / ours);
        json["cases"].push_back({{"matrix", shape.name},
                                 {"weight_dtype", name},
                                 {"out", shape.out},
                                 {"in", shape.in},
                                 {"rows", rows},
                                 {"ours_ms", 1e3 * ours},
                                 {"sgemm_ms", 1e3 * sgemm},
                                 {"ours_gflops", flops / ours / 1e9},
                                 {"sgemm_gflops", flops / sgemm / 1e9},
                                 {"ours_over_weight_bound", ours / weight_seconds}});
      }
    }
  }
  std::printf(
      "xW: our time over the time to read the step's weights (in the row's dtype) once at the "
      "read bandwidth\n");
  if (const std::string path = absl::GetFlag(FLAGS_json_out); !path.empty()) {
    std::ofstream(path) << json.dump(2) << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace seqboat::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "seqboat-bench-linear [--threads N] [--rows 1,8,64] [--weight_dtypes f32,bf16,int8] "
      "[--json_out FILE]: cpu::Linear against "
      "OpenBLAS sgemm at the enwik8-size model's shapes");
  absl::ParseCommandLine(argc, argv);
  return seqboat::bench::Run();
}
