// RoPE rotation (rope.h): one thread per (token, head, pair); products rounded separately as the
// CPU twin computes them.
#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/gpu/rope.h"

namespace tritmoe::gpu {
namespace {

__global__ void RopeKernel(const RopeParams p) {
  const int half = p.n_rot / 2;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t total = static_cast<int64_t>(p.n_tokens) * p.n_heads * half;
  if (i >= total) return;
  const int k = static_cast<int>(i % half);
  const int64_t th = i / half;
  const int h = static_cast<int>(th % p.n_heads);
  const int t = static_cast<int>(th / p.n_heads);
  const float* v = p.in + t * p.in_token_stride + h * p.in_head_stride + p.in_offset;
  float* o = p.out + t * p.out_token_stride + h * p.out_head_stride + p.out_offset;
  const int64_t ti = static_cast<int64_t>(p.pos[t]) * half + k;
  const float c = p.cos[ti], s = p.sin[ti];
  const float x0 = v[2 * k], x1 = v[2 * k + 1];
  o[2 * k] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
  o[2 * k + 1] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
}

}  // namespace

cudaError_t LaunchRope(const RopeParams& p, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(p.n_tokens) * p.n_heads * (p.n_rot / 2);
  if (total <= 0) return cudaSuccess;
  RopeKernel<<<static_cast<unsigned>((total + 255) / 256), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace tritmoe::gpu
