// Kernel-level tests: each launcher against its CPU reference (runtime/cpu/cpu_ops.h) over odd
// sizes, empty inputs, zero/full activation, wrapped FIFOs and w = 1024. Tolerances (fp32):
// 1e-5 absolute + 1e-5 relative unless stated.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ema_scan.h"
#include "kernels/fifo_attention.h"
#include "kernels/router.h"
#include "kernels/row_kernels.h"
#include "runtime/cpu/cpu_ops.h"
#include "tests/gpu/gpu_test_util.h"

namespace seqboat {
namespace {

using namespace seqboat::cuda;  // NOLINT: test of this namespace

// A device copy of a host vector, copied back on demand.
template <typename X>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<X>& host) : size_(host.size()) {
    EXPECT_EQ(cudaMalloc(&data_, std::max<size_t>(1, size_) * sizeof(X)), cudaSuccess);
    if (size_ > 0) {
      EXPECT_EQ(cudaMemcpy(data_, host.data(), size_ * sizeof(X), cudaMemcpyHostToDevice),
                cudaSuccess);
    }
  }
  explicit DeviceArray(size_t size) : DeviceArray(std::vector<X>(size)) {}
  ~DeviceArray() { cudaFree(data_); }
  X* get() const { return data_; }
  std::vector<X> Host() const {
    std::vector<X> host(size_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    if (size_ > 0) {
      EXPECT_EQ(cudaMemcpy(host.data(), data_, size_ * sizeof(X), cudaMemcpyDeviceToHost),
                cudaSuccess);
    }
    return host;
  }

 private:
  X* data_ = nullptr;
  size_t size_;
};

std::vector<float> Random(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

void ExpectClose(const std::vector<float>& actual, const std::vector<float>& expected, float atol,
                 const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i) {
    ASSERT_NEAR(actual[i], expected[i], atol + atol * std::fabs(expected[i]))
        << what << " at " << i;
  }
}

// ---- Norms ----------------------------------------------------------------------------------

TEST(NormRowsKernel, MatchesCpuForEveryKindAndOddSizes) {
  for (NormKind kind : {NormKind::kLayerNorm, NormKind::kScaleNorm, NormKind::kRmsNorm}) {
    for (int dim : {1, 37, 616}) {
      for (int64_t rows : {0, 1, 5}) {
        for (bool affine : {true, false}) {
          const std::vector<float> x = Random(std::max<int64_t>(1, rows) * dim, dim + rows, 3.0f);
          std::vector<float> weight = Random(dim, 5), bias = Random(dim, 6);
          NormWeights cpu_weights;
          if (affine) {
            cpu_weights.weight = weight.data();
            if (kind == NormKind::kLayerNorm) cpu_weights.bias = bias.data();
          }
          std::vector<float> expected(x.size());
          cpu::Norm(kind, cpu_weights, x.data(), rows, dim, expected.data());
          DeviceArray<float> d_x(x), d_w(weight), d_b(bias), d_out(x.size());
          NormRowsParams<float> p;
          p.norm.kind = kind == NormKind::kLayerNorm   ? DeviceNorm::kLayerNorm
                        : kind == NormKind::kScaleNorm ? DeviceNorm::kScaleNorm
                                                       : DeviceNorm::kRmsNorm;
          if (affine) {
            p.norm.weight = d_w.get();
            if (kind == NormKind::kLayerNorm) p.norm.bias = d_b.get();
          }
          p.in = d_x.get();
          p.out = d_out.get();
          p.rows = rows;
          p.dim = dim;
          LaunchNormRows(p, nullptr);
          std::vector<float> actual = d_out.Host();
          actual.resize(rows * dim);
          expected.resize(rows * dim);
          ExpectClose(actual, expected, 1e-5f, "norm");
        }
      }
    }
  }
}

TEST(NormRowsKernel, GathersRows) {
  const int dim = 9;
  const std::vector<float> x = Random(4 * dim, 1);
  const std::vector<int32_t> rows = {3, 0, 3};
  DeviceArray<float> d_x(x), d_out(rows.size() * dim);
  DeviceArray<int32_t> d_rows(rows);
  NormRowsParams<float> p;  // kNone: a plain gather
  p.in = d_x.get();
  p.row_index = d_rows.get();
  p.out = d_out.get();
  p.rows = rows.size();
  p.dim = dim;
  LaunchNormRows(p, nullptr);
  const std::vector<float> out = d_out.Host();
  for (size_t r = 0; r < rows.size(); ++r)
    for (int d = 0; d < dim; ++d) EXPECT_EQ(out[r * dim + d], x[rows[r] * dim + d]);
}

// ---- MD-EMA scan ----------------------------------------------------------------------------

// Chunks of several lengths on different slots (one long enough to be split into time
// segments), both horizons, N from 1 to 32, odd D, with and without the fused pre-norm; the
// trained horizon's ring wraps several times within and across calls.
TEST(EmaScanKernel, MatchesCpuStepsOverChunksAndSlots) {
  for (int N : {1, 3, 16, 32}) {
    for (bool trained : {false, true}) {
      for (bool pre_norm : {false, true}) {
        const int D = 37, T = 7, slots = 3;
        LayerWeights layer{};
        const std::vector<float> delta = Random(D * N, 1), alpha = Random(D * N, 2),
                                 beta = Random(D * N, 3), gamma = Random(D * N, 4),
                                 omega = Random(D, 5);
        const std::vector<float> norm_weight = Random(D, 6), norm_bias = Random(D, 7);
        layer.ema_delta = delta.data(), layer.ema_alpha = alpha.data(),
        layer.ema_beta = beta.data();
        layer.ema_gamma = gamma.data(), layer.ema_omega = omega.data();
        const EmaCoefficients ema = MakeEmaCoefficients(layer, D, N, trained, T);
        std::vector<std::vector<float>> state(slots, std::vector<float>(D * N, 0.0f));
        std::vector<std::vector<float>> ring(slots, std::vector<float>(T * D, 0.0f));
        std::vector<int64_t> position(slots, 0);
        DeviceArray<float> d_state(slots * D * N), d_ring(slots * T * D);
        // The device keeps coefficients and state n-major ([N, D]); the CPU's are [D, N].
        auto transpose = [&](const std::vector<float>& dn) {
          std::vector<float> nd(dn.size());
          for (size_t base = 0; base < dn.size(); base += D * N)
            for (int d = 0; d < D; ++d)
              for (int n = 0; n < N; ++n) nd[base + n * D + d] = dn[base + d * N + n];
          return nd;
        };
        DeviceArray<float> d_decay(transpose(ema.decay)), d_in(transpose(ema.input_scale)),
            d_out_scale(transpose(ema.out_scale)), d_omega(omega);
        DeviceArray<float> d_pow(trained ? transpose(ema.decay_pow_t) : std::vector<float>(D * N));
        DeviceArray<float> d_norm_weight(norm_weight), d_norm_bias(norm_bias);
        for (int call = 0; call < 4; ++call) {
          const std::vector<int> lengths = {1 + call, 5, call % 2 == 0 ? 300 + call : 19 + call};
          const std::vector<int32_t> chunk_slot = {1, 0, 2};
          std::vector<int32_t> begin = {0};
          for (int n : lengths) begin.push_back(begin.back() + n);
          const int rows = begin.back();
          const std::vector<float> x = Random(rows * D, 100 + call, 2.0f);
          // The pre-norm the scan applies: a layernorm with weights, statistics as the CPU's.
          std::vector<float> u(x);
          std::vector<float2> stats(rows, make_float2(0.0f, 1.0f));
          NormWeights cpu_norm;
          cpu_norm.weight = norm_weight.data();
          cpu_norm.bias = norm_bias.data();
          if (pre_norm) {
            cpu::Norm(NormKind::kLayerNorm, cpu_norm, x.data(), rows, D, u.data());
            for (int r = 0; r < rows; ++r) {
              double mean = 0, var = 0;
              for (int d = 0; d < D; ++d) mean += x[r * D + d];
              mean /= D;
              for (int d = 0; d < D; ++d) var += (x[r * D + d] - mean) * (x[r * D + d] - mean);
              var /= D;
              stats[r] = make_float2(static_cast<float>(mean),
                                     static_cast<float>(1.0 / std::sqrt(var + 1e-5)));
            }
          }
          std::vector<int64_t> positions(rows);
          std::vector<float> expected(rows * D);
          for (size_t c = 0; c < lengths.size(); ++c) {
            const int s = chunk_slot[c];
            for (int r = begin[c]; r < begin[c + 1]; ++r) {
              positions[r] = position[s]++;
              const int64_t t = positions[r];
              if (trained) {
                float* ring_row = ring[s].data() + (t % T) * D;
                cpu::EmaStepTrained(ema, omega.data(), u.data() + r * D,
                                    t >= T ? ring_row : nullptr, N, 0, D, state[s].data(),
                                    expected.data() + r * D);
                std::copy(u.data() + r * D, u.data() + (r + 1) * D, ring_row);
              } else {
                cpu::EmaStepExact(ema, omega.data(), u.data() + r * D, N, 0, D, state[s].data(),
                                  expected.data() + r * D);
              }
              cpu::SiluInPlace(expected.data() + r * D, D);
            }
          }
          DeviceArray<float> d_x(x), d_mx(rows * D);
          DeviceArray<float2> d_stats(stats);
          DeviceArray<int64_t> d_positions(positions);
          DeviceArray<int32_t> d_begin(begin), d_slot(chunk_slot);
          EmaScanParams<float> p;
          p.input = d_x.get();
          if (pre_norm) {
            p.norm_stats = d_stats.get();
            p.norm.kind = DeviceNorm::kLayerNorm;
            p.norm.weight = d_norm_weight.get();
            p.norm.bias = d_norm_bias.get();
          }
          p.positions = d_positions.get();
          p.chunk_row_begin = d_begin.get();
          p.chunk_slot = d_slot.get();
          p.ema_state = d_state.get();
          p.state_slot_stride = D * N;
          if (trained) {
            p.input_ring = d_ring.get();
            p.ring_slot_stride = T * D;
          }
          p.decay = d_decay.get();
          p.input_scale = d_in.get();
          p.out_scale = d_out_scale.get();
          p.decay_pow_t = d_pow.get();
          p.omega = d_omega.get();
          p.out = d_mx.get();
          p.chunks = static_cast<int>(lengths.size());
          p.dim = D;
          p.n_dim = N;
          p.truncation = trained ? T : 0;
          p.longest_chunk = *std::max_element(lengths.begin(), lengths.end());
          LaunchEmaScan(p, nullptr);
          const std::string what = "N=" + std::to_string(N) + (trained ? " trained" : " exact") +
                                   (pre_norm ? " pre-norm" : "") + " call " + std::to_string(call);
          ExpectClose(d_mx.Host(), expected, 2e-5f, "EMA output, " + what);
          std::vector<float> all_state;
          for (const auto& st : state) all_state.insert(all_state.end(), st.begin(), st.end());
          ExpectClose(d_state.Host(), transpose(all_state), 2e-5f, "EMA state, " + what);
          if (trained) {
            std::vector<float> all_ring;
            for (const auto& rg : ring) all_ring.insert(all_ring.end(), rg.begin(), rg.end());
            ExpectClose(d_ring.Host(), all_ring, 1e-5f, "ring, " + what);
          }
        }
      }
    }
  }
}

// ---- Router and compaction ------------------------------------------------------------------

TEST(RouterKernel, CompactsInRowOrderForAnyShareActivated) {
  for (int64_t rows : {1, 37, 1024, 3001}) {
    for (int mode = 0; mode < 3; ++mode) {  // 0 random, 1 all on, 2 all off
      const int D = 3;
      std::vector<float> hx = Random(rows * (2 + D), rows + mode);
      if (mode == 1)
        for (int64_t r = 0; r < rows; ++r) hx[r * (2 + D) + 1] = hx[r * (2 + D)] + 1.0f;
      if (mode == 2)
        for (int64_t r = 0; r < rows; ++r)
          hx[r * (2 + D) + 1] = hx[r * (2 + D)];  // ties: not activated
      const std::vector<float> bias = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
      // Chunks of 1..9 rows.
      std::vector<int32_t> chunk_begin = {0}, row_chunk(rows);
      while (chunk_begin.back() < rows)
        chunk_begin.push_back(
            std::min<int64_t>(rows, chunk_begin.back() + 1 + chunk_begin.size() % 9));
      const int chunks = static_cast<int>(chunk_begin.size()) - 1;
      for (int c = 0; c < chunks; ++c)
        for (int r = chunk_begin[c]; r < chunk_begin[c + 1]; ++r) row_chunk[r] = c;
      const double inv_temp = 0.7;
      std::vector<int32_t> expected_rows, expected_index(rows, -1), expected_begin(chunks + 1);
      std::vector<float> expected_conf(rows);
      for (int64_t r = 0; r < rows; ++r) {
        if (chunk_begin[row_chunk[r]] == r) expected_begin[row_chunk[r]] = expected_rows.size();
        const double g0 = hx[r * (2 + D)] * inv_temp, g1 = hx[r * (2 + D) + 1] * inv_temp;
        const double top = std::max(g0, g1), e0 = std::exp(g0 - top), e1 = std::exp(g1 - top);
        const double p0 = e0 / (e0 + e1), p1 = e1 / (e0 + e1);
        expected_conf[r] = static_cast<float>(std::max(p0, p1));
        if (p1 > p0) {
          expected_index[r] = expected_rows.size();
          expected_rows.push_back(r);
        }
      }
      expected_begin[chunks] = expected_rows.size();
      if (mode == 1) {
        EXPECT_EQ(expected_rows.size(), static_cast<size_t>(rows));
      }
      if (mode == 2) {
        EXPECT_TRUE(expected_rows.empty());
      }
      DeviceArray<float> d_hx(hx), d_bias(bias), d_conf(rows), d_conf_out(rows * 2);
      DeviceArray<int32_t> d_chunk(row_chunk), d_begin(chunk_begin), d_index(rows), d_rows(rows),
          d_cab(chunks + 1);
      DeviceArray<uint8_t> d_activations(rows * 2);
      RouterParams p;
      p.hx = d_hx.get();
      p.hx_bias = d_bias.get();
      p.row_stride = 2 + D;
      p.inv_temperature = inv_temp;
      p.row_chunk = d_chunk.get();
      p.chunk_row_begin = d_begin.get();
      p.rows = rows;
      p.chunks = chunks;
      p.confidence = d_conf.get();
      p.row_active_index = d_index.get();
      p.activated_rows = d_rows.get();
      p.chunk_active_begin = d_cab.get();
      p.activations_out = d_activations.get();
      p.confidences_out = d_conf_out.get();
      p.layers = 2;
      p.layer = 1;
      LaunchRouter(p, nullptr);
      std::vector<int32_t> compacted = d_rows.Host();
      compacted.resize(expected_rows.size());
      EXPECT_EQ(compacted, expected_rows) << rows << " rows, mode " << mode;
      EXPECT_EQ(d_index.Host(), expected_index);
      EXPECT_EQ(d_cab.Host(), expected_begin);
      ExpectClose(d_conf.Host(), expected_conf, 1e-7f, "confidence");
      const std::vector<uint8_t> activations = d_activations.Host();
      for (int64_t r = 0; r < rows; ++r)
        ASSERT_EQ(activations[r * 2 + 1], expected_index[r] >= 0 ? 1 : 0);
    }
  }
}

// ---- FIFO attention and push -----------------------------------------------------------------

struct AttentionCase {
  AttentionKind kind;
  bool simple_bias;
  int capacity;
  int fifo_count;      // entries already held
  int fifo_head;       // physical index of the oldest (non-zero: wrapped ring)
  int activated;       // activated rows of the one chunk this call
  int splits;          // 0 = the backend's choice
  bool tiled = false;  // the prefill kernel (tiles of rows) instead of the split kernel
};

void RunAttentionCase(const AttentionCase& ac) {
  const int Z = 32, H = 48, cap = ac.capacity, R = ac.activated, P = 4096;
  const int64_t base_position = 5000;
  // The slot's FIFO (slot 1 of 2; slot 0 holds junk that must not be read).
  const std::vector<float> fifo_keys = Random(2 * cap * Z, 1), fifo_values = Random(2 * cap * H, 2);
  std::vector<int64_t> fifo_positions(2 * cap);
  for (int e = 0; e < ac.fifo_count; ++e)
    fifo_positions[cap + (ac.fifo_head + e) % cap] = base_position - 3 * (ac.fifo_count - e);
  std::vector<FifoMeta> meta = {{0, 0, 0}, {ac.fifo_head, ac.fifo_count, 0}};
  // This call: one chunk of R rows, every row activated, positions base_position + i.
  const std::vector<float> queries = Random(std::max(1, R) * Z, 3, 0.5f),
                           keys = Random(std::max(1, R) * Z, 4),
                           values = Random(std::max(1, R) * H, 5);
  std::vector<float> gates(std::max(1, R) * H, 1.0f);
  std::vector<int32_t> activated_rows(std::max(1, R)), row_chunk(std::max(1, R), 0);
  std::iota(activated_rows.begin(), activated_rows.end(), 0);
  std::vector<int64_t> row_positions(std::max(1, R));
  for (int i = 0; i < std::max(1, R); ++i) row_positions[i] = base_position + i;
  const std::vector<int32_t> chunk_active_begin = {0, R}, chunk_slot = {1};
  const std::vector<float> rel_bias = Random(2 * P - 1, 6, 0.3f);

  cpu::AttentionSpec spec;
  spec.kind = ac.kind;
  spec.z_dim = Z;
  spec.hidden_dim = H;
  spec.score_scale =
      ac.kind == AttentionKind::kSoftmax ? 1.0f / std::sqrt(static_cast<float>(Z)) : 1.0f / cap;
  spec.rel_pos_bias = ac.simple_bias ? rel_bias.data() : nullptr;
  spec.max_positions = P;
  // Reference: the logical window of row i is FIFO entries then rows < i, the last cap of them,
  // then itself.
  std::vector<float> expected(std::max(1, R) * H);
  for (int i = 0; i < R; ++i) {
    std::vector<float> k, v;
    std::vector<int64_t> pos;
    for (int e = 0; e < ac.fifo_count; ++e) {
      const int physical = cap + (ac.fifo_head + e) % cap;
      k.insert(k.end(), fifo_keys.begin() + physical * Z, fifo_keys.begin() + (physical + 1) * Z);
      v.insert(v.end(), fifo_values.begin() + physical * H,
               fifo_values.begin() + (physical + 1) * H);
      pos.push_back(fifo_positions[physical]);
    }
    for (int j = 0; j <= i; ++j) {
      k.insert(k.end(), keys.begin() + j * Z, keys.begin() + (j + 1) * Z);
      v.insert(v.end(), values.begin() + j * H, values.begin() + (j + 1) * H);
      pos.push_back(row_positions[j]);
    }
    const int64_t total = pos.size(), first = std::max<int64_t>(0, total - (cap + 1));
    cpu::KvSegment segment{
        k.data() + first * Z, v.data() + first * H, pos.data() + first, total - first, Z, H};
    std::vector<float> scores(total);
    cpu::Attend(spec, queries.data() + i * Z, row_positions[i], &segment, 1, scores.data(),
                expected.data() + i * H);
  }

  DeviceArray<float> d_fkeys(fifo_keys), d_fvalues(fifo_values), d_queries(queries), d_keys(keys),
      d_values(values), d_gates(gates), d_bias(rel_bias);
  DeviceArray<int64_t> d_fpos(fifo_positions), d_row_positions(row_positions);
  DeviceArray<FifoMeta> d_meta(meta);
  DeviceArray<int32_t> d_rows(activated_rows), d_row_chunk(row_chunk), d_cab(chunk_active_begin),
      d_slot(chunk_slot);
  int splits, split_len;
  ChooseAttentionSplits(std::max(1, R), cap, 132, &splits, &split_len);
  if (ac.splits > 0) {
    splits = ac.splits;
    split_len = (cap + 1 + splits - 1) / splits;
  }
  const int max_rows = std::max(1, R);
  const int tile_splits =
      ac.splits > 0 ? std::min(ac.splits, kMaxTileSplits) : ChooseTileSplits(max_rows, 132);
  const int64_t partial_rows =
      std::max<int64_t>(max_rows * splits, TiledPartialRows(max_rows, tile_splits));
  DeviceArray<float> d_partial_h(partial_rows * H), d_partial_max(partial_rows),
      d_partial_sum(partial_rows), d_out(max_rows * H);
  DeviceArray<int32_t> d_counters(max_rows);

  ActivatedRows rows;
  rows.activated_rows = d_rows.get();
  rows.chunk_active_begin = d_cab.get();
  rows.row_chunk = d_row_chunk.get();
  rows.chunk_slot = d_slot.get();
  rows.row_positions = d_row_positions.get();
  rows.chunks = 1;
  rows.max_rows = max_rows;
  FifoView<float> fifo;
  fifo.keys = d_fkeys.get();
  fifo.values = d_fvalues.get();
  fifo.positions = d_fpos.get();
  fifo.meta = d_meta.get();
  fifo.keys_slot_stride = cap * Z;
  fifo.values_slot_stride = cap * H;
  fifo.positions_slot_stride = cap;
  fifo.meta_slot_stride = 1;
  fifo.capacity = cap;
  FifoAttentionParams<float> p;
  p.rows = rows;
  p.fifo = fifo;
  p.kind = ac.kind == AttentionKind::kSoftmax ? DeviceAttention::kSoftmax
           : ac.kind == AttentionKind::kRelu2 ? DeviceAttention::kRelu2
                                              : DeviceAttention::kLaplace;
  p.queries = d_queries.get();
  p.keys = d_keys.get();
  p.values = d_values.get();
  p.gates = d_gates.get();
  p.rel_pos_bias = ac.simple_bias ? d_bias.get() : nullptr;
  p.max_positions = P;
  p.score_scale = spec.score_scale;
  p.z_dim = Z;
  p.hidden_dim = H;
  p.splits = splits;
  p.split_len = split_len;
  p.tile_splits = tile_splits;
  p.partial_h = d_partial_h.get();
  p.partial_max = d_partial_max.get();
  p.partial_sum = d_partial_sum.get();
  p.row_counters = d_counters.get();
  p.longest_chunk = ac.tiled ? kTiledAttentionMinChunk : 1;
  p.out = d_out.get();
  LaunchFifoAttention(p, nullptr);
  std::vector<float> actual = d_out.Host();
  actual.resize(R * H);
  expected.resize(R * H);
  ExpectClose(actual, expected, 2e-5f, "attention");

  // Push then commit: the FIFO's logical content is the last cap of (old entries, new rows).
  FifoPushParams<float> push;
  push.rows = rows;
  push.fifo = fifo;
  push.keys = d_keys.get();
  push.values = d_values.get();
  push.z_dim = Z;
  push.hidden_dim = H;
  LaunchFifoPush(push, nullptr);
  FifoCommitParams commit;
  commit.meta = d_meta.get();
  commit.chunk_slot = d_slot.get();
  commit.chunk_active_begin = d_cab.get();
  commit.chunks = 1;
  commit.layers = 1;
  commit.capacity = cap;
  LaunchFifoCommit(commit, nullptr);
  const std::vector<FifoMeta> after = d_meta.Host();
  const std::vector<float> after_keys = d_fkeys.Host();
  const std::vector<int64_t> after_positions = d_fpos.Host();
  std::vector<int64_t> logical_positions;
  std::vector<const float*> logical_keys;
  for (int e = 0; e < ac.fifo_count; ++e) {
    const int physical = cap + (ac.fifo_head + e) % cap;
    logical_positions.push_back(fifo_positions[physical]);
    logical_keys.push_back(fifo_keys.data() + physical * Z);
  }
  for (int i = 0; i < R; ++i) {
    logical_positions.push_back(row_positions[i]);
    logical_keys.push_back(keys.data() + i * Z);
  }
  const int64_t kept = std::min<int64_t>(cap, logical_positions.size());
  ASSERT_EQ(after[1].count, kept);
  EXPECT_EQ(after[1].activated, R);
  EXPECT_EQ(after[0].count, 0) << "another slot's bookkeeping changed";
  for (int64_t e = 0; e < kept; ++e) {
    const int64_t logical = logical_positions.size() - kept + e;
    const int64_t physical = cap + (after[1].head + e) % cap;
    ASSERT_EQ(after_positions[physical], logical_positions[logical]) << "entry " << e;
    for (int z = 0; z < Z; ++z) ASSERT_EQ(after_keys[physical * Z + z], logical_keys[logical][z]);
  }
}

TEST(FifoAttentionKernel, MatchesCpuOnWrappedW1024Fifos) {
  // Decode-like (one row), prefill-like (many rows, evicting within the chunk), every kind.
  for (bool tiled : {false, true}) {
    for (AttentionKind kind :
         {AttentionKind::kSoftmax, AttentionKind::kRelu2, AttentionKind::kLaplace}) {
      for (bool bias : {false, true}) {
        RunAttentionCase({kind, bias, 1024, 1024, 700, 1, 0, tiled});
        RunAttentionCase({kind, bias, 1024, 1000, 1020, 77, 0, tiled});
        RunAttentionCase({kind, bias, 1024, 300, 900, 1500, 0, tiled});
      }
    }
  }
}

TEST(FifoAttentionKernel, EmptyFifoSmallCapacityAndForcedSplits) {
  for (bool tiled : {false, true}) {
    RunAttentionCase({AttentionKind::kSoftmax, false, 5, 0, 0, 1, 0, tiled});
    RunAttentionCase({AttentionKind::kSoftmax, false, 5, 0, 0, 13, 0, tiled});
    RunAttentionCase({AttentionKind::kSoftmax, true, 1, 1, 0, 4, 0, tiled});
    RunAttentionCase(
        {AttentionKind::kSoftmax, false, 1024, 0, 0, 0, 0, tiled});  // no activated rows
  }
  for (bool tiled : {false, true}) {
    for (int splits : {1, 2, 3, 64})
      RunAttentionCase({AttentionKind::kSoftmax, true, 1024, 1024, 3, 2, splits, tiled});
    for (int splits : {2, 5, 8})
      RunAttentionCase({AttentionKind::kRelu2, false, 1024, 1000, 9, 300, splits, tiled});
  }
}

}  // namespace
}  // namespace seqboat

int main(int argc, char** argv) { return seqboat::gpu_testing::GpuTestMain(argc, argv); }
