// CPU building blocks of the SeqBoat forward pass; each is tested on its own (cpu_ops_test).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/model/config.h"
#include "runtime/model/ema_coefficients.h"
#include "runtime/model/model.h"
#include "runtime/util/thread_pool.h"

namespace seqboat::cpu {

// The dtype the CPU backend keeps a weight matrix in. Products take fp32 activations and
// accumulate in fp32 whatever the dtype; each weight is widened to fp32 in registers.
enum class MatrixDType {
  kF32,   // the model's fp32 weights, used in place
  kBF16,  // fp32 rounded to nearest even at 8 mantissa bits (2 bytes a weight)
  kInt8,  // symmetric int8 in groups of kQuantGroup weights of a row, one fp32 scale per group
};
const char* MatrixDTypeName(MatrixDType dtype);  // "f32" | "bf16" | "int8"
// int8 groups: scale = max|w| / 127 over the group, q = round(w / scale) (ggml's q8_0 grouping;
// its scales are fp16, ours fp32: 1.125 bytes a weight). A row's last group may be shorter.
constexpr int64_t kQuantGroup = 32;

// A weight matrix w[out, in] (row-major, one row per output) in one MatrixDType.
class Matrix {
 public:
  Matrix() = default;
  // f32 keeps a view of `w`, which must outlive the matrix; bf16 and int8 convert a copy.
  static Matrix Make(const float* w, int64_t out, int64_t in, MatrixDType dtype);

  MatrixDType dtype() const { return dtype_; }
  int64_t out() const { return out_; }
  int64_t in() const { return in_; }
  int64_t groups_per_row() const { return (in_ + kQuantGroup - 1) / kQuantGroup; }
  size_t bytes() const;  // what one product reads of the weights
  // Rows [begin, end) widened to fp32, dst[(end - begin), in]: exactly the values every
  // product multiplies by.
  void Widen(int64_t begin, int64_t end, float* dst) const;

  const float* f32() const { return f32_; }
  const uint16_t* bf16() const { return bf16_.data(); }
  const int8_t* int8() const { return int8_.data(); }
  const float* scales() const { return scales_.data(); }  // [out, groups_per_row]

 private:
  MatrixDType dtype_ = MatrixDType::kF32;
  int64_t out_ = 0, in_ = 0;
  const float* f32_ = nullptr;
  std::vector<uint16_t> bf16_;
  std::vector<int8_t> int8_;
  std::vector<float> scales_;
};

// The same product with the weights of `w` (in = w.in(), out = w.out()). f32 is the Linear
// below. bf16 and int8: up to kStreamRows rows each weight row is widened in registers and
// streamed once, as in f32; more rows widen blocks of weight rows into a per-thread fp32
// buffer that the f32 kernels then run on. Up to kTiledRows rows y equals f32 Linear over the
// widened matrix (Matrix::Widen) bit for bit; beyond, sgemm's sums of the same products. Beyond
// kQuantTiledRows rows on a CPU with AMX-BF16 or AVX512_BF16 (bf16_products.h): bf16 products
// with x rounded to bf16 too, and int8's widened weights as well (each within 2^-9 of its
// product).
void Linear(const float* x, int64_t rows, const Matrix& w, const float* bias, float* y,
            ThreadPool* pool = nullptr);

// y[rows, out] = x[rows, in] . w[out, in]^T (+ bias[out] when non-null), in linear.cc, split
// over the pool's threads by output. Up to kTiledRows rows (decode batches up to 32): our own
// kernels, reading w in place, never packed; up to kStreamRows rows each weight row is streamed
// once for all rows, more go through register tiles. More rows (larger batches, prefill):
// single-threaded OpenBLAS sgemm on each thread's outputs, which packs its share of w per call
// (measured faster than our tiles from 48 rows on). In our kernels a row's result depends only
// on which of the two ran, not on the other rows or the thread split. No BLAS threads and no
// gemv: OpenBLAS's own threads spin beside the pool's between calls (one core kept busy while
// the backend waits), and Debian's OpenBLAS 0.3.21 has out-of-bounds reads in threaded gemv
// (OpenBLAS issue #4013).
constexpr int64_t kStreamRows = 8;
constexpr int64_t kTiledRows = 32;
// bf16 and int8 weights go through tiles, widened in registers, up to this many rows.
constexpr int64_t kQuantTiledRows = 64;
// Below this many multiply-adds the streaming kernel runs on the calling thread alone.
constexpr int64_t kMinParallelLinear = 1 << 16;
void Linear(const float* x, int64_t rows, int64_t in, const float* w, const float* bias,
            int64_t out, float* y, ThreadPool* pool = nullptr);
// The kernels compiled for one instruction set, for tests on any machine: on the calling
// thread, the streaming kernel up to kStreamRows rows and tiles for any more; false (nothing
// written) when this CPU lacks the set.
enum class TileIsa { kPortable, kAvx2, kAvx512 };
bool LinearForTest(TileIsa isa, const float* x, int64_t rows, const Matrix& w, const float* bias,
                   float* y);
// bf16 / int8 products of more than kQuantTiledRows rows by one route, for tests: widened
// sgemm, AMX tiles or AVX512_BF16 dot products (false, nothing written, when this CPU or kernel
// has none, or w is f32).
enum class QuantRoute { kWidenedSgemm, kAmx, kAvx512Bf16 };
bool QuantLinearForTest(QuantRoute route, const float* x, int64_t rows, const Matrix& w,
                        const float* bias, float* y, ThreadPool* pool);
// Sets OpenBLAS to one thread for the whole process (Linear does so before its first sgemm):
// every product then runs on the caller's thread, and parallel work goes through the pool.
void UseSingleThreadedBlas();

// y[rows, dim] = norm(x) per row; eps 1e-5; non-affine when weights.weight is null.
void Norm(NormKind kind, const NormWeights& weights, const float* x, int64_t rows, int64_t dim,
          float* y);

// x[i] = x[i] / (1 + e^-x[i]) for i < n, by vec::Silu (e^x within 2 ulp): a value's result does
// not depend on where in x it lies, so every path (decode, prefill, any batch) gets the same bits.
void SiluInPlace(float* x, int64_t n);
// x[i] = e^(x[i] - max x) for i < n, by vec::Exp; returns 1 / their sum (summed in double).
float SoftmaxExp(float* x, int64_t n);

float Dot(const float* a, const float* b, int64_t n);
void Axpy(float alpha, const float* x, float* y, int64_t n);  // y += alpha * x
// The same with b / x in bf16, widened to fp32.
float DotBf16(const float* a, const uint16_t* b, int64_t n);
void AxpyBf16(float alpha, const uint16_t* x, float* y, int64_t n);
// x[i] = the bf16 nearest x[i] (round to nearest even), still as fp32.
void RoundToBf16(float* x, int64_t n);

// One token through channels [d_begin, d_end) of the exact recurrence:
//   s <- p*beta*u + q*s;  m = sum_n s*gamma*sqrt(1/N) + omega*u
void EmaStepExact(const EmaCoefficients& ema, const float* omega, const float* u, int N,
                  int d_begin, int d_end, float* state, float* m);
// The trained (truncated) horizon: S <- q*S + u - q^T*u_old (u_old null before T tokens);
//   m = sum_n p*beta*gamma*sqrt(1/N)*S + omega*u
void EmaStepTrained(const EmaCoefficients& ema, const float* omega, const float* u,
                    const float* u_old, int N, int d_begin, int d_end, float* state, float* m);

// Rotary tables of one position: cos/sin of t*theta_i, theta_i = 10000^(-2i/Z), i < Z/2,
// computed in double so that long streams keep their angles exact.
void RotaryTable(int64_t position, int z_dim, float* cos_out, float* sin_out);
// Rotates interleaved pairs (x[2i], x[2i+1]) by the table's angles.
void ApplyRotary(const float* cos_table, const float* sin_table, int z_dim, float* x);

// A run of keys/values attended to (a FIFO ring segment, the chunk's own rows, the token):
// fp32 (keys, values) or bf16 (keys_bf16, values_bf16, widened to fp32 as they are read).
struct KvSegment {
  const float* keys = nullptr;         // [count, key_stride], first Z used
  const float* values = nullptr;       // [count, value_stride], first H used
  const int64_t* positions = nullptr;  // [count] original token positions
  int64_t count = 0;
  int64_t key_stride = 0;
  int64_t value_stride = 0;
  const uint16_t* keys_bf16 = nullptr;    // instead of keys
  const uint16_t* values_bf16 = nullptr;  // instead of values
};

struct AttentionSpec {
  AttentionKind kind = AttentionKind::kSoftmax;
  int z_dim = 0;
  int hidden_dim = 0;
  float score_scale = 1.0f;             // 1/sqrt(Z) for softmax, 1/w for relu2 and laplace
  const float* rel_pos_bias = nullptr;  // [2P - 1] simple bias, else null
  int max_positions = 0;                // P
};

// h[H] = attention of query q (already rotated) at q_position over the segments.
// `scores` is scratch of at least the total count.
void Attend(const AttentionSpec& spec, const float* q, int64_t q_position,
            const KvSegment* segments, int num_segments, float* scores, float* h);

// Attend in two parts, so that one query's value sums can be split over threads by columns:
// the weights of every entry (scores[total], the normaliser folded in), then the columns
// [column_begin, column_end) of h. Column ranges that start at multiples of 16 give every
// column the bits one Attend call gives it.
void AttentionWeights(const AttentionSpec& spec, const float* q, int64_t q_position,
                      const KvSegment* segments, int num_segments, float* scores);
void AttendColumns(const AttentionSpec& spec, const float* weights, const KvSegment* segments,
                   int num_segments, int64_t column_begin, int64_t column_end, float* h);

// The same for a block of queries that share most of their windows (consecutive activated
// tokens of one prefill chunk): query b attends to columns [window_begin[b], window_end[b])
// of the segments' concatenation. Scores and values go through BLAS products over the
// block's union window, so keys and values are read once per block, not once per query
// (bf16 ones widened to fp32 once per block).
// `scores` is scratch of num_queries x total columns.
void AttendBlock(const AttentionSpec& spec, const float* queries, int64_t num_queries,
                 const int64_t* q_positions, const KvSegment* input_segments, int num_segments,
                 const int64_t* window_begin, const int64_t* window_end, float* scores, float* h);

}  // namespace seqboat::cpu
