// The vocabulary-wide loops of token sampling, vectorised: the row maximum, exp of shifted
// logits, and a draw from unnormalised probabilities through block sums. At a vocabulary of
// 50k-270k ids (word-level models) these loops are what sampling costs; each is one pass over
// the row in 8-float vectors instead of a chain of dependent scalar operations.
//
// Every result depends on the inputs only (fixed evaluation order, no libm, no threads), so a
// seeded request draws the same tokens on every machine and in any batch.
#pragma once

#include <cstdint>
#include <vector>

namespace seqboat {

// The largest value of x[0, n) other than x[skip] (skip < 0: none); -infinity when there is
// none. NaNs are ignored.
float RowMax(const float* x, int64_t n, int64_t skip);

// The lowest index i != skip with x[i] == value, or -1.
int64_t FirstIndexOf(const float* x, int64_t n, float value, int64_t skip);

// out[i] = exp((x[i] - shift) / temperature) for x[i] <= shift (shift = the row maximum), with
// our own exp (relative error below 3e-7 of the true value); 0 where that is below 2^-126
// (exp < 1.2e-38) and for -infinity or NaN. x and out may be the same array.
void ExpShifted(const float* x, int64_t n, float shift, float temperature, float* out);

// Sums of p[0, n) (p >= 0) in blocks of kDrawBlock ids, in double; returns their total, summed
// block by block in order. `block_sums` is resized to the number of blocks.
constexpr int64_t kDrawBlock = 512;
double BlockSums(const float* p, int64_t n, std::vector<double>* block_sums);

// The sum of the p[i] >= threshold (p >= 0), in double.
double MassAtLeast(const float* p, int64_t n, float threshold);

// The m most likely ids of score[0, n) (m <= n), in order: the higher score first, the lower
// id on ties (a strict total order, so the list is the same however it is found). A heap pass
// for small m, else a selection and a sort.
void MostLikelyIds(const float* score, int64_t n, int64_t m, std::vector<int32_t>* ids);

// The id where the running sum of p first exceeds `target` (0 <= target < total): the block is
// found through the block sums, the id by a scan inside it. Never an id with p == 0. Rounding
// at a block's (or the row's) end falls back to its last id with p > 0.
int64_t DrawFromBlocks(const float* p, int64_t n, const std::vector<double>& block_sums,
                       double target);

}  // namespace seqboat
