// bf16 and int8 weight products of many rows (prefill, large decode batches) on Intel AMX tiles.
//
// y[rows, out] = bf16(x)[rows, in] . w[out, in]^T (+ bias), w in bf16 (or int8, rounded to
// bf16 when packed: 2^-9 of each weight, far inside int8's own step), x and y fp32: x is
// rounded to bf16 (nearest even) as OpenBLAS's sbgemm and oneDNN take it, the tiles multiply
// exactly and sum in fp32. Rounding x costs up to 2^-9 of each product, as the weights' own
// rounding does; the demo model's held-out bits per byte moved by 0.00004 (bench/RESULTS.md).
// Keeping x exact as three bf16 terms was measured too: three times the tile loads, which
// bound these kernels, and no faster than fp32 sgemm on the development machine. Tiles of 32
// rows x 32 outputs; the pool's threads split the outputs and each packs its weights into the
// tiles' pair-interleaved layout once per call, in groups that stay in L2 while every row goes
// past them.
#pragma once

#include <cstdint>

#include "runtime/util/thread_pool.h"

namespace seqboat::cpu {

// Whether this CPU has AMX-BF16 and the kernel lets the process use tile registers (asked
// once; Linux grants them per process through arch_prctl).
bool AmxBf16Usable();

// The weights: bf16 [out, in], or int8 [out, in] with an fp32 scale per kAmxInt8Group weights
// of a row ([out, groups]), each q * scale rounded to bf16 as it is packed.
constexpr int64_t kAmxInt8Group = 32;
struct AmxWeights {
  const uint16_t* bf16 = nullptr;
  const int8_t* q = nullptr;
  const float* scales = nullptr;
};

// The product above; requires AmxBf16Usable(). Outputs split over `pool` (may be null).
void AmxLinear(const float* x, int64_t rows, int64_t in, const AmxWeights& w, const float* bias,
               int64_t out, float* y, ThreadPool* pool);

}  // namespace seqboat::cpu
