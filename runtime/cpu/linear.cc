// y = x . w^T + bias, the CPU backend's products: weight matrices row-major [out, in] in f32
// (as stored), bf16 or int8, the threads the backend's pool.
//
// Up to kStreamRows rows (decode of small batches): each weight row is streamed once and dotted
// with every x row. More rows: register tiles of dot products, the tile's weight rows kept in
// L1 while the x rows (in L2) go past them, so a weight matrix is still read from memory once.
// Beyond kTiledRows fp32 rows (kQuantTiledRows bf16/int8 rows): OpenBLAS sgemm, single-threaded,
// on each pool thread's share of the outputs (bf16/int8 widened to fp32 a block at a time);
// from 48 rows on its packing pays for itself (bench/linear_bench.cc). bf16/int8 beyond
// kQuantTiledRows rows on a CPU with AMX-BF16 or AVX512_BF16: bf16 products instead
// (bf16_products.h), x rounded to bf16; on AMX measured 1.2-2.7x fp32 sgemm's speed from 65
// rows on.
//
// The kernels are compiled once per instruction set (linear_kernels.inc) and the widest this
// CPU runs is picked once, at the first product (a plain table, not an ifunc: sanitizer builds
// use it too).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "runtime/cpu/bf16_products.h"
#include "runtime/cpu/cpu_ops.h"
#include "runtime/cpu/vec.h"
#include "runtime/util/dtype.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SEQBOAT_X86_KERNELS 1
#include <immintrin.h>
#endif

namespace seqboat::cpu {

namespace {

using vec::Load;
using vec::Sum8;
using vec::Vec16;
using vec::Vec8;

typedef uint16_t U16x8 __attribute__((vector_size(16)));
typedef uint16_t U16x16 __attribute__((vector_size(32)));
typedef uint32_t U32x8 __attribute__((vector_size(32)));
typedef uint32_t U32x16 __attribute__((vector_size(64)));

// A matrix's data as the kernels take it, one struct per dtype.
struct F32Weights {
  const float* w;
};
struct Bf16Weights {
  const uint16_t* w;
};
struct Int8Weights {
  const int8_t* q;
  const float* scales;  // [out, groups of kQuantGroup]
};

// One instruction set's kernels. A range function computes outputs [begin, end) of y for all
// rows; Widen writes rows [begin, end) of the weights as fp32.
template <typename Weights>
using RangeFn = void (*)(const float* x, int64_t rows, int64_t in, const Weights& w,
                         const float* bias, int64_t out, float* y, int64_t begin, int64_t end);
template <typename Weights>
using WidenFn = void (*)(int64_t in, const Weights& w, int64_t begin, int64_t end, float* dst);
struct Kernels {
  RangeFn<F32Weights> stream_f32, tiled_f32;
  RangeFn<Bf16Weights> stream_bf16, tiled_bf16;
  RangeFn<Int8Weights> stream_int8, tiled_int8;
  WidenFn<Bf16Weights> widen_bf16;
  WidenFn<Int8Weights> widen_int8;
};

namespace portable {
#define SEQBOAT_ISA_LEVEL 0
#include "runtime/cpu/linear_kernels.inc"  // NOLINT(bugprone-suspicious-include)
#undef SEQBOAT_ISA_LEVEL
}  // namespace portable

#ifdef SEQBOAT_X86_KERNELS
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
namespace avx2 {
#define SEQBOAT_ISA_LEVEL 3
#include "runtime/cpu/linear_kernels.inc"  // NOLINT(bugprone-suspicious-include)
#undef SEQBOAT_ISA_LEVEL
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
namespace avx512 {
#define SEQBOAT_ISA_LEVEL 4
#include "runtime/cpu/linear_kernels.inc"  // NOLINT(bugprone-suspicious-include)
#undef SEQBOAT_ISA_LEVEL
}  // namespace avx512
#pragma GCC pop_options
#endif

// The kernels for `isa`, or null when this CPU (or compiler) has no such set.
const Kernels* KernelsFor(TileIsa isa) {
  static const Kernels portable_kernels = portable::MakeKernels();
  switch (isa) {
    case TileIsa::kPortable: return &portable_kernels;
#ifdef SEQBOAT_X86_KERNELS
    case TileIsa::kAvx2: {
      static const Kernels kernels = avx2::MakeKernels();
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? &kernels : nullptr;
    }
    case TileIsa::kAvx512: {
      static const Kernels kernels = avx512::MakeKernels();
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                     __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
                 ? &kernels
                 : nullptr;
    }
#endif
    default: return nullptr;
  }
}

// The widest set this CPU runs, chosen once.
const Kernels& Pick() {
  static const Kernels* const kernels = [] {
    for (TileIsa isa : {TileIsa::kAvx512, TileIsa::kAvx2}) {
      if (const Kernels* k = KernelsFor(isa)) return k;
    }
    return KernelsFor(TileIsa::kPortable);
  }();
  return *kernels;
}

// fp32 outputs [begin, end) of more than kTiledRows rows through sgemm, on the calling thread.
void SgemmRange(const float* x, int64_t rows, int64_t in, const float* w, const float* bias,
                int64_t out, float* y, int64_t begin, int64_t end) {
  static const bool single_threaded = (UseSingleThreadedBlas(), true);  // once, for any caller
  (void)single_threaded;
  float beta = 0.0f;
  if (bias != nullptr) {
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(y + r * out + begin, bias + begin, (end - begin) * sizeof(float));
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, end - begin, in, 1.0f, x, in,
              w + begin * in, in, beta, y + begin, out);
}

// `range` over outputs [0, out) in groups of `group` outputs, on the pool when `parallel`.
template <typename Range>
void ForOutputs(ThreadPool* pool, bool parallel, int64_t out, int64_t group, const Range& range) {
  if (!parallel) {
    range(0, out);
    return;
  }
  const int64_t groups = (out + group - 1) / group;
  pool->ParallelFor(groups, [&](int64_t begin, int64_t end) {
    range(begin * group, std::min(out, end * group));
  });
}

bool RunsParallel(const ThreadPool* pool, int64_t rows, int64_t in, int64_t out) {
  return pool != nullptr && pool->num_threads() > 1 &&
         rows * in * out >= kMinParallelLinear;  // waking a thread costs more
}

// Threads take whole tiles' worth of outputs (12: a multiple of every tile width), or
// multiples of 16, OpenBLAS's widest micro-tile.
constexpr int64_t kTileSplit = 12, kSgemmSplit = 16;
// Weight rows a thread widens at a time for sgemm: a multiple of 16, 48 x 4 x in bytes of L2.
constexpr int64_t kWidenBlock = 48;
static_assert(kPackInt8Group == kQuantGroup, "bf16 packing widens int8 by the matrices' groups");

// The product for one dtype's weights: streaming, tiles or (widened) sgemm by the row count.
template <typename Weights>
void Product(const float* x, int64_t rows, int64_t in, const Weights& w, const float* bias,
             int64_t out, float* y, ThreadPool* pool, RangeFn<Weights> stream,
             RangeFn<Weights> tiled, int64_t tiled_rows,
             void (*sgemm)(const float*, int64_t, int64_t, const Weights&, const float*, int64_t,
                           float*, int64_t, int64_t)) {
  if (rows == 0 || out == 0) return;
  const bool parallel = RunsParallel(pool, rows, in, out);
  if (rows <= kStreamRows) {
    ForOutputs(pool, parallel, out, 1, [&](int64_t begin, int64_t end) {
      stream(x, rows, in, w, bias, out, y, begin, end);
    });
  } else if (rows <= tiled_rows) {
    ForOutputs(pool, parallel, out, kTileSplit, [&](int64_t begin, int64_t end) {
      tiled(x, rows, in, w, bias, out, y, begin, end);
    });
  } else {
    ForOutputs(
        pool, parallel, out, std::is_same_v<Weights, F32Weights> ? kSgemmSplit : kWidenBlock,
        [&](int64_t begin, int64_t end) { sgemm(x, rows, in, w, bias, out, y, begin, end); });
  }
}

void SgemmF32(const float* x, int64_t rows, int64_t in, const F32Weights& w, const float* bias,
              int64_t out, float* y, int64_t begin, int64_t end) {
  SgemmRange(x, rows, in, w.w, bias, out, y, begin, end);
}

// bf16 / int8 through sgemm: kWidenBlock rows at a time widened into a per-thread buffer.
template <typename Weights>
void SgemmWidened(const float* x, int64_t rows, int64_t in, const Weights& w, const float* bias,
                  int64_t out, float* y, int64_t begin, int64_t end) {
  thread_local std::vector<float> widened;
  widened.resize(kWidenBlock * in);
  const Kernels& k = Pick();
  for (int64_t b = begin; b < end; b += kWidenBlock) {
    const int64_t e = std::min(end, b + kWidenBlock);
    if constexpr (std::is_same_v<Weights, Bf16Weights>) {
      k.widen_bf16(in, w, b, e, widened.data());
    } else {
      k.widen_int8(in, w, b, e, widened.data());
    }
    SgemmRange(x, rows, in, widened.data(), bias != nullptr ? bias + b : nullptr, out, y + b, 0,
               e - b);
  }
}

// A bf16 or int8 matrix as the bf16 kernels read it.
Bf16Source Bf16SourceOf(const Matrix& w) {
  return w.dtype() == MatrixDType::kBF16 ? Bf16Source{.bf16 = w.bf16()}
                                         : Bf16Source{.q = w.int8(), .scales = w.scales()};
}

}  // namespace

void UseSingleThreadedBlas() { openblas_set_num_threads(1); }

bool LinearForTest(TileIsa isa, const float* x, int64_t rows, const Matrix& w, const float* bias,
                   float* y) {
  const Kernels* k = KernelsFor(isa);
  if (k == nullptr) return false;
  const int64_t in = w.in(), out = w.out();
  const bool stream = rows <= kStreamRows;
  switch (w.dtype()) {
    case MatrixDType::kF32:
      (stream ? k->stream_f32 : k->tiled_f32)(x, rows, in, F32Weights{w.f32()}, bias, out, y, 0,
                                              out);
      break;
    case MatrixDType::kBF16:
      (stream ? k->stream_bf16 : k->tiled_bf16)(x, rows, in, Bf16Weights{w.bf16()}, bias, out, y, 0,
                                                out);
      break;
    case MatrixDType::kInt8:
      (stream ? k->stream_int8 : k->tiled_int8)(x, rows, in, Int8Weights{w.int8(), w.scales()},
                                                bias, out, y, 0, out);
      break;
  }
  return true;
}

bool QuantLinearForTest(QuantRoute route, const float* x, int64_t rows, const Matrix& w,
                        const float* bias, float* y, ThreadPool* pool) {
  const bool bf16 = w.dtype() == MatrixDType::kBF16;
  if (!bf16 && w.dtype() != MatrixDType::kInt8) return false;
  if (route != QuantRoute::kWidenedSgemm) {
    const Bf16Isa isa = route == QuantRoute::kAmx ? Bf16Isa::kAmx : Bf16Isa::kAvx512Bf16;
    if (!Bf16IsaUsable(isa)) return false;
    Bf16Linear(isa, x, rows, w.in(), Bf16SourceOf(w), bias, w.out(), y, pool);
    return true;
  }
  ForOutputs(pool, pool != nullptr && pool->num_threads() > 1, w.out(), kWidenBlock,
             [&](int64_t begin, int64_t end) {
               if (bf16) {
                 SgemmWidened(x, rows, w.in(), Bf16Weights{w.bf16()}, bias, w.out(), y, begin, end);
               } else {
                 SgemmWidened(x, rows, w.in(), Int8Weights{w.int8(), w.scales()}, bias, w.out(), y,
                              begin, end);
               }
             });
  return true;
}

void Linear(const float* x, int64_t rows, int64_t in, const float* w, const float* bias,
            int64_t out, float* y, ThreadPool* pool) {
  const Kernels& k = Pick();
  Product(x, rows, in, F32Weights{w}, bias, out, y, pool, k.stream_f32, k.tiled_f32, kTiledRows,
          SgemmF32);
}

void Linear(const float* x, int64_t rows, const Matrix& w, const float* bias, float* y,
            ThreadPool* pool) {
  const Kernels& k = Pick();
  switch (w.dtype()) {
    case MatrixDType::kF32: return Linear(x, rows, w.in(), w.f32(), bias, w.out(), y, pool);
    case MatrixDType::kBF16:
      if (rows > kQuantTiledRows && BestBf16Isa() != Bf16Isa::kNone) {
        return Bf16Linear(BestBf16Isa(), x, rows, w.in(), Bf16SourceOf(w), bias, w.out(), y, pool);
      }
      return Product(x, rows, w.in(), Bf16Weights{w.bf16()}, bias, w.out(), y, pool, k.stream_bf16,
                     k.tiled_bf16, kQuantTiledRows, SgemmWidened<Bf16Weights>);
    case MatrixDType::kInt8:
      if (rows > kQuantTiledRows && BestBf16Isa() != Bf16Isa::kNone) {
        return Bf16Linear(BestBf16Isa(), x, rows, w.in(), Bf16SourceOf(w), bias, w.out(), y, pool);
      }
      return Product(x, rows, w.in(), Int8Weights{w.int8(), w.scales()}, bias, w.out(), y, pool,
                     k.stream_int8, k.tiled_int8, kQuantTiledRows, SgemmWidened<Int8Weights>);
  }
}

const char* MatrixDTypeName(MatrixDType dtype) {
  switch (dtype) {
    case MatrixDType::kBF16: return "bf16";
    case MatrixDType::kInt8: return "int8";
    case MatrixDType::kF32: break;
  }
  return "f32";
}

Matrix Matrix::Make(const float* w, int64_t out, int64_t in, MatrixDType dtype) {
  Matrix m;
  m.dtype_ = dtype;
  m.out_ = out;
  m.in_ = in;
  const int64_t n = out * in;
  switch (dtype) {
    case MatrixDType::kF32: m.f32_ = w; break;
    case MatrixDType::kBF16:
      m.bf16_.resize(n);
      FloatsToBf16(w, n, m.bf16_.data());
      break;
    case MatrixDType::kInt8: {
      const int64_t groups = m.groups_per_row();
      m.int8_.resize(n);
      m.scales_.resize(out * groups);
      for (int64_t o = 0; o < out; ++o) {
        for (int64_t g = 0; g < groups; ++g) {
          const int64_t begin = g * kQuantGroup, end = std::min(in, begin + kQuantGroup);
          const float* src = w + o * in;
          float amax = 0.0f;
          for (int64_t i = begin; i < end; ++i) amax = std::max(amax, std::fabs(src[i]));
          const float scale = amax / 127.0f;
          m.scales_[o * groups + g] = scale;
          for (int64_t i = begin; i < end; ++i) {
            const float q = scale > 0.0f ? std::nearbyint(src[i] / scale) : 0.0f;
            m.int8_[o * in + i] = static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f));
          }
        }
      }
      break;
    }
  }
  return m;
}

size_t Matrix::bytes() const {
  const size_t n = static_cast<size_t>(out_) * in_;
  switch (dtype_) {
    case MatrixDType::kBF16: return n * sizeof(uint16_t);
    case MatrixDType::kInt8: return n + scales_.size() * sizeof(float);
    case MatrixDType::kF32: break;
  }
  return n * sizeof(float);
}

void Matrix::Widen(int64_t begin, int64_t end, float* dst) const {
  switch (dtype_) {
    case MatrixDType::kF32:
      std::memcpy(dst, f32_ + begin * in_, sizeof(float) * (end - begin) * in_);
      return;
    case MatrixDType::kBF16: return Pick().widen_bf16(in_, Bf16Weights{bf16()}, begin, end, dst);
    case MatrixDType::kInt8:
      return Pick().widen_int8(in_, Int8Weights{int8(), scales()}, begin, end, dst);
  }
}

}  // namespace seqboat::cpu
