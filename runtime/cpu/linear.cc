// y = x . w^T + bias, the CPU backend's products: weight matrices row-major [out, in] as
// stored, the threads the backend's pool.
//
// Up to kStreamRows rows (decode of small batches): each weight row is streamed once and dotted
// with every x row. Up to kTiledRows: register tiles of dot products, the tile's weight rows
// kept in L1 while the x rows (in L2) go past them, so a weight matrix is still read from
// memory once. More rows: OpenBLAS sgemm, single-threaded, on each pool thread's share of the
// outputs; from 48 rows on its packing pays for itself (bench/linear_bench.cc).
#include <cblas.h>

#include <algorithm>
#include <cstring>

#include "runtime/cpu/cpu_ops.h"
#include "runtime/cpu/vec.h"
#include "runtime/util/simd_clones.h"

namespace seqboat::cpu {

namespace {

using vec::Load;
using vec::Sum8;
using vec::Vec16;
using vec::Vec8;

// ---- Streaming kernel, 1..kStreamRows rows ----
// Each row keeps kVecs independent vector accumulators of 8 lanes: a single accumulator per
// dot would wait on the latency of every multiply-add. The lanes are summed in a fixed order,
// so a result never depends on the thread split.
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
      for (int v = 0; v < kVecs; ++v) wv[v] = Load<Vec8>(wo + i + 8 * v);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < kVecs; ++v) acc[r][v] += Load<Vec8>(x + r * in + i + 8 * v) * wv[v];
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      Vec8 total = acc[r][0];
#pragma GCC unroll 4
      for (int v = 1; v < kVecs; ++v) total += acc[r][v];
      float sum = Sum8(total);
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

// ---- Tiled kernel, kStreamRows + 1 .. kTiledRows rows ----
// One R x O tile: R rows of x against O weight rows, one vector accumulator of V's lanes per
// dot. Every dot sums in the same order whatever the tile's shape (lanes of V, folded to 8,
// then an 8-float step, the 8 lanes in Sum8's order, then the scalar tail), so a row's result
// does not depend on the batch it came in or on the thread split.
template <typename V, int R, int O>
__attribute__((always_inline)) inline void Tile(const float* x, int64_t in, const float* w,
                                                const float* bias, int64_t out, float* y,
                                                const float* prefetch = nullptr) {
  constexpr int kLanes = sizeof(V) / sizeof(float);
  const int64_t body = in - in % kLanes;
  V acc[R][O] = {};
  for (int64_t i = 0; i < body; i += kLanes) {
    if (prefetch != nullptr) {
#pragma GCC unroll 8
      for (int o = 0; o < O; ++o) __builtin_prefetch(prefetch + o * in + i);
    }
    V xv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) xv[r] = Load<V>(x + r * in + i);
#pragma GCC unroll 8
    for (int o = 0; o < O; ++o) {
      const V wv = Load<V>(w + o * in + i);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][o] += xv[r] * wv;
    }
  }
  const bool step8 = in - body >= 8;
  const int64_t tail = body + (step8 ? 8 : 0);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int o = 0; o < O; ++o) {
      Vec8 folded;
      if constexpr (kLanes == 16) {
        folded = vec::Fold(acc[r][o]);
      } else {
        folded = acc[r][o];
      }
      if (step8) folded += Load<Vec8>(x + r * in + body) * Load<Vec8>(w + o * in + body);
      float sum = Sum8(folded);
      for (int64_t i = tail; i < in; ++i) sum += x[r * in + i] * w[o * in + i];
      y[r * out + o] = bias != nullptr ? sum + bias[o] : sum;
    }
  }
}

// The tile of up to R x O at (row, output), cut to what is left of both.
template <typename V, int R, int O>
__attribute__((always_inline)) inline void EdgeTile(int rows_left, int outputs_left, const float* x,
                                                    int64_t in, const float* w, const float* bias,
                                                    int64_t out, float* y) {
  if constexpr (R > 1) {
    if (rows_left < R)
      return EdgeTile<V, R - 1, O>(rows_left, outputs_left, x, in, w, bias, out, y);
  }
  if constexpr (O > 1) {
    if (outputs_left < O)
      return EdgeTile<V, R, O - 1>(rows_left, outputs_left, x, in, w, bias, out, y);
  }
  Tile<V, R, O>(x, in, w, bias, out, y);
}

// Outputs [begin, end) for all rows, in blocks: a block of kRowBlock rows of x stays in L1
// while the O-row weight groups of a block of kOutputBlock outputs (in L2) go past it, so the
// weights come from memory once and from L2 once per row block.
template <typename V, int R, int O>
__attribute__((always_inline)) inline void TiledRange(const float* x, int64_t rows, int64_t in,
                                                      const float* w, const float* bias,
                                                      int64_t out, float* y, int64_t begin,
                                                      int64_t end) {
  constexpr int64_t kRowBlock = 4 * R, kOutputBlock = 16 * O;
  for (int64_t o_block = begin; o_block < end; o_block += kOutputBlock) {
    const int64_t o_end = std::min(end, o_block + kOutputBlock);
    for (int64_t r_block = 0; r_block < rows; r_block += kRowBlock) {
      const int64_t r_end = std::min(rows, r_block + kRowBlock);
      for (int64_t o = o_block; o < o_end; o += O) {
        const int outputs_left = static_cast<int>(std::min<int64_t>(O, o_end - o));
        for (int64_t r = r_block; r < r_end; r += R) {
          const int rows_left = static_cast<int>(std::min<int64_t>(R, r_end - r));
          const float* xr = x + r * in;
          const float* wo = w + o * in;
          const float* bo = bias != nullptr ? bias + o : nullptr;
          float* yr = y + r * out + o;
          if (rows_left == R && outputs_left == O) {
            // The block's first tile of a weight group fetches the next group's rows, which
            // come from memory: the products need not wait on them there.
            const bool fetch_next = r == 0 && o + 2 * O <= end;
            Tile<V, R, O>(xr, in, wo, bo, out, yr, fetch_next ? wo + O * in : nullptr);
          } else {
            EdgeTile<V, R, O>(rows_left, outputs_left, xr, in, wo, bo, out, yr);
          }
        }
      }
    }
  }
}

// Tile shapes by register file: AVX-512 has 32 vector registers (4 x 6 accumulators plus 4 x
// rows and a weight vector), AVX2 16 (3 x 4 plus 3 and 1).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target("arch=x86-64-v4"))) void TiledRangeV4(const float* x, int64_t rows,
                                                            int64_t in, const float* w,
                                                            const float* bias, int64_t out,
                                                            float* y, int64_t begin, int64_t end) {
  TiledRange<Vec16, 4, 6>(x, rows, in, w, bias, out, y, begin, end);
}
__attribute__((target("arch=x86-64-v3"))) void TiledRangeV3(const float* x, int64_t rows,
                                                            int64_t in, const float* w,
                                                            const float* bias, int64_t out,
                                                            float* y, int64_t begin, int64_t end) {
  TiledRange<Vec8, 3, 4>(x, rows, in, w, bias, out, y, begin, end);
}
#endif
void TiledRangeDefault(const float* x, int64_t rows, int64_t in, const float* w, const float* bias,
                       int64_t out, float* y, int64_t begin, int64_t end) {
  TiledRange<Vec8, 2, 4>(x, rows, in, w, bias, out, y, begin, end);
}

using TiledRangeFn = void (*)(const float*, int64_t, int64_t, const float*, const float*, int64_t,
                              float*, int64_t, int64_t);

// The variant for `isa`, or null when this CPU (or compiler) has no such variant.
TiledRangeFn TiledRangeFor(TileIsa isa) {
  switch (isa) {
    case TileIsa::kPortable: return TiledRangeDefault;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    case TileIsa::kAvx2:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? TiledRangeV3
                                                                             : nullptr;
    case TileIsa::kAvx512:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                     __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
                 ? TiledRangeV4
                 : nullptr;
#endif
    default: return nullptr;
  }
}

// Chosen once, the widest this CPU runs (a plain call, not an ifunc: sanitizer builds use it).
TiledRangeFn PickTiledRange() {
  for (TileIsa isa : {TileIsa::kAvx512, TileIsa::kAvx2}) {
    if (TiledRangeFn fn = TiledRangeFor(isa)) return fn;
  }
  return TiledRangeDefault;
}

}  // namespace

void UseSingleThreadedBlas() { openblas_set_num_threads(1); }

bool LinearTiledForTest(TileIsa isa, const float* x, int64_t rows, int64_t in, const float* w,
                        const float* bias, int64_t out, float* y) {
  const TiledRangeFn fn = TiledRangeFor(isa);
  if (fn == nullptr) return false;
  fn(x, rows, in, w, bias, out, y, 0, out);
  return true;
}

void Linear(const float* x, int64_t rows, int64_t in, const float* w, const float* bias,
            int64_t out, float* y, ThreadPool* pool) {
  if (rows == 0 || out == 0) return;
  const bool parallel = pool != nullptr && pool->num_threads() > 1 &&
                        rows * in * out >= kMinParallelLinear;  // waking a thread costs more
  static_assert(kStreamRows == 8, "LinearStreamRange has kernels for 1..8 rows");
  if (rows <= kStreamRows) {
    if (!parallel) {
      LinearStreamRange(x, rows, in, w, bias, out, y, 0, out);
    } else {
      pool->ParallelFor(out, [&](int64_t begin, int64_t end) {
        LinearStreamRange(x, rows, in, w, bias, out, y, begin, end);
      });
    }
    return;
  }
  if (rows > kTiledRows) {
    static const bool single_threaded = (UseSingleThreadedBlas(), true);  // once, for any caller
    (void)single_threaded;
    const auto sgemm = [&](int64_t begin, int64_t end) {
      float beta = 0.0f;
      if (bias != nullptr) {
        for (int64_t r = 0; r < rows; ++r)
          std::memcpy(y + r * out + begin, bias + begin, (end - begin) * sizeof(float));
        beta = 1.0f;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, end - begin, in, 1.0f, x, in,
                  w + begin * in, in, beta, y + begin, out);
    };
    if (!parallel) {
      sgemm(0, out);
    } else {  // outputs in multiples of 16, OpenBLAS's widest micro-tile
      const int64_t groups = (out + 15) / 16;
      pool->ParallelFor(
          groups, [&](int64_t begin, int64_t end) { sgemm(begin * 16, std::min(out, end * 16)); });
    }
    return;
  }
  static const TiledRangeFn tiled = PickTiledRange();
  if (!parallel) {
    tiled(x, rows, in, w, bias, out, y, 0, out);
    return;
  }
  // Threads take whole tiles' worth of outputs (12: a multiple of every shape's width).
  constexpr int64_t kSplit = 12;
  const int64_t groups = (out + kSplit - 1) / kSplit;
  pool->ParallelFor(groups, [&](int64_t begin, int64_t end) {
    tiled(x, rows, in, w, bias, out, y, begin * kSplit, std::min(out, end * kSplit));
  });
}

}  // namespace seqboat::cpu
