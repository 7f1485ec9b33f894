// FIFO attention, FIFO push and commit (see fifo_attention.h).
#include <algorithm>
#include <type_traits>

#include "kernels/device_math.cuh"
#include "kernels/fifo_attention.h"

namespace seqboat::cuda {
namespace {

constexpr int kPushThreads = 128;
constexpr int kMaxSplits = 128;  // <= the split kernel's threads per block
constexpr int kMinSplitLen = 16;
constexpr int kMaxSplitLen = 2048;

// The attention window of activated row a, in logical FIFO order: entries [lo, own] where
// `own` is the row's own entry; logical e < fifo_count is in the slot's ring, e >= it is the
// chunk's activated row (e - fifo_count).
struct Window {
  int64_t slot;
  int64_t fifo_count;
  int64_t head;
  int64_t chunk_first;  // activated index of the chunk's first activated row
  int64_t lo;
  int64_t own;
};

template <typename T>
__device__ Window FindWindow(const ActivatedRows& rows, const FifoView<T>& fifo, int64_t a) {
  Window w;
  const int32_t c = rows.row_chunk[rows.activated_rows[a]];
  w.slot = rows.chunk_slot[c];
  const FifoMeta meta = fifo.meta[w.slot * fifo.meta_slot_stride];
  w.fifo_count = meta.count;
  w.head = meta.head;
  w.chunk_first = rows.chunk_active_begin[c];
  w.own = w.fifo_count + (a - w.chunk_first);
  w.lo = w.own - fifo.capacity > 0 ? w.own - fifo.capacity : 0;
  return w;
}

__device__ __forceinline__ float RelativeBias(const float* table, int max_positions,
                                              int64_t q_position, int64_t k_position) {
  const int64_t P = max_positions;
  int64_t index = P - 1 + k_position - q_position;
  index = index < 0 ? 0 : (index > 2 * P - 2 ? 2 * P - 2 : index);
  return table[index];
}

// Where logical entry e of a window lives: the slot's ring (e < fifo_count) or this call's
// activated row chunk_first + (e - fifo_count).
template <typename T>
struct Entry {
  const T* key;
  const T* value;
  int64_t position;
};
template <typename T>
__device__ __forceinline__ Entry<T> Resolve(const FifoAttentionParams<T>& p, const Window& w,
                                            int64_t e) {
  const int Z = p.z_dim, H = p.hidden_dim;
  if (e < w.fifo_count) {
    const int64_t physical = (w.head + e) % p.fifo.capacity;
    return {p.fifo.keys + w.slot * p.fifo.keys_slot_stride + physical * Z,
            p.fifo.values + w.slot * p.fifo.values_slot_stride + physical * H,
            p.fifo.positions[w.slot * p.fifo.positions_slot_stride + physical]};
  }
  const int64_t other = w.chunk_first + (e - w.fifo_count);
  return {p.keys + other * Z, p.values + other * H,
          p.rows.row_positions[p.rows.activated_rows[other]]};
}

// Raw score -> unnormalised weight for relu2 / laplace (softmax is handled by the callers).
__device__ __forceinline__ float PlainWeight(DeviceAttention kind, float score) {
  if (kind == DeviceAttention::kRelu2) {
    const float r = fmaxf(score, 0.0f);
    return r * r;
  }
  // 0.5 * (1 + erf((s - mu) / (std * sqrt 2))), mu = sqrt(1/2), std = sqrt(1 / (4 pi)).
  const float mu = 0.70710678118654752f;
  const float inv_std_sqrt2 = static_cast<float>(1.0 / (0.28209479177387814 * 1.4142135623730951));
  return 0.5f * (1.0f + erff((score - mu) * inv_std_sqrt2));
}

// out[H] = sum_j weights[j] * value_rows[j][:], columns strided over the block; 16-byte loads
// where rows are 16-byte aligned (every row starts at a multiple of H elements of allocations
// aligned to 256 bytes).
template <typename T>
__device__ void WeightedValueSum(const float* weights, const T* const* value_rows, int n, int H,
                                 float* out) {
  constexpr int kVec = 16 / sizeof(T);
  constexpr int kAhead = 8;  // value rows loaded before the multiply-adds that use them
  if ((H * sizeof(T)) % 16 == 0) {
    for (int v = threadIdx.x; v < H / kVec; v += blockDim.x) {
      float acc[kVec];
#pragma unroll
      for (int k = 0; k < kVec; ++k) acc[k] = 0.0f;
      for (int j0 = 0; j0 < n; j0 += kAhead) {
        uint4 raw[kAhead];
#pragma unroll
        for (int t = 0; t < kAhead; ++t)
          if (j0 + t < n) raw[t] = *reinterpret_cast<const uint4*>(value_rows[j0 + t] + v * kVec);
#pragma unroll
        for (int t = 0; t < kAhead; ++t) {
          if (j0 + t < n) {
            const float weight = weights[j0 + t];
            const T* element = reinterpret_cast<const T*>(&raw[t]);
#pragma unroll
            for (int k = 0; k < kVec; ++k) acc[k] += weight * ToFloat(element[k]);
          }
        }
      }
#pragma unroll
      for (int k = 0; k < kVec; ++k) out[v * kVec + k] = acc[k];
    }
  } else {
    for (int h = threadIdx.x; h < H; h += blockDim.x) {
      float acc = 0.0f;
      for (int j = 0; j < n; ++j) acc += weights[j] * ToFloat(value_rows[j][h]);
      out[h] = acc;
    }
  }
}

// q (fp32, shared) . key (T, global) over Z in one thread; 16-byte loads where key rows are
// 16-byte aligned (they start at multiples of Z elements of 256-byte aligned allocations).
template <typename T>
__device__ __forceinline__ float KeyDot(const float* q, const T* key, int Z) {
  constexpr int kVec = 16 / sizeof(T);
  float dot = 0.0f;
  if ((Z * sizeof(T)) % 16 == 0) {
#pragma unroll 4
    for (int z = 0; z < Z; z += kVec) {
      const uint4 raw = *reinterpret_cast<const uint4*>(key + z);
      const T* element = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int k = 0; k < kVec; ++k) dot += q[z + k] * ToFloat(element[k]);
    }
  } else {
    for (int z = 0; z < Z; ++z) dot += q[z] * ToFloat(key[z]);
  }
  return dot;
}

// ---- Split kernel (decode-shaped batches) ---------------------------------------------------

template <typename T>
__global__ void FifoAttentionSplitKernel(FifoAttentionParams<T> p) {
  extern __shared__ __align__(16) unsigned char shared[];
  const T** value_rows = reinterpret_cast<const T**>(shared);           // [split_len]
  float* weights = reinterpret_cast<float*>(value_rows + p.split_len);  // [split_len]
  float* q = weights + p.split_len;                                     // [Z]
  __shared__ float scratch[32];
  __shared__ float coefficient[kMaxSplits];
  __shared__ bool last_block;

  const int64_t a = blockIdx.x;
  if (a >= p.rows.chunk_active_begin[p.rows.chunks]) return;
  const Window w = FindWindow(p.rows, p.fifo, a);
  const int64_t size = w.own + 1 - w.lo;
  const int used = static_cast<int>((size + p.split_len - 1) / p.split_len);
  const int64_t begin = w.lo + static_cast<int64_t>(blockIdx.y) * p.split_len;
  const int64_t end = min(begin + p.split_len, w.own + 1);
  if (begin >= end) return;  // uniform over the block; not among the `used` pieces
  const int n = static_cast<int>(end - begin);
  const int Z = p.z_dim, H = p.hidden_dim;
  const int64_t q_position = p.rows.row_positions[p.rows.activated_rows[a]];

  for (int z = threadIdx.x; z < Z; z += blockDim.x) q[z] = p.queries[a * Z + z];
  __syncthreads();

  // Scores: a thread per entry, each a whole dot product (many keys in flight at once).
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const Entry<T> entry = Resolve(p, w, begin + j);
    float score = KeyDot(q, entry.key, Z) * p.score_scale;
    if (p.rel_pos_bias != nullptr)
      score += RelativeBias(p.rel_pos_bias, p.max_positions, q_position, entry.position);
    weights[j] = score;
    value_rows[j] = entry.value;
  }
  __syncthreads();

  float local_max = 0.0f, local_sum = 0.0f;
  if (p.kind == DeviceAttention::kSoftmax) {
    float m = -INFINITY;
    for (int j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, weights[j]);
    local_max = BlockMax(m, scratch);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
      const float e = expf(weights[j] - local_max);
      weights[j] = e;
      sum += e;
    }
    local_sum = BlockSum(sum, scratch);
  } else {
    for (int j = threadIdx.x; j < n; j += blockDim.x) weights[j] = PlainWeight(p.kind, weights[j]);
  }
  __syncthreads();

  const int64_t first = a * p.splits;
  const int64_t piece = first + blockIdx.y;
  float* partial = p.partial_h + piece * H;
  WeightedValueSum(weights, value_rows, n, H, partial);
  if (used == 1) {  // the whole window was this block's: finish here
    __syncthreads();
    const float scale = p.kind == DeviceAttention::kSoftmax ? 1.0f / local_sum : 1.0f;
    for (int k = threadIdx.x; k < H; k += blockDim.x)
      p.out[a * H + k] = FromFloat<T>(partial[k] * scale * p.gates[a * H + k]);
    return;
  }
  if (threadIdx.x == 0) {
    p.partial_max[piece] = local_max;
    p.partial_sum[piece] = local_sum;
  }
  // The last piece of this row to finish merges all of them (threadfence reduction).
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last_block = atomicAdd(&p.row_counters[a], 1) == used - 1;
  __syncthreads();
  if (!last_block) return;
  __threadfence();
  if (threadIdx.x == 0) p.row_counters[a] = 0;  // ready for the next call (and graph replay)
  // Merge coefficients, a thread per piece (a row has up to kMaxSplits pieces).
  if (p.kind == DeviceAttention::kSoftmax) {
    float m = -INFINITY, l = 0.0f;  // blockDim.x >= kMaxSplits (see the launcher)
    if (threadIdx.x < used) {
      m = __ldcg(p.partial_max + first + threadIdx.x);
      l = __ldcg(p.partial_sum + first + threadIdx.x);
    }
    const float top = BlockMax(threadIdx.x < used ? m : -INFINITY, scratch);
    const float weight = threadIdx.x < used ? expf(m - top) : 0.0f;
    const float total = BlockSum(weight * l, scratch);
    if (threadIdx.x < used) coefficient[threadIdx.x] = weight / total;
  } else if (threadIdx.x < used) {
    coefficient[threadIdx.x] = 1.0f;
  }
  __syncthreads();
  for (int k = threadIdx.x; k < H; k += blockDim.x) {
    float acc = 0.0f;
#pragma unroll 8
    for (int s = 0; s < used; ++s)
      acc += coefficient[s] * __ldcg(p.partial_h + (first + s) * H + k);
    p.out[a * H + k] = FromFloat<T>(acc * p.gates[a * H + k]);
  }
}

// ---- Tiled kernel (batches with a prefill chunk) ---------------------------------------------

constexpr int kTileKeys = 32;

// Dynamic shared memory of the tiled kernel, in bytes from its start.
struct TiledShared {
  __host__ __device__ static size_t Accumulators() { return 0; }  // [Q, H] float
  __host__ __device__ static size_t Queries(int H) {
    return sizeof(float) * kTileQueries * H;
  }  // [Q, Z] float
  __host__ __device__ static size_t Weights(int H, int Z) {
    return Queries(H) + sizeof(float) * kTileQueries * Z;
  }  // [K, Q]
  __host__ __device__ static size_t ValueRows(int H, int Z) {
    return Weights(H, Z) + sizeof(float) * kTileQueries * kTileKeys;
  }
  __host__ __device__ static size_t Bytes(int H, int Z) {
    return ValueRows(H, Z) + sizeof(void*) * kTileKeys;
  }
};

// acc[i, :] = acc[i, :] * rescale[i] + sum_j weights[j, i] * value_rows[j][:] for the tile's
// queries i; a thread owns kVec consecutive columns, so each value load and each pair of
// float4 weight loads feed kVec x kTileQueries multiply-adds.
template <typename T, int kVec>
__device__ void AccumulateColumns(float* acc, const float* weights, const T* const* value_rows,
                                  int keys, int H, const float* rescale) {
  for (int v = threadIdx.x; v < H / kVec; v += blockDim.x) {
    float r[kTileQueries][kVec];
#pragma unroll
    for (int i = 0; i < kTileQueries; ++i)
#pragma unroll
      for (int k = 0; k < kVec; ++k) r[i][k] = acc[i * H + v * kVec + k] * rescale[i];
    constexpr int kAhead = 4;  // value rows loaded before the multiply-adds that use them
    using Raw = std::conditional_t<kVec == 1, T, uint4>;
    for (int j0 = 0; j0 < keys; j0 += kAhead) {
      Raw raw[kAhead];
#pragma unroll
      for (int t = 0; t < kAhead; ++t) {
        if (j0 + t < keys) raw[t] = *reinterpret_cast<const Raw*>(value_rows[j0 + t] + v * kVec);
      }
#pragma unroll
      for (int t = 0; t < kAhead; ++t) {
        if (j0 + t >= keys) break;
        const int j = j0 + t;
        const T* element = reinterpret_cast<const T*>(&raw[t]);
        static_assert(kTileQueries == 4, "a key's weights are one float4");
        const float4 wa = *reinterpret_cast<const float4*>(weights + j * kTileQueries);
        const float wq[kTileQueries] = {wa.x, wa.y, wa.z, wa.w};
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const float x = ToFloat(element[k]);
#pragma unroll
          for (int i = 0; i < kTileQueries; ++i) r[i][k] += wq[i] * x;
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kTileQueries; ++i)
#pragma unroll
      for (int k = 0; k < kVec; ++k) acc[i * H + v * kVec + k] = r[i][k];
  }
}

template <typename T>
__device__ void AccumulateTile(float* acc, const float* weights, const T* const* value_rows,
                               int keys, int H, const float* rescale) {
  if ((H * sizeof(T)) % 16 == 0) {
    AccumulateColumns<T, 16 / sizeof(T)>(acc, weights, value_rows, keys, H, rescale);
  } else {
    AccumulateColumns<T, 1>(acc, weights, value_rows, keys, H, rescale);
  }
}

// Rows [a0, a0 + count) are consecutive activated rows of one chunk: their windows are
// [own_i - cap, own_i] with own_i = own_0 + i, so their union is [lo_0, own_0 + count). Keys and
// values stream through in tiles of kTileKeys entries. Warp i serves query i and lane j key j
// of a tile (a whole dot product per thread), keeping query i's running max and sum; then the
// block accumulates weights x values for every query at once, a value row read once per tile.
template <typename T>
__device__ void AttendTile(const FifoAttentionParams<T>& p, int64_t a0, int count, int first_query,
                           unsigned char* shared) {
  const int Z = p.z_dim, H = p.hidden_dim;
  float* acc = reinterpret_cast<float*>(shared + TiledShared::Accumulators());
  float* qs = reinterpret_cast<float*>(shared + TiledShared::Queries(H));
  float* weights = reinterpret_cast<float*>(shared + TiledShared::Weights(H, Z));
  const T** value_rows = reinterpret_cast<const T**>(shared + TiledShared::ValueRows(H, Z));
  __shared__ float rescale[kTileQueries], final_sum[kTileQueries];

  const Window w = FindWindow(p.rows, p.fifo, a0);
  // This block's piece (blockIdx.y of tile_splits) of the union [lo_0, own_0 + count).
  const int64_t union_size = w.own + count - w.lo;
  const int64_t piece =
      ((union_size + p.tile_splits - 1) / p.tile_splits + kTileKeys - 1) / kTileKeys * kTileKeys;
  const int64_t union_end = w.own + count;
  const int64_t union_begin = min(union_end, w.lo + static_cast<int64_t>(blockIdx.y) * piece);
  const int64_t piece_end = min(union_end, union_begin + piece);
  for (int i = threadIdx.x; i < kTileQueries * H; i += blockDim.x) acc[i] = 0.0f;
  for (int i = threadIdx.x; i < kTileQueries * Z; i += blockDim.x) {
    const int query = i / Z;
    qs[i] = query < count ? p.queries[(a0 + query) * Z + i % Z] : 0.0f;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bool has_query = warp < count;  // (count <= kTileQueries)
  const int64_t own = w.own + warp;     // this warp's query's own entry
  const int64_t q_position = has_query ? p.rows.row_positions[p.rows.activated_rows[a0 + warp]] : 0;
  float running_max = -INFINITY, running_sum = 0.0f;
  __syncthreads();

  for (int64_t tile = union_begin; tile < piece_end; tile += kTileKeys) {
    const int keys_here = static_cast<int>(min(static_cast<int64_t>(kTileKeys), piece_end - tile));
    if (warp < kTileQueries) {  // warps past the queries only help accumulate
      float score = -INFINITY;
      if (lane < keys_here) {
        const int64_t e = tile + lane;
        const Entry<T> entry = Resolve(p, w, e);
        if (warp == 0) value_rows[lane] = entry.value;
        if (has_query && e <= own && e >= own - p.fifo.capacity) {
          score = KeyDot(qs + warp * Z, entry.key, Z) * p.score_scale;
          if (p.rel_pos_bias != nullptr)
            score += RelativeBias(p.rel_pos_bias, p.max_positions, q_position, entry.position);
        }
      }
      const bool visible = score != -INFINITY;
      float weight;
      if (p.kind == DeviceAttention::kSoftmax) {
        const float new_max = fmaxf(running_max, WarpMax(score));
        weight = visible ? expf(score - new_max) : 0.0f;
        const float factor = running_max == -INFINITY ? 0.0f : expf(running_max - new_max);
        running_sum = running_sum * factor + WarpSum(weight);
        running_max = new_max;
        if (lane == 0) rescale[warp] = factor;
      } else {
        weight = visible ? PlainWeight(p.kind, score) : 0.0f;
        if (lane == 0) rescale[warp] = 1.0f;
      }
      weights[lane * kTileQueries + warp] = weight;  // [key, query]
    }
    __syncthreads();
    AccumulateTile(acc, weights, value_rows, keys_here, H, rescale);
    __syncthreads();
  }
  if (lane == 0 && warp < kTileQueries) final_sum[warp] = running_sum;
  __syncthreads();
  if (p.tile_splits == 1) {
    for (int k = threadIdx.x; k < count * H; k += blockDim.x) {
      const int i = k / H, h = k % H;
      const float scale = p.kind == DeviceAttention::kSoftmax ? 1.0f / final_sum[i] : 1.0f;
      p.out[(a0 + i) * H + h] = FromFloat<T>(acc[i * H + h] * scale * p.gates[(a0 + i) * H + h]);
    }
  } else {  // this piece's share, merged by the tile's last piece (an empty piece writes zeros)
    const int64_t base =
        (static_cast<int64_t>(blockIdx.x) * p.tile_splits + blockIdx.y) * kTileQueries +
        first_query;
    for (int k = threadIdx.x; k < count * H; k += blockDim.x) p.partial_h[base * H + k] = acc[k];
    if (lane == 0 && has_query) {
      p.partial_max[base + warp] = running_max;
      p.partial_sum[base + warp] = running_sum;
    }
  }
  __syncthreads();  // a next run of this block reuses the shared arrays
}

template <typename T>
__global__ void FifoAttentionTiledKernel(FifoAttentionParams<T> p) {
  extern __shared__ __align__(16) unsigned char shared[];
  const int64_t total = p.rows.chunk_active_begin[p.rows.chunks];
  const int64_t a0 = static_cast<int64_t>(blockIdx.x) * kTileQueries;
  if (a0 >= total) return;
  const int64_t a_end = min(a0 + kTileQueries, total);
  // Split the block's rows into runs of one chunk (a decode row beside a prefill chunk is a
  // run of one); every thread computes the same runs.
  for (int64_t first = a0; first < a_end;) {
    const int32_t chunk = p.rows.row_chunk[p.rows.activated_rows[first]];
    int64_t last = first + 1;
    while (last < a_end && p.rows.row_chunk[p.rows.activated_rows[last]] == chunk) ++last;
    AttendTile(p, first, static_cast<int>(last - first), static_cast<int>(first - a0), shared);
    first = last;
  }
  if (p.tile_splits == 1) return;
  // The tile's last piece to finish merges the pieces of every row (threadfence reduction).
  __shared__ bool last_block;
  __shared__ float coefficient[kTileQueries][kMaxTileSplits];
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last_block = atomicAdd(&p.row_counters[blockIdx.x], 1) == p.tile_splits - 1;
  __syncthreads();
  if (!last_block) return;
  __threadfence();
  const int rows_here = static_cast<int>(a_end - a0), S = p.tile_splits, H = p.hidden_dim;
  const int64_t first_piece = static_cast<int64_t>(blockIdx.x) * S * kTileQueries;
  if (threadIdx.x == 0) p.row_counters[blockIdx.x] = 0;  // ready for the next call
  if (threadIdx.x < rows_here) {
    const int i = threadIdx.x;
    if (p.kind == DeviceAttention::kSoftmax) {
      float top = -INFINITY;
      for (int s = 0; s < S; ++s)
        top = fmaxf(top, __ldcg(p.partial_max + first_piece + s * kTileQueries + i));
      float total = 0.0f;
      for (int s = 0; s < S; ++s) {
        const float m = __ldcg(p.partial_max + first_piece + s * kTileQueries + i);
        coefficient[i][s] = m == -INFINITY ? 0.0f : expf(m - top);
        total += coefficient[i][s] * __ldcg(p.partial_sum + first_piece + s * kTileQueries + i);
      }
      for (int s = 0; s < S; ++s) coefficient[i][s] /= total;
    } else {
      for (int s = 0; s < S; ++s) coefficient[i][s] = 1.0f;
    }
  }
  __syncthreads();
  for (int k = threadIdx.x; k < rows_here * H; k += blockDim.x) {
    const int i = k / H, h = k % H;
    float acc = 0.0f;
    for (int s = 0; s < S; ++s)
      acc += coefficient[i][s] * __ldcg(p.partial_h + (first_piece + s * kTileQueries + i) * H + h);
    p.out[(a0 + i) * H + h] = FromFloat<T>(acc * p.gates[(a0 + i) * H + h]);
  }
}

template <typename T>
__global__ void FifoPushKernel(FifoPushParams<T> p) {
  const int64_t a = blockIdx.x;
  if (a >= p.rows.chunk_active_begin[p.rows.chunks]) return;
  const int32_t row = p.rows.activated_rows[a];
  const int32_t c = p.rows.row_chunk[row];
  const int64_t slot = p.rows.chunk_slot[c];
  const FifoMeta meta = p.fifo.meta[slot * p.fifo.meta_slot_stride];
  const int64_t first = p.rows.chunk_active_begin[c];
  const int64_t pushed = p.rows.chunk_active_begin[c + 1] - first;
  const int64_t cap = p.fifo.capacity;
  const int64_t e = meta.count + (a - first);  // logical index after the current entries
  if (e < meta.count + pushed - cap) return;   // evicted again within this chunk
  const int64_t physical = (meta.head + e) % cap;
  const int Z = p.z_dim, H = p.hidden_dim;
  T* key = p.fifo.keys + slot * p.fifo.keys_slot_stride + physical * Z;
  T* value = p.fifo.values + slot * p.fifo.values_slot_stride + physical * H;
  for (int z = threadIdx.x; z < Z; z += blockDim.x) key[z] = p.keys[a * Z + z];
  for (int h = threadIdx.x; h < H; h += blockDim.x) value[h] = p.values[a * H + h];
  if (threadIdx.x == 0)
    p.fifo.positions[slot * p.fifo.positions_slot_stride + physical] = p.rows.row_positions[row];
}

__global__ void FifoCommitKernel(FifoCommitParams p) {
  const int index = blockIdx.x * blockDim.x + threadIdx.x;
  if (index >= p.chunks * p.layers) return;
  const int l = index / p.chunks, c = index % p.chunks;
  const int32_t* begin = p.chunk_active_begin + static_cast<int64_t>(l) * (p.chunks + 1);
  const int64_t pushed = begin[c + 1] - begin[c];
  FifoMeta& meta = p.meta[static_cast<int64_t>(p.chunk_slot[c]) * p.layers + l];
  const int64_t total = static_cast<int64_t>(meta.count) + pushed;
  if (total <= p.capacity) {
    meta.count = static_cast<int32_t>(total);
  } else {
    meta.head = static_cast<int32_t>((meta.head + (total - p.capacity)) % p.capacity);
    meta.count = p.capacity;
  }
  meta.activated += pushed;
}

}  // namespace

void ChooseAttentionSplits(int64_t max_rows, int capacity, int multiprocessors, int* splits,
                           int* split_len) {
  const int64_t window = static_cast<int64_t>(capacity) + 1;
  const int64_t fewest = (window + kMaxSplitLen - 1) / kMaxSplitLen;
  const int64_t most = std::min<int64_t>(kMaxSplits, (window + kMinSplitLen - 1) / kMinSplitLen);
  // Enough pieces in flight to hide the latency of streaming keys and values.
  const int64_t target_blocks = 8 * static_cast<int64_t>(std::max(1, multiprocessors));
  int64_t chosen =
      (target_blocks + std::max<int64_t>(1, max_rows) - 1) / std::max<int64_t>(1, max_rows);
  chosen = std::max(fewest, std::min(chosen, most));
  *splits = static_cast<int>(chosen);
  *split_len = static_cast<int>((window + chosen - 1) / chosen);
}

int ChooseTileSplits(int64_t max_rows, int multiprocessors) {
  const int64_t tiles = std::max<int64_t>(1, (max_rows + kTileQueries - 1) / kTileQueries);
  const int64_t wanted =
      (4 * static_cast<int64_t>(std::max(1, multiprocessors)) + tiles - 1) / tiles;
  return static_cast<int>(std::clamp<int64_t>(wanted, 1, kMaxTileSplits));
}

size_t AttentionSharedBytes(int split_len, int z_dim, int hidden_dim) {
  const size_t split =
      static_cast<size_t>(split_len) * (sizeof(void*) + sizeof(float)) + z_dim * sizeof(float);
  return std::max(split, TiledShared::Bytes(hidden_dim, z_dim));
}

template <typename T>
void LaunchFifoAttention(const FifoAttentionParams<T>& p, cudaStream_t stream) {
  if (p.rows.max_rows == 0) return;
  if (p.longest_chunk >= kTiledAttentionMinChunk) {
    const size_t bytes = TiledShared::Bytes(p.hidden_dim, p.z_dim);
    if (bytes > 48 * 1024) {
      (void)cudaFuncSetAttribute(FifoAttentionTiledKernel<T>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(bytes));
    }
    const dim3 grid(static_cast<unsigned>((p.rows.max_rows + kTileQueries - 1) / kTileQueries),
                    p.tile_splits);
    // A warp per query for the scores; for the accumulation a thread per 16-byte column group
    // of a value row where that fits.
    const int columns = (p.hidden_dim * static_cast<int>(sizeof(T)) + 15) / 16;
    const int threads = std::clamp((columns + 31) / 32 * 32, 32 * kTileQueries, 256);
    FifoAttentionTiledKernel<T><<<grid, threads, bytes, stream>>>(p);
    return;
  }
  const size_t bytes =
      static_cast<size_t>(p.split_len) * (sizeof(void*) + sizeof(float)) + p.z_dim * sizeof(float);
  const dim3 grid(static_cast<unsigned>(p.rows.max_rows), p.splits);
  // One thread per 16-byte column group of a value row where that fits in a block.
  const int columns = (p.hidden_dim * static_cast<int>(sizeof(T)) + 15) / 16;
  const int threads = std::clamp((columns + 31) / 32 * 32, kMaxSplits, 256);
  FifoAttentionSplitKernel<T><<<grid, threads, bytes, stream>>>(p);
}

template <typename T>
void LaunchFifoPush(const FifoPushParams<T>& p, cudaStream_t stream) {
  if (p.rows.max_rows == 0) return;
  FifoPushKernel<T><<<static_cast<unsigned>(p.rows.max_rows), kPushThreads, 0, stream>>>(p);
}

void LaunchFifoCommit(const FifoCommitParams& p, cudaStream_t stream) {
  const int total = p.chunks * p.layers;
  if (total == 0) return;
  FifoCommitKernel<<<(total + 255) / 256, 256, 0, stream>>>(p);
}

#define SEQBOAT_INSTANTIATE(T)                                                       \
  template void LaunchFifoAttention<T>(const FifoAttentionParams<T>&, cudaStream_t); \
  template void LaunchFifoPush<T>(const FifoPushParams<T>&, cudaStream_t);
SEQBOAT_INSTANTIATE(float)
SEQBOAT_INSTANTIATE(__half)
SEQBOAT_INSTANTIATE(__nv_bfloat16)
#undef SEQBOAT_INSTANTIATE

}  // namespace seqboat::cuda
