// CPU kernels: BLAS products, norms, MD-EMA steps, rotary, FIFO attention.
#include "runtime/cpu/cpu_ops.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/util/simd_clones.h"

namespace seqboat::cpu {

namespace {

// Outputs [begin, end) of y = x . w^T + bias for R rows: each weight row is read once from
// memory and dotted with every x row (which stay in L1). Each row keeps kVecs independent
// vector accumulators of 8 lanes: a single accumulator per dot would wait on the latency of
// every multiply-add. The lanes are summed in a fixed order, so a result never depends on
// the thread split.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float Vec8 __attribute__((vector_size(32)));

// Unaligned load. Always inlined, so the by-value Vec8 never crosses a call: the ABI note
// GCC gives for the portable clone does not apply.
__attribute__((always_inline)) inline Vec8 LoadVec8(const float* p) {
  Vec8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <int R, int kVecs>
__attribute__((always_inline)) inline void StreamRows(const float* x, int64_t in, const float* w,
                                                      const float* bias, int64_t out, float* y,
                                                      int64_t begin, int64_t end) {
  constexpr int kStep = 8 * kVecs;
  const int64_t body = in - in % kStep;
  for (int64_t o = begin; o < end; ++o) {
    const float* wo = w + o * in;
    Vec8 acc[R][kVecs] = {};
    for (int64_t i = 0; i < body; i += kStep) {
      Vec8 wv[kVecs];
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) wv[v] = LoadVec8(wo + i + 8 * v);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < kVecs; ++v) acc[r][v] += LoadVec8(x + r * in + i + 8 * v) * wv[v];
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      Vec8 total = acc[r][0];
#pragma GCC unroll 4
      for (int v = 1; v < kVecs; ++v) total += acc[r][v];
      float sum = ((total[0] + total[4]) + (total[1] + total[5])) +
                  ((total[2] + total[6]) + (total[3] + total[7]));
      for (int64_t i = body; i < in; ++i) sum += x[r * in + i] * wo[i];
      y[r * out + o] = bias != nullptr ? sum + bias[o] : sum;
    }
  }
}

SEQBOAT_SIMD_CLONES
void LinearStreamRange(const float* x, int64_t rows, int64_t in, const float* w, const float* bias,
                       int64_t out, float* y, int64_t begin, int64_t end) {
  switch (rows) {
    case 1: return StreamRows<1, 4>(x, in, w, bias, out, y, begin, end);
    case 2: return StreamRows<2, 4>(x, in, w, bias, out, y, begin, end);
    case 3: return StreamRows<3, 2>(x, in, w, bias, out, y, begin, end);
    case 4: return StreamRows<4, 2>(x, in, w, bias, out, y, begin, end);
    case 5: return StreamRows<5, 2>(x, in, w, bias, out, y, begin, end);
    case 6: return StreamRows<6, 2>(x, in, w, bias, out, y, begin, end);
    case 7: return StreamRows<7, 1>(x, in, w, bias, out, y, begin, end);
    default: return StreamRows<8, 1>(x, in, w, bias, out, y, begin, end);
  }
}
#pragma GCC diagnostic pop

}  // namespace

void Linear(const float* x, int64_t rows, int64_t in, const float* w, const float* bias,
            int64_t out, float* y, ThreadPool* pool) {
  if (rows == 0 || out == 0) return;
  static_assert(kStreamRows == 8, "LinearStreamRange has kernels for 1..8 rows");
  if (rows <= kStreamRows) {
    if (pool == nullptr || rows * in * out < kMinParallelLinear) {  // waking a thread costs more
      LinearStreamRange(x, rows, in, w, bias, out, y, 0, out);
    } else {
      pool->ParallelFor(out, [&](int64_t begin, int64_t end) {
        LinearStreamRange(x, rows, in, w, bias, out, y, begin, end);
      });
    }
    return;
  }
  float beta = 0.0f;
  if (bias != nullptr) {
    for (int64_t r = 0; r < rows; ++r) std::memcpy(y + r * out, bias, out * sizeof(float));
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x, in, w, in, beta, y,
              out);
}

void Norm(NormKind kind, const NormWeights& weights, const float* x, int64_t rows, int64_t dim,
          float* y) {
  constexpr double kEps = 1e-5;
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = x + r * dim;
    float* out = y + r * dim;
    if (kind == NormKind::kLayerNorm) {
      double mean = 0.0;
      for (int64_t i = 0; i < dim; ++i) mean += in[i];
      mean /= dim;
      double var = 0.0;
      for (int64_t i = 0; i < dim; ++i) var += (in[i] - mean) * (in[i] - mean);
      var /= dim;
      const float inv = static_cast<float>(1.0 / std::sqrt(var + kEps));
      const float mean_f = static_cast<float>(mean);
      for (int64_t i = 0; i < dim; ++i) {
        float v = (in[i] - mean_f) * inv;
        if (weights.weight != nullptr) v = v * weights.weight[i] + weights.bias[i];
        out[i] = v;
      }
    } else {  // scalenorm and rmsnorm: x / sqrt(mean(x^2) + eps), scaled by a scalar or a vector
      double mean_sq = 0.0;
      for (int64_t i = 0; i < dim; ++i) mean_sq += static_cast<double>(in[i]) * in[i];
      mean_sq /= dim;
      const float inv = static_cast<float>(1.0 / std::sqrt(mean_sq + kEps));
      for (int64_t i = 0; i < dim; ++i) {
        float v = in[i] * inv;
        if (weights.weight != nullptr)
          v *= kind == NormKind::kScaleNorm ? weights.weight[0] : weights.weight[i];
        out[i] = v;
      }
    }
  }
}

SEQBOAT_SIMD_CLONES
void SiluInPlace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = Silu(x[i]);
}

SEQBOAT_SIMD_CLONES
float Dot(const float* a, const float* b, int64_t n) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

SEQBOAT_SIMD_CLONES
void Axpy(float alpha, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void EmaStepExact(const EmaCoefficients& ema, const float* omega, const float* u, int N,
                  int d_begin, int d_end, float* state, float* m) {
  for (int d = d_begin; d < d_end; ++d) {
    const int64_t base = static_cast<int64_t>(d) * N;
    const float ud = u[d];
    float sum = 0.0f;
    for (int n = 0; n < N; ++n) {
      float s = ema.input_scale[base + n] * ud + ema.decay[base + n] * state[base + n];
      state[base + n] = s;
      sum += s * ema.out_scale[base + n];
    }
    m[d] = sum + omega[d] * ud;
  }
}

void EmaStepTrained(const EmaCoefficients& ema, const float* omega, const float* u,
                    const float* u_old, int N, int d_begin, int d_end, float* state, float* m) {
  for (int d = d_begin; d < d_end; ++d) {
    const int64_t base = static_cast<int64_t>(d) * N;
    const float ud = u[d];
    const float old = u_old != nullptr ? u_old[d] : 0.0f;
    float sum = 0.0f;
    for (int n = 0; n < N; ++n) {
      float s = ema.decay[base + n] * state[base + n] + ud - ema.decay_pow_t[base + n] * old;
      state[base + n] = s;
      sum += s * ema.out_scale[base + n];
    }
    m[d] = sum + omega[d] * ud;
  }
}

void RotaryTable(int64_t position, int z_dim, float* cos_out, float* sin_out) {
  const int half = z_dim / 2;
  for (int i = 0; i < half; ++i) {
    const double theta = std::pow(10000.0, -2.0 * i / z_dim);
    // Reduce the angle before sin/cos: t*theta can reach 1e6 radians over long streams.
    const double angle = std::fmod(static_cast<double>(position) * theta, 2.0 * M_PI);
    cos_out[i] = static_cast<float>(std::cos(angle));
    sin_out[i] = static_cast<float>(std::sin(angle));
  }
}

void ApplyRotary(const float* cos_table, const float* sin_table, int z_dim, float* x) {
  for (int i = 0; i < z_dim / 2; ++i) {
    const float re = x[2 * i], im = x[2 * i + 1];
    x[2 * i] = re * cos_table[i] - im * sin_table[i];
    x[2 * i + 1] = re * sin_table[i] + im * cos_table[i];
  }
}

namespace {

// Raw scores -> attention weights, in place; returns the factor that normalises them
// (1/sum for softmax; relu2 and laplace are unnormalised).
float ScoresToWeights(AttentionKind kind, float* scores, int64_t count) {
  switch (kind) {
    case AttentionKind::kSoftmax: {
      float max_score = -INFINITY;
      for (int64_t j = 0; j < count; ++j) max_score = std::max(max_score, scores[j]);
      double sum = 0.0;
      for (int64_t j = 0; j < count; ++j) {
        scores[j] = std::exp(scores[j] - max_score);
        sum += scores[j];
      }
      return static_cast<float>(1.0 / sum);
    }
    case AttentionKind::kRelu2:
      for (int64_t j = 0; j < count; ++j) {
        const float r = std::max(scores[j], 0.0f);
        scores[j] = r * r;
      }
      return 1.0f;
    case AttentionKind::kLaplace: {
      // 0.5 * (1 + erf((s - mu) / (std * sqrt 2))), mu = sqrt(1/2), std = sqrt(1 / (4 pi)).
      const float mu = static_cast<float>(std::sqrt(0.5));
      const float inv_std_sqrt2 =
          static_cast<float>(1.0 / (std::sqrt(0.25 / M_PI) * std::sqrt(2.0)));
      for (int64_t j = 0; j < count; ++j) {
        scores[j] = 0.5f * (1.0f + std::erf((scores[j] - mu) * inv_std_sqrt2));
      }
      return 1.0f;
    }
  }
  return 1.0f;
}

float RelativeBias(const AttentionSpec& spec, int64_t q_position, int64_t k_position) {
  const int64_t P = spec.max_positions;
  const int64_t index = std::clamp<int64_t>(P - 1 + k_position - q_position, 0, 2 * P - 2);
  return spec.rel_pos_bias[index];
}

}  // namespace

void Attend(const AttentionSpec& spec, const float* q, int64_t q_position,
            const KvSegment* segments, int num_segments, float* scores, float* h) {
  int64_t total = 0;
  for (int s = 0; s < num_segments; ++s) {
    const KvSegment& seg = segments[s];
    for (int64_t j = 0; j < seg.count; ++j) {
      float score = Dot(q, seg.keys + j * seg.key_stride, spec.z_dim) * spec.score_scale;
      if (spec.rel_pos_bias != nullptr) score += RelativeBias(spec, q_position, seg.positions[j]);
      scores[total + j] = score;
    }
    total += seg.count;
  }
  const float normaliser = ScoresToWeights(spec.kind, scores, total);
  std::memset(h, 0, sizeof(float) * spec.hidden_dim);
  total = 0;
  for (int s = 0; s < num_segments; ++s) {
    const KvSegment& seg = segments[s];
    for (int64_t j = 0; j < seg.count; ++j) {
      Axpy(scores[total + j] * normaliser, seg.values + j * seg.value_stride, h, spec.hidden_dim);
    }
    total += seg.count;
  }
}

void AttendBlock(const AttentionSpec& spec, const float* queries, int64_t num_queries,
                 const int64_t* q_positions, const KvSegment* segments, int num_segments,
                 const int64_t* window_begin, const int64_t* window_end, float* scores, float* h) {
  const int Z = spec.z_dim, H = spec.hidden_dim;
  int64_t total = 0;
  for (int s = 0; s < num_segments; ++s) total += segments[s].count;
  // scores[b, column] = q_b . k_column * scale, one product per segment.
  for (int s = 0, column = 0; s < num_segments; column += segments[s].count, ++s) {
    const KvSegment& seg = segments[s];
    if (seg.count == 0) continue;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, num_queries, seg.count, Z,
                spec.score_scale, queries, Z, seg.keys, seg.key_stride, 0.0f, scores + column,
                total);
  }
  std::vector<const int64_t*> column_positions;
  if (spec.rel_pos_bias != nullptr) {
    for (int s = 0; s < num_segments; ++s) {
      for (int64_t j = 0; j < segments[s].count; ++j)
        column_positions.push_back(segments[s].positions + j);
    }
  }
  for (int64_t b = 0; b < num_queries; ++b) {
    float* row = scores + b * total;
    const int64_t begin = window_begin[b], end = window_end[b];
    for (int64_t j = 0; j < begin; ++j) row[j] = 0.0f;
    for (int64_t j = end; j < total; ++j) row[j] = 0.0f;
    if (spec.rel_pos_bias != nullptr) {
      for (int64_t j = begin; j < end; ++j)
        row[j] += RelativeBias(spec, q_positions[b], *column_positions[j]);
    }
    const float normaliser = ScoresToWeights(spec.kind, row + begin, end - begin);
    if (normaliser != 1.0f) {
      for (int64_t j = begin; j < end; ++j) row[j] *= normaliser;
    }
  }
  // h[b] = sum over columns of weight[b, column] * v_column, one product per segment.
  std::memset(h, 0, sizeof(float) * num_queries * H);
  for (int s = 0, column = 0; s < num_segments; column += segments[s].count, ++s) {
    const KvSegment& seg = segments[s];
    if (seg.count == 0) continue;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, num_queries, H, seg.count, 1.0f,
                scores + column, total, seg.values, seg.value_stride, 1.0f, h, H);
  }
}

}  // namespace seqboat::cpu
