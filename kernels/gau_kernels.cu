// GAU element-wise kernels (see gau_kernels.h).
#include "kernels/device_math.cuh"
#include "kernels/gau_kernels.h"

namespace seqboat::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void RotaryTableKernel(RotaryTableParams p) {
  const int half = p.z_dim / 2;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= p.rows * half) return;
  const int64_t r = index / half;
  const int i = static_cast<int>(index % half);
  const double theta = pow(10000.0, -2.0 * i / p.z_dim);
  const double angle =
      fmod(static_cast<double>(p.positions[r]) * theta, 2.0 * 3.14159265358979323846);
  p.cos_table[index] = static_cast<float>(cos(angle));
  p.sin_table[index] = static_cast<float>(sin(angle));
}

template <typename T>
__global__ void GauInputKernel(GauInputParams<T> p) {
  const int64_t a = blockIdx.x;
  if (a >= *p.count) return;
  const int Z = p.z_dim, H = p.hidden_dim;
  const int64_t width = Z + 2 * static_cast<int64_t>(H);
  const int64_t row = p.activated_rows[a];
  const float* in = p.projected + row * width;
  // z -> q, k in pairs, so the rotary (an interleaved complex product) stays in registers.
  for (int i = threadIdx.x; i < Z / 2; i += blockDim.x) {
    const int j0 = 2 * i, j1 = 2 * i + 1;
    const float z0 = Silu(in[j0] + p.bias[j0]), z1 = Silu(in[j1] + p.bias[j1]);
    float q0 = z0 * p.qk_gamma[j0] + p.qk_beta[j0], q1 = z1 * p.qk_gamma[j1] + p.qk_beta[j1];
    float k0 = z0 * p.qk_gamma[Z + j0] + p.qk_beta[Z + j0];
    float k1 = z1 * p.qk_gamma[Z + j1] + p.qk_beta[Z + j1];
    if (p.rotary_cos != nullptr) {
      const float c = p.rotary_cos[row * (Z / 2) + i], s = p.rotary_sin[row * (Z / 2) + i];
      const float rq0 = q0 * c - q1 * s, rq1 = q0 * s + q1 * c;
      const float rk0 = k0 * c - k1 * s, rk1 = k0 * s + k1 * c;
      q0 = rq0, q1 = rq1, k0 = rk0, k1 = rk1;
    }
    p.queries[a * Z + j0] = q0;
    p.queries[a * Z + j1] = q1;
    p.keys[a * Z + j0] = FromFloat<T>(k0);
    p.keys[a * Z + j1] = FromFloat<T>(k1);
  }
  if ((Z & 1) != 0 && threadIdx.x == 0) {  // odd Z (no rotary): the last element
    const int j = Z - 1;
    const float z = Silu(in[j] + p.bias[j]);
    p.queries[a * Z + j] = z * p.qk_gamma[j] + p.qk_beta[j];
    p.keys[a * Z + j] = FromFloat<T>(z * p.qk_gamma[Z + j] + p.qk_beta[Z + j]);
  }
  for (int h = threadIdx.x; h < H; h += blockDim.x) {
    p.gates[a * H + h] = Silu(in[Z + h] + p.bias[Z + h]);
    p.values[a * H + h] = FromFloat<T>(Silu(in[Z + H + h] + p.bias[Z + H + h]));
  }
}

template <typename T>
__global__ void BiasSiluKernel(BiasSiluParams<T> p) {
  const int64_t r = blockIdx.x;
  const float* in = p.in + r * p.width;
  T* out = p.out + r * p.width;
  for (int j = threadIdx.x; j < p.width; j += blockDim.x)
    out[j] = FromFloat<T>(Silu(in[j] + p.bias[j]));
}

}  // namespace

void LaunchRotaryTable(const RotaryTableParams& p, cudaStream_t stream) {
  const int64_t total = p.rows * (p.z_dim / 2);
  if (total == 0) return;
  RotaryTableKernel<<<static_cast<unsigned>((total + kThreads - 1) / kThreads), kThreads, 0,
                      stream>>>(p);
}

template <typename T>
void LaunchGauInput(const GauInputParams<T>& p, cudaStream_t stream) {
  if (p.max_rows == 0) return;
  GauInputKernel<T><<<static_cast<unsigned>(p.max_rows), kThreads, 0, stream>>>(p);
}

template <typename T>
void LaunchBiasSilu(const BiasSiluParams<T>& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  BiasSiluKernel<T><<<static_cast<unsigned>(p.rows), kThreads, 0, stream>>>(p);
}

#define SEQBOAT_INSTANTIATE(T)                                             \
  template void LaunchGauInput<T>(const GauInputParams<T>&, cudaStream_t); \
  template void LaunchBiasSilu<T>(const BiasSiluParams<T>&, cudaStream_t);
SEQBOAT_INSTANTIATE(float)
SEQBOAT_INSTANTIATE(__half)
SEQBOAT_INSTANTIATE(__nv_bfloat16)
#undef SEQBOAT_INSTANTIATE

}  // namespace seqboat::cuda
