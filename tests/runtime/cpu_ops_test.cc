// CPU kernels against direct formulas: rotary at huge positions, attention kinds, EMA horizons.
#include "runtime/cpu/cpu_ops.h"

#include <cfloat>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/cpu/bf16_products.h"
#include "runtime/util/dtype.h"

namespace seqboat::cpu {
namespace {

std::vector<float> RandomVector(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof(b));
  return b;
}
float FromBits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof(f));
  return f;
}

// Rotary must depend only on position differences, even 10^9 tokens into a stream.
TEST(CpuOps, RotaryScoresDependOnDifferenceOnly) {
  std::mt19937 rng(1);
  const int Z = 16;
  std::vector<float> q0 = RandomVector(Z, rng), k0 = RandomVector(Z, rng);
  std::vector<float> cq(Z / 2), sq(Z / 2), ck(Z / 2), sk(Z / 2);
  auto score = [&](int64_t tq, int64_t tk) {
    std::vector<float> q = q0, k = k0;
    RotaryTable(tq, Z, cq.data(), sq.data());
    RotaryTable(tk, Z, ck.data(), sk.data());
    ApplyRotary(cq.data(), sq.data(), Z, q.data());
    ApplyRotary(ck.data(), sk.data(), Z, k.data());
    return Dot(q.data(), k.data(), Z);
  };
  const float near = score(37, 30);
  EXPECT_NEAR(score(1000000037, 1000000030), near, 1e-4f);
  EXPECT_NEAR(score(16384 + 37, 16384 + 30), near, 1e-5f);
}

TEST(CpuOps, AttentionKindsMatchDirectFormulas) {
  std::mt19937 rng(2);
  const int Z = 6, H = 5, n = 9;
  std::vector<float> q = RandomVector(Z, rng), keys = RandomVector(n * Z, rng),
                     values = RandomVector(n * H, rng);
  std::vector<int64_t> positions(n);
  for (int j = 0; j < n; ++j) positions[j] = 3 * j;
  std::vector<float> bias = RandomVector(2 * 20 - 1, rng, 0.3f);
  for (AttentionKind kind :
       {AttentionKind::kSoftmax, AttentionKind::kRelu2, AttentionKind::kLaplace}) {
    AttentionSpec spec{kind,        Z, H, kind == AttentionKind::kSoftmax ? 0.4f : 1.0f / 4,
                       bias.data(), 20};
    // Two segments (split 4 + 5) give the same answer as one.
    KvSegment one{keys.data(), values.data(), positions.data(), n, Z, H};
    KvSegment two[2] = {
        {keys.data(), values.data(), positions.data(), 4, Z, H},
        {keys.data() + 4 * Z, values.data() + 4 * H, positions.data() + 4, n - 4, Z, H}};
    std::vector<float> scores(n), h1(H), h2(H);
    const int64_t q_position = 3 * (n - 1);
    Attend(spec, q.data(), q_position, &one, 1, scores.data(), h1.data());
    Attend(spec, q.data(), q_position, two, 2, scores.data(), h2.data());
    // Direct computation in double.
    std::vector<double> weight(n);
    double total = 0.0;
    for (int j = 0; j < n; ++j) {
      double s = 0.0;
      for (int i = 0; i < Z; ++i) s += static_cast<double>(q[i]) * keys[j * Z + i];
      s = s * spec.score_scale + bias[std::clamp<int64_t>(19 + positions[j] - q_position, 0, 38)];
      if (kind == AttentionKind::kSoftmax) {
        weight[j] = std::exp(s);
      } else if (kind == AttentionKind::kRelu2) {
        weight[j] = s > 0 ? s * s : 0.0;
      } else {
        weight[j] =
            0.5 *
            (1.0 + std::erf((s - std::sqrt(0.5)) / (std::sqrt(0.25 / M_PI) * std::sqrt(2.0))));
      }
      total += weight[j];
    }
    for (int i = 0; i < H; ++i) {
      double h = 0.0;
      for (int j = 0; j < n; ++j) h += weight[j] * values[j * H + i];
      if (kind == AttentionKind::kSoftmax) h /= total;
      EXPECT_NEAR(h1[i], h, 1e-5) << AttentionKindName(kind);
      EXPECT_NEAR(h2[i], h, 1e-5) << AttentionKindName(kind);
    }
  }
}

// |got - want| in units of the last place of want rounded to float.
double UlpsFrom(float got, double want) {
  const float rounded = static_cast<float>(want);
  const double ulp = std::nextafter(std::fabs(rounded), INFINITY) - std::fabs(rounded);
  return std::fabs(static_cast<double>(got) - want) / ulp;
}

TEST(CpuOps, SoftmaxExpIsWithinTwoUlpOfExpAndNormalisesTheSum) {
  // e^(x - max) for x - max over the whole normal range of results (-87.3 .. 0), against double
  // exp; below ln(FLT_MIN) the result is 0; the normaliser is 1 / the sum.
  std::mt19937 rng(31);
  std::uniform_real_distribution<float> uniform(-87.33f, 0.0f);
  std::vector<float> x(4099);
  for (float& v : x) v = uniform(rng);
  const std::vector<float> specials = {0.0f,        -1e-30f, -1e-7f,  -0.3465736f,
                                       -0.3465737f, -1.0f,   -86.64f, -87.33f,
                                       -87.336f,    -87.34f, -100.0f, -INFINITY};
  std::copy(specials.begin(), specials.end(), x.begin());
  for (int64_t i = 0; i < 64; ++i) x[12 + i] = -static_cast<float>(i) * 0.6931472f;  // e^(-i ln2)
  for (int64_t n : {int64_t{4099}, int64_t{16}, int64_t{12}, int64_t{1}}) {
    std::vector<float> e(x.begin(), x.begin() + n);
    const float normaliser = SoftmaxExp(e.data(), n);  // the maximum is x[0] = 0
    double sum = 0.0, worst = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double want = std::exp(static_cast<double>(x[i]));
      sum += want;
      if (want < FLT_MIN) {
        ASSERT_EQ(e[i], 0.0f) << "x " << x[i];
      } else {
        worst = std::max(worst, UlpsFrom(e[i], want));
        ASSERT_LE(UlpsFrom(e[i], want), 2.0) << "x " << x[i] << " got " << e[i];
      }
    }
    EXPECT_NEAR(normaliser * sum, 1.0, 1e-6) << n;
    if (n == 4099) {
      EXPECT_GT(worst, 0.0);  // measured, not vacuous
    }
  }
  // Shifted by the maximum: e^(x - 5) with 5 the largest.
  std::vector<float> shifted = {5.0f, 4.0f, -3.0f};
  SoftmaxExp(shifted.data(), 3);
  EXPECT_LE(UlpsFrom(shifted[1], std::exp(-1.0)), 2.0);
  EXPECT_LE(UlpsFrom(shifted[2], std::exp(-8.0)), 2.0);
}

TEST(CpuOps, SiluIsWithinThreeUlpAndTheSameBitsAnywhereInTheVector) {
  std::mt19937 rng(32);
  std::uniform_real_distribution<float> uniform(-100.0f, 100.0f);
  std::vector<float> x(1037);
  for (float& v : x) v = uniform(rng);
  const std::vector<float> specials = {0.0f,  -0.0f,  1e-30f, -1e-30f, 1.0f,    -1.0f,
                                       20.0f, -20.0f, 87.0f,  -87.0f,  88.5f,   -88.5f,
                                       88.8f, -88.8f, -89.0f, 104.0f,  INFINITY};
  std::copy(specials.begin(), specials.end(), x.begin());
  std::vector<float> y = x;
  SiluInPlace(y.data(), static_cast<int64_t>(y.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double xd = x[i];
    const double want = std::isinf(xd) ? xd : xd / (1.0 + std::exp(-xd));
    if (std::isinf(xd)) {
      ASSERT_EQ(y[i], x[i]);
    } else if (xd < -88.72) {  // e^-x overflows (as expf's does): -0 for a true value below 1e-36
      ASSERT_NEAR(y[i], want, 1e-36) << "x " << x[i];
    } else {
      ASSERT_LE(UlpsFrom(y[i], want), 3.0) << "x " << x[i] << " got " << y[i];
    }
  }
  std::vector<float> nan = {NAN};
  SiluInPlace(nan.data(), 1);
  EXPECT_TRUE(std::isnan(nan[0]));
  // Every value at every lane and in a tail of every length: the same bits as at index 0.
  for (int64_t length = 1; length <= 33; ++length) {
    for (int64_t at = 0; at < length; ++at) {
      std::vector<float> v(length, 0.5f);
      v[at] = x[length];
      SiluInPlace(v.data(), length);
      std::vector<float> alone = {x[length]};
      SiluInPlace(alone.data(), 1);
      ASSERT_EQ(Bits(v[at]), Bits(alone[0])) << "length " << length << " at " << at;
    }
  }
}

// bf16 keys and values attend exactly as the fp32 numbers they widen to, segment by segment
// (a bf16 FIFO run beside the chunk's fp32 rows), one query at a time and in blocks.
TEST(CpuOps, Bf16SegmentsAttendAsTheirWidenedValues) {
  std::mt19937 rng(5);
  const int Z = 16, H = 37, n = 23, fifo = 15, queries = 6;
  std::vector<float> q = RandomVector(queries * Z, rng), keys = RandomVector(n * Z, rng),
                     values = RandomVector(n * H, rng);
  RoundToBf16(keys.data(), n * Z);  // what a bf16 FIFO holds, as fp32
  RoundToBf16(values.data(), n * H);
  std::vector<uint16_t> keys_bf16(n * Z), values_bf16(n * H);
  for (int i = 0; i < n * Z; ++i) keys_bf16[i] = FloatToBf16(keys[i]);
  for (int i = 0; i < n * H; ++i) values_bf16[i] = FloatToBf16(values[i]);
  for (int i = 0; i < n * Z; ++i) ASSERT_EQ(Bits(Bf16ToFloat(keys_bf16[i])), Bits(keys[i]));
  std::vector<int64_t> positions(n);
  for (int j = 0; j < n; ++j) positions[j] = 2 * j;
  for (AttentionKind kind :
       {AttentionKind::kSoftmax, AttentionKind::kRelu2, AttentionKind::kLaplace}) {
    AttentionSpec spec{kind, Z, H, kind == AttentionKind::kSoftmax ? 0.25f : 1.0f / 8};
    const KvSegment f32[2] = {{keys.data(), values.data(), positions.data(), fifo, Z, H},
                              {keys.data() + fifo * Z, values.data() + fifo * H,
                               positions.data() + fifo, n - fifo, Z, H}};
    KvSegment mixed[2] = {f32[0], f32[1]};
    mixed[0].keys = mixed[0].values = nullptr;
    mixed[0].keys_bf16 = keys_bf16.data();
    mixed[0].values_bf16 = values_bf16.data();
    std::vector<float> scores(queries * n), expected(queries * H), got(queries * H);
    for (int b = 0; b < queries; ++b) {
      const int64_t q_position = 2 * (n - queries + b);
      Attend(spec, q.data() + b * Z, q_position, f32, 2, scores.data(), expected.data() + b * H);
      Attend(spec, q.data() + b * Z, q_position, mixed, 2, scores.data(), got.data() + b * H);
    }
    for (int i = 0; i < queries * H; ++i)
      EXPECT_NEAR(got[i], expected[i], 1e-6) << AttentionKindName(kind) << " single, " << i;
    std::vector<int64_t> q_positions(queries), begin(queries), end(queries);
    for (int b = 0; b < queries; ++b) {
      q_positions[b] = 2 * (n - queries + b);
      begin[b] = b;  // windows that slide as a block's do
      end[b] = n - queries + b + 1;
    }
    AttendBlock(spec, q.data(), queries, q_positions.data(), f32, 2, begin.data(), end.data(),
                scores.data(), expected.data());
    AttendBlock(spec, q.data(), queries, q_positions.data(), mixed, 2, begin.data(), end.data(),
                scores.data(), got.data());
    for (int i = 0; i < queries * H; ++i)
      EXPECT_EQ(got[i], expected[i]) << AttentionKindName(kind) << " block, " << i;
  }
}

// One query's value sums split into column ranges at multiples of 16 give every column the
// bits of one Attend call, for fp32 and bf16 values.
TEST(CpuOps, AttendColumnsSplitGivesAttendsBits) {
  std::mt19937 rng(6);
  const int Z = 16, H = 100, n = 41;  // H not a multiple of 16: the last range has a tail
  std::vector<float> q = RandomVector(Z, rng), keys = RandomVector(n * Z, rng),
                     values = RandomVector(n * H, rng);
  std::vector<uint16_t> values_bf16(n * H);
  for (int i = 0; i < n * H; ++i) values_bf16[i] = FloatToBf16(values[i]);
  std::vector<int64_t> positions(n);
  for (int j = 0; j < n; ++j) positions[j] = j;
  for (bool bf16 : {false, true}) {
    AttentionSpec spec{AttentionKind::kSoftmax, Z, H, 0.25f};
    KvSegment segments[2] = {
        {keys.data(), values.data(), positions.data(), 30, Z, H},
        {keys.data() + 30 * Z, values.data() + 30 * H, positions.data() + 30, n - 30, Z, H}};
    if (bf16) {
      segments[0].values = nullptr;
      segments[0].values_bf16 = values_bf16.data();
    }
    std::vector<float> scores(n), whole(H), split(H, -1.0f), weights(n);
    Attend(spec, q.data(), n - 1, segments, 2, scores.data(), whole.data());
    AttentionWeights(spec, q.data(), n - 1, segments, 2, weights.data());
    for (int64_t begin : {0, 16, 64}) {  // ranges [0,16), [16,64), [64,100)
      const int64_t end = begin == 0 ? 16 : begin == 16 ? 64 : H;
      AttendColumns(spec, weights.data(), segments, 2, begin, end, split.data());
    }
    for (int i = 0; i < H; ++i) EXPECT_EQ(Bits(split[i]), Bits(whole[i])) << bf16 << " " << i;
  }
}

TEST(CpuOps, NormsMatchDirectFormulas) {
  std::mt19937 rng(3);
  const int D = 7;
  std::vector<float> x = RandomVector(D, rng, 2.0f), w = RandomVector(D, rng),
                     b = RandomVector(D, rng);
  std::vector<float> y(D);
  double mean = 0, var = 0, sq = 0;
  for (float v : x) mean += v / D;
  for (float v : x) var += (v - mean) * (v - mean) / D, sq += static_cast<double>(v) * v / D;
  Norm(NormKind::kLayerNorm, {w.data(), b.data()}, x.data(), 1, D, y.data());
  for (int i = 0; i < D; ++i)
    EXPECT_NEAR(y[i], (x[i] - mean) / std::sqrt(var + 1e-5) * w[i] + b[i], 1e-5);
  Norm(NormKind::kLayerNorm, {}, x.data(), 1, D, y.data());
  for (int i = 0; i < D; ++i) EXPECT_NEAR(y[i], (x[i] - mean) / std::sqrt(var + 1e-5), 1e-5);
  Norm(NormKind::kRmsNorm, {w.data(), nullptr}, x.data(), 1, D, y.data());
  for (int i = 0; i < D; ++i) EXPECT_NEAR(y[i], x[i] / std::sqrt(sq + 1e-5) * w[i], 1e-5);
  const float scalar = 1.7f;
  Norm(NormKind::kScaleNorm, {&scalar, nullptr}, x.data(), 1, D, y.data());
  for (int i = 0; i < D; ++i) EXPECT_NEAR(y[i], x[i] * scalar / std::sqrt(sq + 1e-5), 1e-5);
}

// Before T tokens the truncated horizon equals the exact one; after, it forgets u_{t-T}. N = 2
// and 3 take the one-float-at-a-time path, 16 and 32 (the paper's N = 16) the vector path.
class EmaSteps : public testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(CpuOps, EmaSteps, testing::Values(2, 3, 16, 32));

TEST_P(EmaSteps, TrainedHorizonForgetsExactlyTInputs) {
  std::mt19937 rng(4);
  const int D = 3, N = GetParam(), T = 5, steps = 12;
  std::vector<float> delta = RandomVector(D * N, rng), alpha = RandomVector(D * N, rng),
                     beta = RandomVector(D * N, rng), gamma = RandomVector(D * N, rng),
                     omega = RandomVector(D, rng);
  LayerWeights layer{};
  layer.ema_delta = delta.data();
  layer.ema_alpha = alpha.data();
  layer.ema_beta = beta.data();
  layer.ema_gamma = gamma.data();
  const EmaCoefficients exact = MakeEmaCoefficients(layer, D, N, false, 0);
  const EmaCoefficients trained = MakeEmaCoefficients(layer, D, N, true, T);
  std::vector<std::vector<float>> inputs;
  std::vector<float> s_exact(D * N, 0.0f), s_trained(D * N, 0.0f), m_exact(D), m_trained(D);
  for (int t = 0; t < steps; ++t) {
    inputs.push_back(RandomVector(D, rng));
    EmaStepExact(exact, omega.data(), inputs[t].data(), N, 0, D, s_exact.data(), m_exact.data());
    EmaStepTrained(trained, omega.data(), inputs[t].data(), t >= T ? inputs[t - T].data() : nullptr,
                   N, 0, D, s_trained.data(), m_trained.data());
    for (int d = 0; d < D; ++d) {
      // Direct truncated convolution in double.
      double m = omega[d] * inputs[t][d], m_full = m;  // truncated at T, and not
      for (int n = 0; n < N; ++n) {
        const double p = 1 / (1 + std::exp(-static_cast<double>(delta[d * N + n])));
        const double a = 1 / (1 + std::exp(-static_cast<double>(alpha[d * N + n])));
        const double q = 1 - p * a;
        const double scale = p * beta[d * N + n] * gamma[d * N + n] * std::sqrt(1.0 / N);
        double conv = 0.0, conv_full = 0.0;
        for (int j = 0; j <= t; ++j) {
          const double term = std::pow(q, j) * inputs[t - j][d];
          if (j < T) conv += term;
          conv_full += term;
        }
        m += scale * conv;
        m_full += scale * conv_full;
      }
      EXPECT_NEAR(m_trained[d], m, 1e-5) << "t=" << t;
      EXPECT_NEAR(m_exact[d], m_full, 1e-5) << "t=" << t;
      if (t < T) {
        EXPECT_NEAR(m_exact[d], m_trained[d], 1e-5) << "t=" << t;
      }
    }
  }
}

TEST(CpuOps, LinearMatchesADirectDotProductOnEveryPath) {
  // 1..kStreamRows rows: the weight-streaming kernel (inline, or split over the pool when the
  // product is large enough); up to kTiledRows: register tiles, with edge tiles of every shape;
  // more: sgemm on each thread's outputs.
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  ThreadPool pool(3);
  // in: shorter than one vector, vector blocks plus a tail (8, 16 and 32-float steps); out:
  // small (inline) and large enough for the pool.
  for (const auto& [in, out] :
       {std::pair<int64_t, int64_t>{5, 29}, {37, 29}, {70, 1001}, {24, 13}, {616, 31}}) {
    std::vector<float> w(out * in), bias(out);
    for (float& v : w) v = normal(rng);
    for (float& v : bias) v = normal(rng);
    for (int64_t rows : {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 16, 21, 32, 37, 64}) {
      std::vector<float> x(rows * in);
      for (float& v : x) v = normal(rng);
      for (ThreadPool* threads : {&pool, static_cast<ThreadPool*>(nullptr)}) {
        for (bool with_bias : {false, true}) {
          std::vector<float> y(rows * out, -1.0f);
          Linear(x.data(), rows, in, w.data(), with_bias ? bias.data() : nullptr, out, y.data(),
                 threads);
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t o = 0; o < out; ++o) {
              double expected = with_bias ? bias[o] : 0.0;
              for (int64_t i = 0; i < in; ++i)
                expected += static_cast<double>(x[r * in + i]) * w[o * in + i];
              ASSERT_NEAR(y[r * out + o], expected, 1e-4)
                  << "in " << in << " rows " << rows << " r " << r << " o " << o
                  << (threads != nullptr ? " pool" : " inline");
            }
          }
        }
      }
    }
  }
}

TEST(CpuOps, EveryInstructionSetThisCpuRunsMatchesADirectDotProductInEveryDType) {
  // Linear picks the widest set; the others run on machines without it. Each set's kernels
  // (streaming, tiles) for each dtype: near the direct dot product with the widened weights,
  // and bf16 / int8 bit for bit what the set's f32 kernel gives for the widened matrix.
  std::mt19937 rng(9);
  int ran = 0;
  for (TileIsa isa : {TileIsa::kPortable, TileIsa::kAvx2, TileIsa::kAvx512}) {
    for (const auto& [in, out] : {std::pair<int64_t, int64_t>{5, 7}, {37, 29}, {616, 31}}) {
      for (int64_t rows : {1, 3, 8, 9, 13, 16, 37}) {
        const std::vector<float> w = RandomVector(out * in, rng), bias = RandomVector(out, rng),
                                 x = RandomVector(rows * in, rng);
        for (MatrixDType dtype : {MatrixDType::kF32, MatrixDType::kBF16, MatrixDType::kInt8}) {
          const Matrix m = Matrix::Make(w.data(), out, in, dtype);
          std::vector<float> widened(out * in), y(rows * out, -1.0f), y_f32(rows * out, -2.0f);
          m.Widen(0, out, widened.data());
          if (!LinearForTest(isa, x.data(), rows, m, bias.data(), y.data())) continue;
          ++ran;
          const Matrix f32 = Matrix::Make(widened.data(), out, in, MatrixDType::kF32);
          ASSERT_TRUE(LinearForTest(isa, x.data(), rows, f32, bias.data(), y_f32.data()));
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t o = 0; o < out; ++o) {
              double expected = bias[o];
              for (int64_t i = 0; i < in; ++i)
                expected += static_cast<double>(x[r * in + i]) * widened[o * in + i];
              ASSERT_NEAR(y[r * out + o], expected, 1e-4)
                  << "isa " << static_cast<int>(isa) << " " << MatrixDTypeName(dtype) << " in "
                  << in << " rows " << rows;
              ASSERT_EQ(Bits(y[r * out + o]), Bits(y_f32[r * out + o]))
                  << "isa " << static_cast<int>(isa) << " " << MatrixDTypeName(dtype) << " in "
                  << in << " rows " << rows;
            }
          }
        }
      }
    }
  }
  EXPECT_GE(ran, 63) << "the portable set runs everywhere";
}

TEST(CpuOps, ATiledRowDoesNotDependOnItsBatchOrTheThreadSplit) {
  // Rows past kStreamRows, up to kTiledRows: the same row, among kStreamRows + 1 rows or among
  // kTiledRows at any place, with or without threads, gives the same bits.
  static_assert(kTiledRows >= kStreamRows + 4, "room to move a batch of kStreamRows + 1 rows");
  std::mt19937 rng(8);
  std::normal_distribution<float> normal;
  ThreadPool pool(2);
  const int64_t in = 616, out = 618, all_rows = kTiledRows, some_rows = kStreamRows + 1;
  std::vector<float> w(out * in), bias(out), x(all_rows * in);
  for (float& v : w) v = normal(rng);
  for (float& v : bias) v = normal(rng);
  for (float& v : x) v = normal(rng);
  std::vector<float> all(all_rows * out), all_inline(all_rows * out), some(some_rows * out);
  Linear(x.data(), all_rows, in, w.data(), bias.data(), out, all.data(), &pool);
  Linear(x.data(), all_rows, in, w.data(), bias.data(), out, all_inline.data(), nullptr);
  EXPECT_EQ(all, all_inline);
  for (int64_t first : {int64_t{0}, int64_t{3}, all_rows - some_rows}) {
    Linear(x.data() + first * in, some_rows, in, w.data(), bias.data(), out, some.data(), &pool);
    for (int64_t r = 0; r < some_rows; ++r) {
      for (int64_t o = 0; o < out; ++o) {
        ASSERT_EQ(some[r * out + o], all[(first + r) * out + o])
            << "row " << first + r << " o " << o;
      }
    }
  }
}

TEST(CpuOps, Bf16RoundsToNearestEvenAndWidensToTheHighHalf) {
  // 1 + 2^-8 lies halfway between bf16 1.0 (0x3F80) and 1 + 2^-7 (0x3F81): ties go to the even
  // 0x3F80; 1 + 3 * 2^-8 is halfway between 0x3F81 and 0x3F82: to 0x3F82; just above a tie
  // rounds up, just below down; -2.5 and 0 are exact.
  const std::vector<float> w = {1.0f,
                                FromBits(0x3F808000u),
                                FromBits(0x3F818000u),
                                FromBits(0x3F808001u),
                                FromBits(0x3F807FFFu),
                                -2.5f,
                                0.0f,
                                FromBits(0x3F7FFFFFu)};  // the largest float below 1 -> 1.0
  const std::vector<uint16_t> expected = {0x3F80, 0x3F80, 0x3F82, 0x3F81,
                                          0x3F80, 0xC020, 0x0000, 0x3F80};
  const Matrix m = Matrix::Make(w.data(), 2, 4, MatrixDType::kBF16);
  ASSERT_EQ(m.bytes(), 8 * sizeof(uint16_t));
  std::vector<float> widened(8);
  m.Widen(0, 2, widened.data());
  for (size_t i = 0; i < w.size(); ++i) {
    EXPECT_EQ(m.bf16()[i], expected[i]) << "weight " << i;
    EXPECT_EQ(Bits(widened[i]), static_cast<uint32_t>(expected[i]) << 16) << "weight " << i;
  }
}

TEST(CpuOps, Int8GroupsScaleByTheirLargestWeight) {
  // One row of 40 weights: a group of 32 whose largest |w| is 127 (scale 1), then a group of 8
  // zeros (scale 0); a second row of groups with scales 0.5 and 0.25 (exact in binary).
  const int64_t in = 40;
  std::vector<float> w(2 * in, 0.0f);
  w[0] = 127.0f;
  w[1] = -63.5f;  // ties to even: -64
  w[2] = 0.49f;
  w[3] = -126.6f;
  for (int64_t i = 0; i < in; ++i)
    w[in + i] = (i % 2 == 0 ? 63.5f : -31.75f) * (i < 32 ? 1.0f : 0.5f);
  const Matrix m = Matrix::Make(w.data(), 2, in, MatrixDType::kInt8);
  ASSERT_EQ(m.groups_per_row(), 2);
  EXPECT_EQ(m.bytes(), 2 * in + 4 * sizeof(float));
  EXPECT_EQ(m.scales()[0], 1.0f);
  EXPECT_EQ(m.scales()[1], 0.0f);
  EXPECT_EQ(m.int8()[0], 127);
  EXPECT_EQ(m.int8()[1], -64);
  EXPECT_EQ(m.int8()[2], 0);
  EXPECT_EQ(m.int8()[3], -127);
  for (int64_t i = 32; i < in; ++i) EXPECT_EQ(m.int8()[i], 0);
  EXPECT_EQ(m.scales()[2], 0.5f);
  EXPECT_EQ(m.scales()[3], 0.25f);
  EXPECT_EQ(m.int8()[in], 127);
  EXPECT_EQ(m.int8()[in + 1], -64);  // -31.75 / 0.5 = -63.5, ties to even
  EXPECT_EQ(m.int8()[in + 32], 127);
  EXPECT_EQ(m.int8()[in + 33], -64);

  // Random weights: every widened weight within half a step of its group's scale.
  std::mt19937 rng(11);
  const int64_t out = 7, wide = 100;
  const std::vector<float> random = RandomVector(out * wide, rng, 0.3f);
  const Matrix q = Matrix::Make(random.data(), out, wide, MatrixDType::kInt8);
  std::vector<float> widened(out * wide);
  q.Widen(0, out, widened.data());
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t i = 0; i < wide; ++i) {
      const float scale = q.scales()[o * q.groups_per_row() + i / kQuantGroup];
      EXPECT_GT(scale, 0.0f);
      EXPECT_LE(std::fabs(widened[o * wide + i] - random[o * wide + i]), 0.5f * scale * 1.0001f)
          << "o " << o << " i " << i;
    }
  }
}

// x rounded to bf16 and widened back: what the AMX products multiply by.
std::vector<float> RoundedToBf16(const std::vector<float>& x) {
  std::vector<float> rounded(x.size());
  for (size_t i = 0; i < x.size(); ++i) rounded[i] = Bf16ToFloat(FloatToBf16(x[i]));
  return rounded;
}

TEST(CpuOps, Bf16AndInt8LinearEqualF32LinearOverTheWidenedWeights) {
  // Every path (streaming in registers, widened blocks through tiles or sgemm, bf16 products),
  // inline and on the pool: the same bits as the f32 product with the widened matrix up to
  // kTiledRows rows, where both run the same kernel; beyond, near the direct dot product with
  // the widened weights (and x rounded to bf16 where bf16 arithmetic takes the product).
  std::mt19937 rng(12);
  ThreadPool pool(2);
  for (MatrixDType dtype : {MatrixDType::kBF16, MatrixDType::kInt8}) {
    for (const auto& [in, out] :
         {std::pair<int64_t, int64_t>{5, 29}, {37, 29}, {70, 1001}, {616, 131}}) {
      const std::vector<float> w = RandomVector(out * in, rng), bias = RandomVector(out, rng);
      const Matrix m = Matrix::Make(w.data(), out, in, dtype);
      std::vector<float> widened(out * in);
      m.Widen(0, out, widened.data());
      for (int64_t rows : {1, 2, 3, 5, 8, 9, 16, 21, 32, 37, 64, 65, 130}) {
        const std::vector<float> x = RandomVector(rows * in, rng);
        // Beyond kQuantTiledRows rows in bf16 arithmetic: the products of x and the weights
        // rounded to bf16.
        const bool amx_rounds = rows > kQuantTiledRows && BestBf16Isa() != Bf16Isa::kNone;
        const std::vector<float> rounded = RoundedToBf16(x);
        for (ThreadPool* threads : {&pool, static_cast<ThreadPool*>(nullptr)}) {
          for (const float* b : {bias.data(), static_cast<const float*>(nullptr)}) {
            std::vector<float> y(rows * out, -1.0f), expected(rows * out, -2.0f);
            Linear(x.data(), rows, m, b, y.data(), threads);
            Linear(x.data(), rows, in, widened.data(), b, out, expected.data(), threads);
            for (int64_t i = 0; i < rows * out; ++i) {
              if (rows <= kTiledRows) {
                ASSERT_EQ(Bits(y[i]), Bits(expected[i]))
                    << MatrixDTypeName(dtype) << " in " << in << " rows " << rows << " at " << i;
              } else {  // f32 went through sgemm: both near the direct dot product
                const int64_t r = i / out, o = i % out;
                double direct = b != nullptr ? b[o] : 0.0;
                for (int64_t k = 0; k < in; ++k)
                  direct += amx_rounds ? static_cast<double>(rounded[r * in + k]) *
                                             Bf16ToFloat(FloatToBf16(widened[o * in + k]))
                                       : static_cast<double>(x[r * in + k]) * widened[o * in + k];
                ASSERT_NEAR(y[i], direct, 1e-4)
                    << MatrixDTypeName(dtype) << " in " << in << " rows " << rows << " at " << i;
              }
            }
          }
        }
      }
    }
  }
}

// The bf16-arithmetic routes this CPU runs, with their names.
std::vector<std::pair<QuantRoute, const char*>> Bf16Routes() {
  std::vector<std::pair<QuantRoute, const char*>> routes;
  if (Bf16IsaUsable(Bf16Isa::kAmx)) routes.emplace_back(QuantRoute::kAmx, "amx");
  if (Bf16IsaUsable(Bf16Isa::kAvx512Bf16))
    routes.emplace_back(QuantRoute::kAvx512Bf16, "avx512bf16");
  return routes;
}

TEST(CpuOps, Bf16ProductsPickEveryActivationWhereItsWeightIs) {
  // Each output picks one input (one nonzero weight a row): y must be that input rounded to
  // bf16 times the weight rounded to bf16 (one product, exact in fp32), to the last bit, so every
  // weight sits where the packed tiles say and every value is rounded to nearest even. bf16 and
  // int8 weights; tails in rows, inputs and outputs; inline and on the pool; AMX and AVX512_BF16.
  if (Bf16Routes().empty()) GTEST_SKIP() << "this CPU has neither AMX-BF16 nor AVX512_BF16";
  std::mt19937 rng(21);
  ThreadPool pool(2);
  for (MatrixDType dtype : {MatrixDType::kBF16, MatrixDType::kInt8}) {
    for (const auto& [in, out] :
         {std::pair<int64_t, int64_t>{5, 7}, {37, 33}, {616, 260}, {1232, 300}}) {
      std::vector<float> w(out * in, 0.0f);
      std::vector<int64_t> pick(out);
      for (int64_t o = 0; o < out; ++o) {
        pick[o] = static_cast<int64_t>(rng() % in);
        w[o * in + pick[o]] = std::ldexp(1.0f + static_cast<float>(rng() % 1000) / 999.0f,
                                         static_cast<int>(rng() % 8) - 4);
      }
      const Matrix m = Matrix::Make(w.data(), out, in, dtype);
      std::vector<float> widened(out * in);
      m.Widen(0, out, widened.data());
      for (int64_t rows : {65, 68, 69, 100, 130}) {
        // Full 24-bit mantissas over many magnitudes.
        std::vector<float> x = RandomVector(rows * in, rng);
        for (float& v : x) v = std::ldexp(v, static_cast<int>(rng() % 40) - 20);
        const std::vector<float> rounded = RoundedToBf16(x);
        for (const auto& [route, route_name] : Bf16Routes()) {
          for (ThreadPool* threads : {&pool, static_cast<ThreadPool*>(nullptr)}) {
            std::vector<float> y(rows * out, -1.0f);
            ASSERT_TRUE(QuantLinearForTest(route, x.data(), rows, m, nullptr, y.data(), threads));
            for (int64_t r = 0; r < rows; ++r) {
              for (int64_t o = 0; o < out; ++o) {
                const float weight = Bf16ToFloat(FloatToBf16(widened[o * in + pick[o]]));
                ASSERT_EQ(Bits(y[r * out + o]), Bits(rounded[r * in + pick[o]] * weight))
                    << route_name << " " << MatrixDTypeName(dtype) << " in " << in << " out " << out
                    << " rows " << rows << " r " << r << " o " << o;
              }
            }
          }
        }
      }
    }
  }
}

TEST(CpuOps, Bf16ProductsAreTheSumsOfRoundedActivationsTimesTheWeights) {
  // Random weights and activations: each bf16 route within fp32 summation error of the
  // double-precision sum of bf16(x) * bf16(widen(w)), relative to sum |x * w|; and within the
  // roundings to bf16 (2^-9 of each product for x, as much again for int8's weights) of the
  // widened-sgemm route's.
  if (Bf16Routes().empty()) GTEST_SKIP() << "this CPU has neither AMX-BF16 nor AVX512_BF16";
  std::mt19937 rng(22);
  ThreadPool pool(2);
  for (MatrixDType dtype : {MatrixDType::kBF16, MatrixDType::kInt8}) {
    for (const auto& [in, out] : {std::pair<int64_t, int64_t>{37, 33}, {616, 260}, {1232, 616}}) {
      const std::vector<float> w = RandomVector(out * in, rng), bias = RandomVector(out, rng);
      const Matrix m = Matrix::Make(w.data(), out, in, dtype);
      std::vector<float> fp32_widened(out * in);
      m.Widen(0, out, fp32_widened.data());
      const std::vector<float> widened = RoundedToBf16(fp32_widened);
      for (int64_t rows : {65, 97}) {
        const std::vector<float> x = RandomVector(rows * in, rng);
        const std::vector<float> rounded = RoundedToBf16(x);
        for (const float* b : {bias.data(), static_cast<const float*>(nullptr)}) {
          std::vector<float> sgemm(rows * out, -2.0f);
          ASSERT_TRUE(QuantLinearForTest(QuantRoute::kWidenedSgemm, x.data(), rows, m, b,
                                         sgemm.data(), &pool));
          for (const auto& [route, route_name] : Bf16Routes()) {
            std::vector<float> y(rows * out, -1.0f);
            ASSERT_TRUE(QuantLinearForTest(route, x.data(), rows, m, b, y.data(), &pool));
            for (int64_t r = 0; r < rows; ++r) {
              for (int64_t o = 0; o < out; ++o) {
                double direct = b != nullptr ? b[o] : 0.0, magnitude = 0.0;
                for (int64_t k = 0; k < in; ++k) {
                  const double p = static_cast<double>(rounded[r * in + k]) * widened[o * in + k];
                  direct += p;
                  magnitude += std::fabs(p);
                }
                ASSERT_NEAR(y[r * out + o], direct, 1e-6 * (magnitude + 1.0))
                    << route_name << " " << MatrixDTypeName(dtype) << " in " << in << " r " << r;
                ASSERT_NEAR(y[r * out + o], sgemm[r * out + o], std::ldexp(magnitude, -8) + 1e-5)
                    << route_name << " " << MatrixDTypeName(dtype) << " in " << in << " r " << r;
              }
            }
          }
        }
      }
    }
  }
}

TEST(CpuOps, F32MatrixIsAViewOfTheWeights) {
  const std::vector<float> w = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
  const Matrix m = Matrix::Make(w.data(), 2, 3, MatrixDType::kF32);
  EXPECT_EQ(m.f32(), w.data());
  EXPECT_EQ(m.bytes(), 6 * sizeof(float));
  const std::vector<float> x = {1.0f, 0.0f, -1.0f};
  std::vector<float> y(2);
  Linear(x.data(), 1, m, nullptr, y.data());
  EXPECT_EQ(y, (std::vector<float>{-2.0f, -2.0f}));
}

}  // namespace
}  // namespace seqboat::cpu
