// bf16 products for bf16 and int8 weights (bf16_products.h).
//
// Packed weights: for each 16 outputs, padded_in / 2 rows of 64 bytes, row p holding inputs 2p
// and 2p + 1 of each output: AMX's B tiles (16 such rows each) and VDPBF16PS's operand alike.
// AMX tile registers: 0-3 accumulate a 32 x 32 block of y (2 x 2 tiles of 16 x 16 fp32), 4-5
// hold 32 rows x 32 inputs of bf16(x), 6-7 32 inputs x 32 outputs of packed w. AVX512_BF16:
// 24 registers accumulate 6 rows x 64 outputs, 4 hold the 64 outputs' weights for one pair of
// inputs, one that pair of one row's x (a broadcast 32-bit word).
#include "runtime/cpu/bf16_products.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "runtime/util/dtype.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define SEQBOAT_BF16_KERNELS 1
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace seqboat::cpu {

#ifdef SEQBOAT_BF16_KERNELS

namespace {

constexpr int64_t kTileRows = 16;    // rows of every tile
constexpr int64_t kTileK = 32;       // bf16 inputs per tile row (64 bytes)
constexpr int64_t kBlockRows = 32;   // rows of x per block (two A tiles)
constexpr int64_t kBlockOuts = 32;   // outputs per block (two B tiles)
constexpr int64_t kGroupOuts = 256;  // outputs a thread packs at a time: 256 x in x 2 bytes of L2
constexpr int64_t kTileElements = kTileRows * kTileK;  // bf16 per packed weight tile (1 KiB)
constexpr int64_t kDotRows = 6;                        // rows of x per AVX512_BF16 tile

// Linux's permission request for the tile data state (asm/prctl.h, Linux 5.16+).
constexpr int kArchReqXcompPerm = 0x1023;
constexpr int kXfeatureXtiledata = 18;

struct TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

int64_t RoundUp(int64_t n, int64_t multiple) { return (n + multiple - 1) / multiple * multiple; }

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")

// The first min(max(n, 0), 16) lanes.
__mmask16 TailMask(int64_t n) {
  return n >= 16 ? 0xffff : n > 0 ? static_cast<__mmask16>((1u << n) - 1) : 0;
}

// Index of x's A tile (16 rows x 32 inputs) for 32-row block `block`, k-tile `t` and half
// `half` (rows 0-15 or 16-31 of the block): a row block's tiles lie in the order Block reads
// them, 1 KiB each.
int64_t XTile(int64_t block, int64_t k_tiles, int64_t t, int half) {
  return (block * k_tiles + t) * 2 + half;
}

// Rows [begin, end) of x rounded to bf16 (nearest even) in A tiles (XTile), zero past `in` and
// from row `rows` on (padding).
void RoundRows(const float* x, int64_t rows, int64_t in, int64_t padded_in, int64_t begin,
               int64_t end, uint16_t* tiles) {
  const int64_t k_tiles = padded_in / kTileK;
  for (int64_t r = begin; r < end; ++r) {
    const float* src = x + std::min(r, rows - 1) * in;
    const int64_t width = r < rows ? in : 0;
    const int half = static_cast<int>((r % kBlockRows) / kTileRows);
    const int64_t row_in_tile = r % kTileRows;
    for (int64_t i = 0; i < padded_in; i += 16) {
      const __m256bh rounded =
          _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(TailMask(width - i), src + i));
      uint16_t* dst = tiles + XTile(r / kBlockRows, k_tiles, i / kTileK, half) * kTileElements +
                      row_in_tile * kTileK + i % kTileK;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), reinterpret_cast<__m256i>(rounded));
    }
  }
}

// One int8 row as bf16: q * scale (the widened weight) rounded to nearest even.
void DequantizeRow(const int8_t* q, const float* scales, int64_t in, uint16_t* dst) {
  int64_t k = 0;
  for (; k + 16 <= in; k += 16) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + k));
    // Masked forms: the unmasked ones trip GCC 12's -Wmaybe-uninitialized (undefined operand).
    const __m512 values =
        _mm512_maskz_cvtepi32_ps(0xffff, _mm512_maskz_cvtepi8_epi32(0xffff, bytes));
    const __m512 widened = _mm512_mul_ps(values, _mm512_set1_ps(scales[k / kPackInt8Group]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k),
                        reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(widened)));
  }
  for (; k < in; ++k) {
    dst[k] = FloatToBf16(static_cast<float>(q[k]) * scales[k / kPackInt8Group]);
  }
}

// Outputs [begin, padded_end) of w packed as tiles: for each 16 outputs, padded_in / 32 tiles,
// zero past `in` and from output `end` on (w's rows from `end` on are not read).
void PackWeights(const Bf16Source& w, int64_t in, int64_t padded_in, int64_t begin, int64_t end,
                 int64_t padded_end, uint16_t* dst) {
  thread_local std::vector<uint16_t> dequantized;  // an int8 row as bf16
  if (w.bf16 == nullptr) dequantized.resize(in);
  const int64_t groups = (in + kPackInt8Group - 1) / kPackInt8Group;
  const int64_t k_tiles = padded_in / kTileK;
  const int64_t whole_tiles = in % 2 == 0 ? in / kTileK : 0;  // of pairs read as 32-bit words
  for (int64_t o16 = begin; o16 < padded_end; o16 += kTileRows) {
    uint16_t* tiles = dst + (o16 - begin) / kTileRows * k_tiles * kTileElements;
    std::memset(tiles, 0, k_tiles * kTileElements * sizeof(uint16_t));
    for (int64_t c = 0; c < kTileRows && o16 + c < end; ++c) {
      const int64_t o = o16 + c;
      const uint16_t* row = dequantized.data();
      if (w.bf16 != nullptr) {
        row = w.bf16 + o * in;
      } else {
        DequantizeRow(w.q + o * in, w.scales + o * groups, in, dequantized.data());
      }
      for (int64_t tile = 0; tile < whole_tiles; ++tile) {
        for (int64_t pair = 0; pair < kTileK / 2; ++pair) {
          uint32_t both;
          std::memcpy(&both, row + tile * kTileK + 2 * pair, sizeof(both));
          std::memcpy(tiles + tile * kTileElements + pair * kTileK + c * 2, &both, sizeof(both));
        }
      }
      for (int64_t k = whole_tiles * kTileK; k < in; ++k) {
        const int64_t tile = k / kTileK, pair = (k % kTileK) / 2, half = k % 2;
        tiles[tile * kTileElements + pair * kTileK + c * 2 + half] = row[k];
      }
    }
  }
}

void ConfigureTiles() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = kTileRows;
    config.bytes_per_row[t] = 64;
  }
  _tile_loadconfig(&config);
}

// Adds the products of x rows [row, row + 32) and k-tiles [t0, t1) to the 32 x 32 block of
// sums at `acc` (zero when t0 == 0), from the output block's packed tiles.
void Block(const uint16_t* x_tiles, int64_t k_tiles, const uint16_t* packed, int64_t block,
           int64_t t0, int64_t t1, float* acc) {
  constexpr int64_t kAccStride = kBlockOuts * sizeof(float);
  const uint16_t* w0 = packed;
  const uint16_t* w1 = packed + k_tiles * kTileElements;
  float* c01 = acc + kTileRows;
  float* c10 = acc + kTileRows * kBlockOuts;
  float* c11 = c10 + kTileRows;
  if (t0 == 0) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  } else {
    _tile_loadd(0, acc, kAccStride);
    _tile_loadd(1, c01, kAccStride);
    _tile_loadd(2, c10, kAccStride);
    _tile_loadd(3, c11, kAccStride);
  }
  for (int64_t t = t0; t < t1; ++t) {
    _tile_loadd(6, w0 + t * kTileElements, 64);
    _tile_loadd(7, w1 + t * kTileElements, 64);
    const uint16_t* x = x_tiles + XTile(block, k_tiles, t, 0) * kTileElements;
    _tile_loadd(4, x, 64);
    _tile_loadd(5, x + kTileElements, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, acc, kAccStride);
  _tile_stored(1, c01, kAccStride);
  _tile_stored(2, c10, kAccStride);
  _tile_stored(3, c11, kAccStride);
}

// y rows [row, row + 32) x outputs [o, o + 32), clipped to rows and end, from a block of sums.
void StoreBlock(const float* acc, int64_t row, int64_t rows, int64_t o, int64_t end,
                const float* bias, int64_t out, float* y) {
  const int64_t n_rows = std::min(kBlockRows, rows - row);
  const int64_t n_outs = std::min(kBlockOuts, end - o);
  const __mmask16 mask0 = TailMask(n_outs), mask1 = TailMask(n_outs - 16);
  const __m512 b0 = bias != nullptr ? _mm512_maskz_loadu_ps(mask0, bias + o) : _mm512_setzero_ps();
  const __m512 b1 =
      bias != nullptr ? _mm512_maskz_loadu_ps(mask1, bias + o + 16) : _mm512_setzero_ps();
  for (int64_t r = 0; r < n_rows; ++r) {
    float* dst = y + (row + r) * out + o;
    const float* src = acc + r * kBlockOuts;
    _mm512_mask_storeu_ps(dst, mask0, _mm512_add_ps(b0, _mm512_loadu_ps(src)));
    _mm512_mask_storeu_ps(dst + 16, mask1, _mm512_add_ps(b1, _mm512_loadu_ps(src + 16)));
  }
}

// Outputs [begin, end) (begin a multiple of 32) for every row, on the calling thread. For each
// group of outputs (packed, in L2) and each 32 rows, x goes by in chunks of kChunkTiles k-tiles
// (32 x 128 bf16 = 8 KiB, in L1) past every output block of the group.
void AmxOutputRange(const uint16_t* x_tiles, int64_t rows, int64_t in, int64_t padded_in,
                    const Bf16Source& w, const float* bias, int64_t out, float* y, int64_t begin,
                    int64_t end) {
  constexpr int64_t kChunkTiles = 4;
  constexpr int64_t kGroupBlocks = kGroupOuts / kBlockOuts;
  constexpr int64_t kBlockElements = kBlockRows * kBlockOuts;
  thread_local std::vector<uint16_t> packed;
  thread_local std::vector<float> acc;
  packed.resize(kGroupOuts * padded_in);
  acc.resize(kGroupBlocks * kBlockElements);
  const int64_t k_tiles = padded_in / kTileK;
  const int64_t block_tiles = 2 * k_tiles * kTileElements;  // packed bf16 per output block
  ConfigureTiles();
  for (int64_t g = begin; g < end; g += kGroupOuts) {
    const int64_t g_end = std::min(end, g + kGroupOuts);
    const int64_t blocks = (g_end - g + kBlockOuts - 1) / kBlockOuts;
    PackWeights(w, in, padded_in, g, g_end, g + blocks * kBlockOuts, packed.data());
    for (int64_t row = 0; row < rows; row += kBlockRows) {
      for (int64_t t0 = 0; t0 < k_tiles; t0 += kChunkTiles) {
        const int64_t t1 = std::min(k_tiles, t0 + kChunkTiles);
        for (int64_t b = 0; b < blocks; ++b) {
          Block(x_tiles, k_tiles, packed.data() + b * block_tiles, row / kBlockRows, t0, t1,
                acc.data() + b * kBlockElements);
        }
      }
      for (int64_t b = 0; b < blocks; ++b) {
        StoreBlock(acc.data() + b * kBlockElements, row, rows, g + b * kBlockOuts, g_end, bias, out,
                   y);
      }
    }
  }
  _tile_release();
}

// x rows [begin, end) rounded to bf16 (nearest even), row-major with padded_in per row, zero
// past `in`.
void RoundRowsFlat(const float* x, int64_t in, int64_t padded_in, int64_t begin, int64_t end,
                   uint16_t* dst) {
  for (int64_t r = begin; r < end; ++r) {
    for (int64_t i = 0; i < padded_in; i += 16) {
      const __m256bh rounded =
          _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(TailMask(in - i), x + r * in + i));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + r * padded_in + i),
                          reinterpret_cast<__m256i>(rounded));
    }
  }
}

// y rows [row, row + R) x outputs [o, o + 16 NV), clipped to `end`: bf16(x) rows (padded_in
// each) times the packed weights of the NV 16-output blocks at `packed`, over every pair of
// inputs, plus bias.
template <int R, int NV>
void DotTile(const uint16_t* x, int64_t padded_in, const uint16_t* packed, int64_t row, int64_t o,
             int64_t end, const float* bias, int64_t out, float* y) {
  const int64_t block = padded_in * 16;  // packed bf16 of 16 outputs
  __m512 acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  const int64_t pairs = padded_in / 2;
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh w[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      w[v] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(packed + v * block + p * 32));
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      int32_t both;
      std::memcpy(&both, x + r * padded_in + 2 * p, sizeof(both));
      const __m512bh a = reinterpret_cast<__m512bh>(_mm512_set1_epi32(both));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a, w[v]);
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const __mmask16 mask = TailMask(end - o - 16 * v);
    const __m512 b =
        bias != nullptr ? _mm512_maskz_loadu_ps(mask, bias + o + 16 * v) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      _mm512_mask_storeu_ps(y + (row + r) * out + o + 16 * v, mask, _mm512_add_ps(acc[r][v], b));
    }
  }
}

template <int NV>
void DotTileRows(int64_t rows, const uint16_t* x, int64_t padded_in, const uint16_t* packed,
                 int64_t row, int64_t o, int64_t end, const float* bias, int64_t out, float* y) {
  switch (rows) {
    case 1: return DotTile<1, NV>(x, padded_in, packed, row, o, end, bias, out, y);
    case 2: return DotTile<2, NV>(x, padded_in, packed, row, o, end, bias, out, y);
    case 3: return DotTile<3, NV>(x, padded_in, packed, row, o, end, bias, out, y);
    case 4: return DotTile<4, NV>(x, padded_in, packed, row, o, end, bias, out, y);
    case 5: return DotTile<5, NV>(x, padded_in, packed, row, o, end, bias, out, y);
    default: return DotTile<kDotRows, NV>(x, padded_in, packed, row, o, end, bias, out, y);
  }
}

// Outputs [begin, end) (begin a multiple of 32) for every row, on the calling thread: for each
// group of outputs (packed, in L2), kDotRows rows of bf16(x) at a time (in L1) against each 64
// outputs (32 at a group's odd end).
void DotOutputRange(const uint16_t* x, int64_t rows, int64_t padded_in, const Bf16Source& w,
                    int64_t in, const float* bias, int64_t out, float* y, int64_t begin,
                    int64_t end) {
  thread_local std::vector<uint16_t> packed;
  packed.resize(kGroupOuts * padded_in);
  for (int64_t g = begin; g < end; g += kGroupOuts) {
    const int64_t g_end = std::min(end, g + kGroupOuts);
    const int64_t blocks = (g_end - g + kBlockOuts - 1) / kBlockOuts;
    PackWeights(w, in, padded_in, g, g_end, g + blocks * kBlockOuts, packed.data());
    for (int64_t row = 0; row < rows; row += kDotRows) {
      const int64_t n_rows = std::min(kDotRows, rows - row);
      const uint16_t* x_rows = x + row * padded_in;
      for (int64_t b = 0; b < blocks; b += 2) {
        const uint16_t* tile_weights = packed.data() + b * kBlockOuts * padded_in;
        const int64_t o = g + b * kBlockOuts;
        if (b + 1 < blocks) {
          DotTileRows<4>(n_rows, x_rows, padded_in, tile_weights, row, o, g_end, bias, out, y);
        } else {
          DotTileRows<2>(n_rows, x_rows, padded_in, tile_weights, row, o, g_end, bias, out, y);
        }
      }
    }
  }
}

#pragma GCC pop_options

bool RequestTilePermission() {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16") ||
      !__builtin_cpu_supports("avx512bf16") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl")) {
    return false;
  }
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

bool AmxUsable() {
  static const bool usable = RequestTilePermission();
  return usable;
}

bool Avx512Bf16Usable() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}

void AmxLinear(const float* x, int64_t rows, int64_t in, int64_t padded_in, const Bf16Source& w,
               const float* bias, int64_t out, float* y, ThreadPool* pool, bool parallel) {
  const int64_t padded_rows = RoundUp(rows, kBlockRows);
  thread_local std::vector<uint16_t> tiles;
  tiles.resize(padded_rows * padded_in);
  uint16_t* const x_tiles = tiles.data();  // the workers below see their own thread_local
  // Padding rows are multiplied but never stored: zeros, so that they stay finite.
  auto round_rows = [&](int64_t begin, int64_t end) {
    RoundRows(x, rows, in, padded_in, begin, end, x_tiles);
  };
  const int64_t blocks = (out + kBlockOuts - 1) / kBlockOuts;
  auto range = [&](int64_t begin, int64_t end) {
    AmxOutputRange(x_tiles, rows, in, padded_in, w, bias, out, y, begin * kBlockOuts,
                   std::min(out, end * kBlockOuts));
  };
  if (parallel) {
    pool->ParallelFor(padded_rows, round_rows);
    pool->ParallelFor(blocks, range);
  } else {
    round_rows(0, padded_rows);
    range(0, blocks);
  }
}

void DotLinear(const float* x, int64_t rows, int64_t in, int64_t padded_in, const Bf16Source& w,
               const float* bias, int64_t out, float* y, ThreadPool* pool, bool parallel) {
  thread_local std::vector<uint16_t> rounded;
  rounded.resize(rows * padded_in);
  uint16_t* const x_bf16 = rounded.data();  // the workers below see their own thread_local
  auto round_rows = [&](int64_t begin, int64_t end) {
    RoundRowsFlat(x, in, padded_in, begin, end, x_bf16);
  };
  const int64_t blocks = (out + kBlockOuts - 1) / kBlockOuts;
  auto range = [&](int64_t begin, int64_t end) {
    DotOutputRange(x_bf16, rows, padded_in, w, in, bias, out, y, begin * kBlockOuts,
                   std::min(out, end * kBlockOuts));
  };
  if (parallel) {
    pool->ParallelFor(rows, round_rows);
    pool->ParallelFor(blocks, range);
  } else {
    round_rows(0, rows);
    range(0, blocks);
  }
}

}  // namespace

bool Bf16IsaUsable(Bf16Isa isa) {
  switch (isa) {
    case Bf16Isa::kNone: return false;
    case Bf16Isa::kAvx512Bf16: {
      static const bool usable = Avx512Bf16Usable();
      return usable;
    }
    case Bf16Isa::kAmx: return AmxUsable();
  }
  return false;
}

Bf16Isa BestBf16Isa() {
  if (Bf16IsaUsable(Bf16Isa::kAmx)) return Bf16Isa::kAmx;
  if (Bf16IsaUsable(Bf16Isa::kAvx512Bf16)) return Bf16Isa::kAvx512Bf16;
  return Bf16Isa::kNone;
}

void Bf16Linear(Bf16Isa isa, const float* x, int64_t rows, int64_t in, const Bf16Source& w,
                const float* bias, int64_t out, float* y, ThreadPool* pool) {
  if (rows == 0 || out == 0) return;
  const int64_t padded_in = RoundUp(in, kTileK);
  const bool parallel = pool != nullptr && pool->num_threads() > 1;
  if (isa == Bf16Isa::kAmx) {
    AmxLinear(x, rows, in, padded_in, w, bias, out, y, pool, parallel);
  } else if (isa == Bf16Isa::kAvx512Bf16) {
    DotLinear(x, rows, in, padded_in, w, bias, out, y, pool, parallel);
  }
}

#else  // no bf16 kernels in this build

bool Bf16IsaUsable(Bf16Isa) { return false; }

Bf16Isa BestBf16Isa() { return Bf16Isa::kNone; }

void Bf16Linear(Bf16Isa, const float*, int64_t, int64_t, const Bf16Source&, const float*, int64_t,
                float*, ThreadPool*) {}

#endif

}  // namespace seqboat::cpu
