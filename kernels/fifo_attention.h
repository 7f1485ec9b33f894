// FIFO attention of the activated rows: each row attends to its slot's FIFO (oldest first),
// then the earlier activated rows of its own chunk, then itself -- at most capacity + 1
// entries -- and writes h * r, the h_proj input. Two kernels, picked by the launcher:
// - decode-shaped batches (every chunk short): one row's window is split into pieces over
//   several blocks (flash-decoding style); the last block of a row to finish merges them;
// - batches with a long (prefill) chunk: a block takes a tile of consecutive activated rows of
//   one chunk, whose windows nearly coincide, and streams the union window once for all of
//   them (online softmax), so keys and values are read once per tile instead of once per row.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/kernel_types.h"

namespace seqboat::cuda {

// Where the activated rows of this call live and which slot's FIFO each one reads.
struct ActivatedRows {
  const int32_t* activated_rows = nullptr;      // [max_rows] batch row of activated index a
  const int32_t* chunk_active_begin = nullptr;  // [chunks + 1]; [chunks] = R
  const int32_t* row_chunk = nullptr;           // [rows]
  const int32_t* chunk_slot = nullptr;          // [chunks]
  const int64_t* row_positions = nullptr;       // [rows]
  int chunks = 0;
  int64_t max_rows = 0;  // host-known upper bound of R (the batch's rows)
};

// One layer's FIFO of slot 0; slot s is at + s * the stride (elements of each array).
template <typename T>
struct FifoView {
  T* keys = nullptr;             // [capacity, Z]
  T* values = nullptr;           // [capacity, H]
  int64_t* positions = nullptr;  // [capacity]
  FifoMeta* meta = nullptr;      // [1]
  int64_t keys_slot_stride = 0;
  int64_t values_slot_stride = 0;
  int64_t positions_slot_stride = 0;
  int64_t meta_slot_stride = 0;
  int capacity = 0;
};

template <typename T>
struct FifoAttentionParams {
  ActivatedRows rows;
  FifoView<T> fifo;
  DeviceAttention kind = DeviceAttention::kSoftmax;
  const float* queries = nullptr;       // [max_rows, Z] rotated
  const T* keys = nullptr;              // [max_rows, Z] this call's rotated keys
  const T* values = nullptr;            // [max_rows, H]
  const float* gates = nullptr;         // [max_rows, H] r
  const float* rel_pos_bias = nullptr;  // [2P - 1] simple bias, else null
  int max_positions = 0;                // P
  float score_scale = 1.0f;             // 1/sqrt(Z) softmax; 1/w relu2 and laplace
  int z_dim = 0;
  int hidden_dim = 0;
  int64_t longest_chunk = 1;  // host-known: >= kTiledAttentionMinChunk picks the tiled kernel
  // Split kernel: pieces of each row's window (grid.y).
  int splits = 1;     // pieces per row
  int split_len = 0;  // entries per piece; splits * split_len >= capacity + 1
  // Tiled kernel: pieces of each tile's union window (grid.y), <= kMaxTileSplits.
  int tile_splits = 1;
  // Scratch of both: split kernel [max_rows, splits, ...]; tiled kernel [tiles, tile_splits,
  // kTileQueries, ...] (see TiledPartialRows).
  float* partial_h = nullptr;       // [partial rows, H]
  float* partial_max = nullptr;     // [partial rows]
  float* partial_sum = nullptr;     // [partial rows]
  int32_t* row_counters = nullptr;  // [max_rows] zero before the call; left zero after it
  T* out = nullptr;                 // [max_rows, H] h * r, the h_proj input
};

inline constexpr int64_t kTiledAttentionMinChunk = 16;
inline constexpr int kTileQueries = 4;  // activated rows per tile of the tiled kernel
inline constexpr int kMaxTileSplits = 8;

// Pieces per tile for `max_rows` rows, and the partial rows the tiled kernel then needs.
int ChooseTileSplits(int64_t max_rows, int multiprocessors);
inline int64_t TiledPartialRows(int64_t max_rows, int tile_splits) {
  return (max_rows + kTileQueries - 1) / kTileQueries * kTileQueries * tile_splits;
}

// Picks splits/split_len for `max_rows` rows on a device with `multiprocessors` SMs.
void ChooseAttentionSplits(int64_t max_rows, int capacity, int multiprocessors, int* splits,
                           int* split_len);
// Dynamic shared memory the kernels need for these sizes (the larger of the two); the backend
// checks it against the device's limit once, at creation.
size_t AttentionSharedBytes(int split_len, int z_dim, int hidden_dim);

template <typename T>
void LaunchFifoAttention(const FifoAttentionParams<T>& p, cudaStream_t stream);

template <typename T>
struct FifoPushParams {
  ActivatedRows rows;
  FifoView<T> fifo;
  const T* keys = nullptr;    // [max_rows, Z]
  const T* values = nullptr;  // [max_rows, H]
  int z_dim = 0;
  int hidden_dim = 0;
};
// Writes each chunk's activated (k, v, position) into its slot's ring after the entries it
// holds (the oldest overwritten first); entries that the same chunk would evict again are
// skipped. Reads head/count but does not change them: LaunchFifoCommit does, once per call.
template <typename T>
void LaunchFifoPush(const FifoPushParams<T>& p, cudaStream_t stream);

struct FifoCommitParams {
  FifoMeta* meta = nullptr;                     // [slots, layers]
  const int32_t* chunk_slot = nullptr;          // [chunks]
  const int32_t* chunk_active_begin = nullptr;  // [layers, chunks + 1]
  int chunks = 0;
  int layers = 0;
  int capacity = 0;
};
// head/count/activated of every (chunk's slot, layer) after this call's pushes.
void LaunchFifoCommit(const FifoCommitParams& p, cudaStream_t stream);

}  // namespace seqboat::cuda
