// Device helper shared by every kernel that writes quantized activation records (the 304-byte
// per-(row, 256-column block) layout of quant_gemv_launch.h): the GEMV's own quantization
// kernel, and kernels that produce an activation and quantize it in the same launch (RMSNorm +
// quantize, SwiGLU + quantize), so that their records are bit-identical to the unfused path.
// CUDA only; include from .cu files.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "experts/cuda/quant_gemv_launch.h"

namespace tritmoe::gpu_internal {

// One warp quantizes one 256-column block: lane L holds columns 8L..8L+7 in v (sub-block
// ib = L / 4, thread-in-group t = L % 4 of the fragment layout) and `rec` is the block's record.
// All 32 lanes must call it.
__device__ __forceinline__ void QuantizeBlockWarp(const float (&v)[8], int lane, uint8_t* rec) {
  float amax = 0.0f;
#pragma unroll
  for (int j = 0; j < 8; ++j) amax = fmaxf(amax, fabsf(v[j]));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFF, amax, o));
  const float d = amax / 127.0f;
  const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
  int sum = 0;
  uint32_t packed[2] = {0, 0};
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int q = __float2int_rn(v[j] * id);
    sum += q;
    packed[j / 4] |= (static_cast<uint32_t>(q) & 0xFF) << (8 * (j % 4));
  }
  const int ib = lane >> 2, t = lane & 3;
  *reinterpret_cast<uint2*>(rec + t * 64 + ib * 8) = make_uint2(packed[0], packed[1]);
  int sub = sum + __shfl_xor_sync(0xFFFFFFFF, sum, 1);
  sub += __shfl_xor_sync(0xFFFFFFFF, sub, 2);
  int total = sub;
#pragma unroll
  for (int o = 4; o < 32; o <<= 1) total += __shfl_xor_sync(0xFFFFFFFF, total, o);
  if (t == 0) {
    const uint32_t lo = static_cast<uint32_t>(sub & 127);
    const uint32_t hi = static_cast<uint32_t>(sub >> 7) & 0xFF;
    uint8_t* qs = rec + kActQsOffset + (ib / 2) * 8 + (ib % 2) * 2;
    *reinterpret_cast<uint16_t*>(qs) = static_cast<uint16_t>(lo | (lo << 8));
    *reinterpret_cast<uint16_t*>(qs + 4) = static_cast<uint16_t>(hi | (hi << 8));
  }
  if (lane == 0) {
    *reinterpret_cast<uint2*>(rec + kActMetaOffset) =
        make_uint2(__float_as_uint(d), static_cast<uint32_t>(total));
  }
}

// silu(g) * u with the rounding of runtime/gpu's SwiGLU kernel (twin: runtime/model/ffn.cc).
__device__ __forceinline__ float SwiGluValue(float g, float u) {
  return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u);
}

}  // namespace tritmoe::gpu_internal
