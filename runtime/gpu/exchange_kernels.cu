// Kernels of the device expert exchange (exchange_kernels.h).
#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/gpu/exchange_kernels.h"

namespace tritmoe::gpu {
namespace {

constexpr int kThreads = 256;

__global__ void MaskChoicesKernel(const MaskChoicesParams p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(p.n_tokens) * p.k) return;
  const int32_t e = p.experts[i];
  int32_t out = p.n_expert;
  if (e >= 0 && e < p.n_expert) {
    const int32_t b = p.replica_offsets[e], n = p.replica_offsets[e + 1] - b;
    const int64_t g = i / p.k;
    if (n > 0 && p.replica_ranks[b + static_cast<int32_t>(g % n)] == p.rank) out = e;
  }
  p.masked[i] = out;
}

// One token per blockIdx.x (no 65535 limit on tokens), column blocks on blockIdx.y.
__global__ void PartialCombineKernel(const PartialCombineParams p) {
  const int64_t g = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= p.n) return;
  float acc = 0.0f;
  for (int j = 0; j < p.k; ++j) {
    const int64_t slot = g * p.k + j;
    if (p.masked[slot] >= p.n_expert) continue;
    const int64_t row = p.slot_pair[slot];
    acc = __fadd_rn(acc, __fmul_rn(p.w[slot], p.y[row * p.n + c]));
  }
  p.partial[g * p.n + c] = acc;
}

__global__ void RankSumKernel(const RankSumParams p) {
  const int64_t t = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= p.n) return;
  const int64_t i = t * p.n + c, part = static_cast<int64_t>(p.n_tokens) * p.n;
  float acc = p.parts[i];
  for (int r = 1; r < p.n_parts; ++r) acc = __fadd_rn(acc, p.parts[r * part + i]);
  if (p.shared != nullptr) acc = __fadd_rn(acc, p.shared[i]);
  p.x[i] = __fadd_rn(p.x[i], acc);
}

unsigned Blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

cudaError_t LaunchMaskChoices(const MaskChoicesParams& p, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(p.n_tokens) * p.k;
  if (n <= 0) return cudaSuccess;
  if (p.experts == nullptr || p.replica_offsets == nullptr || p.replica_ranks == nullptr ||
      p.masked == nullptr || p.n_expert <= 0) {
    return cudaErrorInvalidValue;
  }
  MaskChoicesKernel<<<Blocks(n), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchPartialCombine(const PartialCombineParams& p, cudaStream_t stream) {
  if (p.n_tokens <= 0) return cudaSuccess;
  if (p.n <= 0 || p.k <= 0 || p.partial == nullptr || p.masked == nullptr) {
    return cudaErrorInvalidValue;
  }
  PartialCombineKernel<<<dim3(p.n_tokens, Blocks(p.n)), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchRankSum(const RankSumParams& p, cudaStream_t stream) {
  if (p.n_tokens <= 0) return cudaSuccess;
  if (p.n <= 0 || p.n_parts <= 0 || p.x == nullptr || p.parts == nullptr) {
    return cudaErrorInvalidValue;
  }
  RankSumKernel<<<dim3(p.n_tokens, Blocks(p.n)), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace tritmoe::gpu
