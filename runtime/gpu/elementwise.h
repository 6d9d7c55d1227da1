// Row-wise kernels of the GPU forward pass that are not matrix products: RMSNorm, SwiGLU, the
// MoE combine with the residual add, and a plain residual add. Each is one launch on a stream,
// has a CPU twin in runtime/model (named per function) and allocates nothing.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tritmoe::gpu {

// y[r][i] = x[row(r)][i] * s_r * gain[i], s_r = 1 / sqrt(mean_i x^2 + eps), the sum of squares in
// double (twin: runtime/model/rms_norm.h). row(r) = in_rows[r] when in_rows is set, else r.
// y may equal x when in_rows is null. Shapes: x [..][x_stride], y [n_rows][y_stride], gain [n].
struct RmsNormParams {
  const float* x = nullptr;
  int64_t x_stride = 0;
  const int32_t* in_rows = nullptr;  // device [n_rows] or nullptr
  float* y = nullptr;
  int64_t y_stride = 0;
  int n_rows = 0;
  int n = 0;
  const float* gain = nullptr;  // device [n]
  float eps = 0.0f;
  // Fusions that save a launch each in decode steps (results bit-identical to the unfused
  // kernels). residual: x[r][i] = x[r][i] + residual[r][i] first, written back into x (x must be
  // writable; in_rows must be null; twin: LaunchAdd). act: y is also quantized into activation
  // records for the next int8 GEMV (the layout of experts/cuda/quant_gemv_launch.h, n % 256 == 0,
  // ActWorkspaceBytes(n_rows, n) bytes), as QuantizeActivationsGpu over y would; x, y, gain and
  // act 16-byte aligned, strides multiples of 4.
  const float* residual = nullptr;  // device [n_rows][x_stride] or nullptr
  uint8_t* act = nullptr;           // device records or nullptr
};
cudaError_t LaunchRmsNorm(const RmsNormParams& p, cudaStream_t stream);

// out[r][i] = silu(gu[r][i]) * gu[r][n_ff + i] with silu(g) = g / (1 + exp(-g)) (twin:
// runtime/model/ffn.cc). gu: [n_rows][2 * n_ff] (gate columns, then up columns); out
// [n_rows][n_ff].
struct SwiGluParams {
  const float* gu = nullptr;
  float* out = nullptr;
  int n_rows = 0;
  int n_ff = 0;
};
cudaError_t LaunchSwiGlu(const SwiGluParams& p, cudaStream_t stream);

// x[t][c] += (sum_{j<k} w[t][j] * y[pair[t * k + j]][c]) + shared[t][c], the slots summed in order
// from 0.0f (twin: LocalExpertExchange::Combine, then MoeForward's shared add, then the residual).
// y: the experts' outputs [pairs][n]; shared: [n_tokens][n] or nullptr.
struct CombineParams {
  float* x = nullptr;  // [n_tokens][n]
  const float* y = nullptr;
  const int32_t* pair = nullptr;  // [n_tokens * k]: row of y of slot (t, j)
  const float* w = nullptr;       // [n_tokens * k]
  const float* shared = nullptr;
  int n_tokens = 0;
  int k = 0;
  int n = 0;
};
cudaError_t LaunchCombine(const CombineParams& p, cudaStream_t stream);

// x[i] += y[i] for i < n.
cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream);

}  // namespace tritmoe::gpu
