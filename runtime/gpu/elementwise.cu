// Row-wise kernels (elementwise.h). Float operations are spelled with explicit rounding
// (__fmul_rn, __fadd_rn) where the CPU twin computes them one at a time, so that no FMA
// contraction separates the two beyond the documented reduction-order differences.
#include <cuda_runtime.h>

#include <cstdint>

#include "experts/cuda/act_quant.cuh"
#include "runtime/gpu/elementwise.h"

namespace tritmoe::gpu {
namespace {

constexpr int kNormThreads = 512;

// The loops are unrolled so that each thread has several loads in flight: one row per CTA is
// latency-bound otherwise (a dependent global load per iteration).
__global__ void __launch_bounds__(kNormThreads) RmsNormKernel(const RmsNormParams p) {
  const int r = blockIdx.x;
  const int64_t src = p.in_rows != nullptr ? p.in_rows[r] : r;
  const float* x = p.x + src * p.x_stride;
  float* y = p.y + static_cast<int64_t>(r) * p.y_stride;
  double sum = 0.0;
  if (p.residual != nullptr) {
    float* xw = const_cast<float*>(x);  // writable by contract (see elementwise.h)
    const float* res = p.residual + src * p.x_stride;
#pragma unroll 8
    for (int i = threadIdx.x; i < p.n; i += kNormThreads) {
      const float v = __fadd_rn(xw[i], res[i]);
      xw[i] = v;
      sum += static_cast<double>(v) * v;
    }
  } else {
#pragma unroll 8
    for (int i = threadIdx.x; i < p.n; i += kNormThreads) {
      const double v = x[i];
      sum += v * v;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, o);
  __shared__ double part[kNormThreads / 32];
  __shared__ float scale_s;
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = sum;
  __syncthreads();  // also orders the residual writes before the reads below
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int w = 0; w < kNormThreads / 32; ++w) total += part[w];
    const float mean = static_cast<float>(total / static_cast<double>(p.n));
    scale_s = 1.0f / sqrtf(__fadd_rn(mean, p.eps));
  }
  __syncthreads();
  const float scale = scale_s;
  if (p.act != nullptr) {
    // A warp per 256-column block, lane L on columns 8L..8L+7 (the record's fragment order).
    const int lane = threadIdx.x & 31, nkb = p.n / 256;
    for (int kb = threadIdx.x >> 5; kb < nkb; kb += kNormThreads / 32) {
      const int c0 = kb * 256 + lane * 8;  // 16-byte aligned (checked at launch)
      float xv[8], gv[8], v[8];
      *reinterpret_cast<float4*>(xv) = *reinterpret_cast<const float4*>(x + c0);
      *reinterpret_cast<float4*>(xv + 4) = *reinterpret_cast<const float4*>(x + c0 + 4);
      *reinterpret_cast<float4*>(gv) = *reinterpret_cast<const float4*>(p.gain + c0);
      *reinterpret_cast<float4*>(gv + 4) = *reinterpret_cast<const float4*>(p.gain + c0 + 4);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = __fmul_rn(__fmul_rn(xv[j], scale), gv[j]);
      *reinterpret_cast<float4*>(y + c0) = *reinterpret_cast<const float4*>(v);
      *reinterpret_cast<float4*>(y + c0 + 4) = *reinterpret_cast<const float4*>(v + 4);
      gpu_internal::QuantizeBlockWarp(
          v, lane, p.act + (static_cast<int64_t>(r) * nkb + kb) * gpu_internal::kActRecordBytes);
    }
    return;
  }
#pragma unroll 8
  for (int i = threadIdx.x; i < p.n; i += kNormThreads) {
    y[i] = __fmul_rn(__fmul_rn(x[i], scale), p.gain[i]);
  }
}

__global__ void SwiGluKernel(const SwiGluParams p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t total = static_cast<int64_t>(p.n_rows) * p.n_ff;
  if (i >= total) return;
  const int64_t r = i / p.n_ff, c = i % p.n_ff;
  const float g = p.gu[r * 2 * p.n_ff + c];
  const float u = p.gu[r * 2 * p.n_ff + p.n_ff + c];
  p.out[i] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u);
}

__global__ void CombineKernel(const CombineParams p) {
  const int t = blockIdx.y;
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= p.n) return;
  float acc = 0.0f;
  for (int j = 0; j < p.k; ++j) {
    const int64_t slot = static_cast<int64_t>(t) * p.k + j;
    const int64_t row = p.pair[slot];
    acc = __fadd_rn(acc, __fmul_rn(p.w[slot], p.y[row * p.n + c]));
  }
  const int64_t i = static_cast<int64_t>(t) * p.n + c;
  if (p.shared != nullptr) acc = __fadd_rn(acc, p.shared[i]);
  p.x[i] = __fadd_rn(p.x[i], acc);
}

__global__ void AddKernel(float* x, const float* y, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = __fadd_rn(x[i], y[i]);
}

unsigned Blocks(int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

}  // namespace

cudaError_t LaunchRmsNorm(const RmsNormParams& p, cudaStream_t stream) {
  if (p.n_rows <= 0) return cudaSuccess;
  if (p.n <= 0 || p.x == nullptr || p.y == nullptr || p.gain == nullptr ||
      (p.residual != nullptr && p.in_rows != nullptr)) {
    return cudaErrorInvalidValue;
  }
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  if (p.act != nullptr && (p.n % 256 != 0 || p.x_stride % 4 != 0 || p.y_stride % 4 != 0 ||
                           !aligned(p.x) || !aligned(p.y) || !aligned(p.gain) || !aligned(p.act))) {
    return cudaErrorInvalidValue;  // the quantizing pass moves 16-byte vectors
  }
  RmsNormKernel<<<p.n_rows, kNormThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchSwiGlu(const SwiGluParams& p, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(p.n_rows) * p.n_ff;
  if (total <= 0) return cudaSuccess;
  SwiGluKernel<<<Blocks(total, 256), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchCombine(const CombineParams& p, cudaStream_t stream) {
  if (p.n_tokens <= 0) return cudaSuccess;
  if (p.n_tokens > 65535 || p.n <= 0) return cudaErrorInvalidValue;
  CombineKernel<<<dim3(Blocks(p.n, 256), p.n_tokens), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  AddKernel<<<Blocks(n, 256), 256, 0, stream>>>(x, y, n);
  return cudaGetLastError();
}

}  // namespace tritmoe::gpu
