// bf16 and int8 weight products of many rows (prefill, large decode batches) in bf16 arithmetic:
// Intel AMX tiles, or AVX512_BF16 dot instructions on CPUs that have those but no AMX (AMD Zen 4
// and 5, Intel Cooper Lake, or a kernel that refuses the tile state).
//
// y[rows, out] = bf16(x)[rows, in] . w[out, in]^T (+ bias), w in bf16 (or int8, rounded to
// bf16 when packed: 2^-9 of each weight, far inside int8's own step), x and y fp32: x is
// rounded to bf16 (nearest even) as OpenBLAS's sbgemm and oneDNN take it, the products are exact
// and summed in fp32. Rounding x costs up to 2^-9 of each product, as the weights' own rounding
// does; the demo model's held-out bits per byte moved by 0.00004 (bench/RESULTS.md). Keeping x
// exact as three bf16 terms was measured too: three times the tile loads, which bound the AMX
// kernel, and no faster than fp32 sgemm on the development machine. The pool's threads split
// the outputs and each packs its weights into the pair-interleaved layout both instruction sets
// take (for 16 outputs, inputs 2k and 2k+1 of each side by side in 64 bytes) once per call, in
// groups that stay in L2 while every row goes past them.
#pragma once

#include <cstdint>

#include "runtime/util/thread_pool.h"

namespace seqboat::cpu {

// kNone: neither. kAvx512Bf16: VDPBF16PS on 6 rows x 64 outputs of sums in registers. kAmx:
// tiles of 32 rows x 32 outputs.
enum class Bf16Isa { kNone, kAvx512Bf16, kAmx };

// Whether this CPU runs `isa` (AMX also needs the kernel's leave to use tile registers: Linux
// grants them per process through arch_prctl, asked once).
bool Bf16IsaUsable(Bf16Isa isa);
// The fastest usable: AMX, else AVX512_BF16, else kNone.
Bf16Isa BestBf16Isa();

// The weights: bf16 [out, in], or int8 [out, in] with an fp32 scale per kPackInt8Group weights
// of a row ([out, groups]), each q * scale rounded to bf16 as it is packed.
constexpr int64_t kPackInt8Group = 32;
struct Bf16Source {
  const uint16_t* bf16 = nullptr;
  const int8_t* q = nullptr;
  const float* scales = nullptr;
};

// The product above by `isa`, which must be usable (and not kNone). Outputs split over `pool`
// (may be null).
void Bf16Linear(Bf16Isa isa, const float* x, int64_t rows, int64_t in, const Bf16Source& w,
                const float* bias, int64_t out, float* y, ThreadPool* pool);

}  // namespace seqboat::cpu
