// The GAU's element-wise parts: rotary tables, the input side (SiLU of the projection, q/k
// affine, rotary) of the activated rows, written compacted, and the FFN's bias + SiLU.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace seqboat::cuda {

struct RotaryTableParams {
  const int64_t* positions = nullptr;  // [rows]
  float* cos_table = nullptr;          // [rows, Z/2]
  float* sin_table = nullptr;          // [rows, Z/2]
  int64_t rows = 0;
  int z_dim = 0;
};
// cos/sin of t*theta_i, theta_i = 10000^(-2i/Z), with the angle formed and reduced mod 2*pi in
// double (positions can be large), exactly as cpu::RotaryTable.
void LaunchRotaryTable(const RotaryTableParams& p, cudaStream_t stream);

template <typename T>
struct GauInputParams {
  const float* projected =
      nullptr;                  // [rows, Z + 2H] raw mx_proj product by batch row, split [z, r, v]
  const float* bias = nullptr;  // [Z + 2H]
  const float* qk_gamma = nullptr;    // [2, Z] row 0 -> q, row 1 -> k
  const float* qk_beta = nullptr;     // [2, Z]
  const float* rotary_cos = nullptr;  // [rows, Z/2] by batch row; null = no rotary
  const float* rotary_sin = nullptr;
  const int32_t* activated_rows = nullptr;  // [max_rows]
  const int32_t* count = nullptr;           // device scalar R
  float* queries = nullptr;                 // [max_rows, Z] rotated q
  T* keys = nullptr;                        // [max_rows, Z] rotated k (FIFO dtype)
  T* values = nullptr;                      // [max_rows, H] v (FIFO dtype)
  float* gates = nullptr;                   // [max_rows, H] r
  int64_t max_rows = 0;
  int z_dim = 0;
  int hidden_dim = 0;
};
template <typename T>
void LaunchGauInput(const GauInputParams<T>& p, cudaStream_t stream);

template <typename T>
struct BiasSiluParams {
  const float* in = nullptr;    // [rows, width]
  const float* bias = nullptr;  // [width]
  T* out = nullptr;             // [rows, width] SiLU(in + bias)
  int64_t rows = 0;
  int width = 0;
};
template <typename T>
void LaunchBiasSilu(const BiasSiluParams<T>& p, cudaStream_t stream);

}  // namespace seqboat::cuda
