// CPU kernels: BLAS products, norms, MD-EMA steps, rotary, FIFO attention.
#include "runtime/cpu/cpu_ops.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/cpu/vec.h"
#include "runtime/util/dtype.h"
#include "runtime/util/simd_clones.h"

namespace seqboat::cpu {

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
  using vec::Vec16;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) vec::Store(x + i, vec::Silu(vec::Load<Vec16>(x + i)));
  if (i < n) {  // the tail through the same vector code
    Vec16 tail = {};
    std::memcpy(&tail, x + i, sizeof(float) * (n - i));
    tail = vec::Silu(tail);
    std::memcpy(x + i, &tail, sizeof(float) * (n - i));
  }
}

SEQBOAT_SIMD_CLONES
float SoftmaxExp(float* x, int64_t n) {
  using vec::Vec16;
  typedef double Vec16d __attribute__((vector_size(128)));
  float max_value = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max_value = std::max(max_value, x[i]);
  Vec16d sums = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const Vec16 e = vec::Exp(vec::Load<Vec16>(x + i) - max_value);
    vec::Store(x + i, e);
    sums += __builtin_convertvector(e, Vec16d);
  }
  if (i < n) {  // the tail through the same vector code, padded with -inf (e^-inf = 0)
    Vec16 tail = {};
    tail -= INFINITY;
    std::memcpy(&tail, x + i, sizeof(float) * (n - i));
    const Vec16 e = vec::Exp(tail - max_value);
    std::memcpy(x + i, &e, sizeof(float) * (n - i));
    sums += __builtin_convertvector(e, Vec16d);
  }
  double sum = 0.0;
  for (int lane = 0; lane < 16; ++lane) sum += sums[lane];
  return static_cast<float>(1.0 / sum);
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

SEQBOAT_SIMD_CLONES
float DotBf16(const float* a, const uint16_t* b, int64_t n) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += a[i] * Bf16ToFloat(b[i]);
  return sum;
}

SEQBOAT_SIMD_CLONES
void AxpyBf16(float alpha, const uint16_t* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * Bf16ToFloat(x[i]);
}

void RoundToBf16(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = Bf16ToFloat(FloatToBf16(x[i]));
}

// The state of a channel is N floats: with N a multiple of 16 (every configuration in use) a
// channel's update is whole vectors and its sum Sum8 of their fold, else one float at a time.
// Either order is fixed, so a result never depends on the batch or the thread split.
SEQBOAT_SIMD_CLONES
void EmaStepExact(const EmaCoefficients& ema, const float* omega, const float* u, int N,
                  int d_begin, int d_end, float* state, float* m) {
  using vec::Load;
  using vec::Vec16;
  for (int d = d_begin; d < d_end; ++d) {
    const int64_t base = static_cast<int64_t>(d) * N;
    const float ud = u[d];
    float sum = 0.0f;
    if (N % 16 == 0) {
      Vec16 acc = {};
      for (int n = 0; n < N; n += 16) {
        const Vec16 s = Load<Vec16>(ema.input_scale.data() + base + n) * ud +
                        Load<Vec16>(ema.decay.data() + base + n) * Load<Vec16>(state + base + n);
        vec::Store(state + base + n, s);
        acc += s * Load<Vec16>(ema.out_scale.data() + base + n);
      }
      sum = vec::Sum8(vec::Fold(acc));
    } else {
      for (int n = 0; n < N; ++n) {
        float s = ema.input_scale[base + n] * ud + ema.decay[base + n] * state[base + n];
        state[base + n] = s;
        sum += s * ema.out_scale[base + n];
      }
    }
    m[d] = sum + omega[d] * ud;
  }
}

SEQBOAT_SIMD_CLONES
void EmaStepTrained(const EmaCoefficients& ema, const float* omega, const float* u,
                    const float* u_old, int N, int d_begin, int d_end, float* state, float* m) {
  using vec::Load;
  using vec::Vec16;
  for (int d = d_begin; d < d_end; ++d) {
    const int64_t base = static_cast<int64_t>(d) * N;
    const float ud = u[d];
    const float old = u_old != nullptr ? u_old[d] : 0.0f;
    float sum = 0.0f;
    if (N % 16 == 0) {
      Vec16 acc = {};
      for (int n = 0; n < N; n += 16) {
        const Vec16 s = Load<Vec16>(ema.decay.data() + base + n) * Load<Vec16>(state + base + n) +
                        ud - Load<Vec16>(ema.decay_pow_t.data() + base + n) * old;
        vec::Store(state + base + n, s);
        acc += s * Load<Vec16>(ema.out_scale.data() + base + n);
      }
      sum = vec::Sum8(vec::Fold(acc));
    } else {
      for (int n = 0; n < N; ++n) {
        float s = ema.decay[base + n] * state[base + n] + ud - ema.decay_pow_t[base + n] * old;
        state[base + n] = s;
        sum += s * ema.out_scale[base + n];
      }
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
    case AttentionKind::kSoftmax: return SoftmaxExp(scores, count);
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

void AttentionWeights(const AttentionSpec& spec, const float* q, int64_t q_position,
                      const KvSegment* segments, int num_segments, float* scores) {
  int64_t total = 0;
  for (int s = 0; s < num_segments; ++s) {
    const KvSegment& seg = segments[s];
    for (int64_t j = 0; j < seg.count; ++j) {
      const float dot = seg.keys_bf16 != nullptr
                            ? DotBf16(q, seg.keys_bf16 + j * seg.key_stride, spec.z_dim)
                            : Dot(q, seg.keys + j * seg.key_stride, spec.z_dim);
      float score = dot * spec.score_scale;
      if (spec.rel_pos_bias != nullptr) score += RelativeBias(spec, q_position, seg.positions[j]);
      scores[total + j] = score;
    }
    total += seg.count;
  }
  const float normaliser = ScoresToWeights(spec.kind, scores, total);
  for (int64_t j = 0; j < total; ++j) scores[j] *= normaliser;
}

void AttendColumns(const AttentionSpec& spec, const float* weights, const KvSegment* segments,
                   int num_segments, int64_t column_begin, int64_t column_end, float* h) {
  const int64_t width = column_end - column_begin;
  float* out = h + column_begin;
  std::memset(out, 0, sizeof(float) * width);
  int64_t total = 0;
  for (int s = 0; s < num_segments; total += segments[s].count, ++s) {
    const KvSegment& seg = segments[s];
    for (int64_t j = 0; j < seg.count; ++j) {
      const int64_t offset = j * seg.value_stride + column_begin;
      if (seg.values_bf16 != nullptr) {
        AxpyBf16(weights[total + j], seg.values_bf16 + offset, out, width);
      } else {
        Axpy(weights[total + j], seg.values + offset, out, width);
      }
    }
  }
}

void Attend(const AttentionSpec& spec, const float* q, int64_t q_position,
            const KvSegment* segments, int num_segments, float* scores, float* h) {
  AttentionWeights(spec, q, q_position, segments, num_segments, scores);
  AttendColumns(spec, scores, segments, num_segments, 0, spec.hidden_dim, h);
}

void AttendBlock(const AttentionSpec& spec, const float* queries, int64_t num_queries,
                 const int64_t* q_positions, const KvSegment* input_segments, int num_segments,
                 const int64_t* window_begin, const int64_t* window_end, float* scores, float* h) {
  const int Z = spec.z_dim, H = spec.hidden_dim;
  // bf16 segments are widened once per block for the fp32 products.
  std::vector<KvSegment> segments(input_segments, input_segments + num_segments);
  std::vector<std::vector<float>> widened;
  for (KvSegment& seg : segments) {
    if (seg.keys_bf16 == nullptr && seg.values_bf16 == nullptr) continue;
    const auto widen = [&](const uint16_t* src, int64_t stride, int64_t width) {
      std::vector<float>& dst = widened.emplace_back(seg.count * width);
      for (int64_t j = 0; j < seg.count; ++j) {
        ConvertToFloat(DType::kBF16, src + j * stride, width, dst.data() + j * width);
      }
      return dst.data();
    };
    if (seg.keys_bf16 != nullptr) {
      seg.keys = widen(seg.keys_bf16, seg.key_stride, Z);
      seg.key_stride = Z;
      seg.keys_bf16 = nullptr;
    }
    if (seg.values_bf16 != nullptr) {
      seg.values = widen(seg.values_bf16, seg.value_stride, H);
      seg.value_stride = H;
      seg.values_bf16 = nullptr;
    }
  }
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
