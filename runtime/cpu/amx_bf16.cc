// AMX tile products for bf16 and int8 weights (amx_bf16.h).
//
// Tile registers: 0-3 accumulate a 32 x 32 block of y (2 x 2 tiles of 16 x 16 fp32), 4-5 hold
// 32 rows x 32 inputs of bf16(x), 6-7 32 inputs x 32 outputs of w in the pair-interleaved
// layout TDPBF16PS takes: tile row r holds inputs 2r and 2r+1 of each of 16 outputs.
#include "runtime/cpu/amx_bf16.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "runtime/util/dtype.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define SEQBOAT_AMX 1
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace seqboat::cpu {

#ifdef SEQBOAT_AMX

namespace {

constexpr int64_t kTileRows = 16;    // rows of every tile
constexpr int64_t kTileK = 32;       // bf16 inputs per tile row (64 bytes)
constexpr int64_t kBlockRows = 32;   // rows of x per block (two A tiles)
constexpr int64_t kBlockOuts = 32;   // outputs per block (two B tiles)
constexpr int64_t kGroupOuts = 256;  // outputs a thread packs at a time: 256 x in x 2 bytes of L2
constexpr int64_t kTileElements = kTileRows * kTileK;  // bf16 per packed weight tile (1 KiB)

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

// Index of x's A tile (16 rows x 32 inputs) for 32-row block `block`, k-tile `t` and half
// `half` (rows 0-15 or 16-31 of the block): a row block's tiles lie in the order Block reads
// them, 1 KiB each.
int64_t XTile(int64_t block, int64_t k_tiles, int64_t t, int half) {
  return (block * k_tiles + t) * 2 + half;
}

// x rows [begin, end) rounded to bf16 (nearest even) in A tiles (XTile), zero past `in`.
void RoundRows(const float* x, int64_t in, int64_t padded_in, int64_t begin, int64_t end,
               uint16_t* tiles) {
  const int64_t k_tiles = padded_in / kTileK;
  for (int64_t r = begin; r < end; ++r) {
    const float* src = x + r * in;
    const int half = static_cast<int>((r % kBlockRows) / kTileRows);
    const int64_t row_in_tile = r % kTileRows;
    for (int64_t i = 0; i < padded_in; i += 16) {
      const int64_t n = std::min<int64_t>(16, in - i);
      const __mmask16 mask = n >= 16 ? 0xffff : n > 0 ? (1u << n) - 1 : 0;
      const __m256bh rounded = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, src + i));
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
    const __m512 widened = _mm512_mul_ps(values, _mm512_set1_ps(scales[k / kAmxInt8Group]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k),
                        reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(widened)));
  }
  for (; k < in; ++k) {
    dst[k] = FloatToBf16(static_cast<float>(q[k]) * scales[k / kAmxInt8Group]);
  }
}

// Outputs [begin, padded_end) of w packed as tiles: for each 16 outputs, padded_in / 32 tiles,
// zero past `in` and from output `end` on (w's rows from `end` on are not read).
void PackWeights(const AmxWeights& w, int64_t in, int64_t padded_in, int64_t begin, int64_t end,
                 int64_t padded_end, uint16_t* dst) {
  thread_local std::vector<uint16_t> dequantized;  // an int8 row as bf16
  if (w.bf16 == nullptr) dequantized.resize(in);
  const int64_t groups = (in + kAmxInt8Group - 1) / kAmxInt8Group;
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
  const __mmask16 mask0 = n_outs >= 16 ? 0xffff : (1u << n_outs) - 1;
  const __mmask16 mask1 = n_outs >= 32 ? 0xffff : n_outs > 16 ? (1u << (n_outs - 16)) - 1 : 0;
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
void OutputRange(const uint16_t* x_tiles, int64_t rows, int64_t in, int64_t padded_in,
                 const AmxWeights& w, const float* bias, int64_t out, float* y, int64_t begin,
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

}  // namespace

bool AmxBf16Usable() {
  static const bool usable = RequestTilePermission();
  return usable;
}

void AmxLinear(const float* x, int64_t rows, int64_t in, const AmxWeights& w, const float* bias,
               int64_t out, float* y, ThreadPool* pool) {
  if (rows == 0 || out == 0) return;
  const int64_t padded_in = RoundUp(in, kTileK);
  const int64_t padded_rows = RoundUp(rows, kBlockRows);
  thread_local std::vector<uint16_t> tiles;
  tiles.resize(padded_rows * padded_in);
  uint16_t* const x_tiles = tiles.data();  // the workers below see their own thread_local
  const bool parallel = pool != nullptr && pool->num_threads() > 1;
  auto round_rows = [&](int64_t begin, int64_t end) {
    RoundRows(x, in, padded_in, begin, end, x_tiles);
  };
  if (parallel) {
    pool->ParallelFor(rows, round_rows);
  } else {
    round_rows(0, rows);
  }
  // Padding rows are multiplied but never stored; zero them so they stay finite.
  const int64_t k_tiles = padded_in / kTileK;
  for (int64_t r = rows; r < padded_rows; ++r) {
    const int half = static_cast<int>((r % kBlockRows) / kTileRows);
    for (int64_t t = 0; t < k_tiles; ++t) {
      std::memset(x_tiles + XTile(r / kBlockRows, k_tiles, t, half) * kTileElements +
                      (r % kTileRows) * kTileK,
                  0, kTileK * sizeof(uint16_t));
    }
  }
  const int64_t blocks = (out + kBlockOuts - 1) / kBlockOuts;
  auto range = [&](int64_t begin, int64_t end) {
    OutputRange(x_tiles, rows, in, padded_in, w, bias, out, y, begin * kBlockOuts,
                std::min(out, end * kBlockOuts));
  };
  if (parallel) {
    pool->ParallelFor(blocks, range);
  } else {
    range(0, blocks);
  }
}

#else  // no AMX kernels in this build

bool AmxBf16Usable() { return false; }

void AmxLinear(const float*, int64_t, int64_t, const AmxWeights&, const float*, int64_t, float*,
               ThreadPool*) {}

#endif

}  // namespace seqboat::cpu
