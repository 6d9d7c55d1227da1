// Row arg-max (sampling.h): one CTA per row, each thread scans a strided slice, then a reduction
// that prefers the larger value and, on equal values, the lower index. NaN never wins.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "runtime/gpu/sampling.h"

namespace tritmoe::gpu {
namespace {

constexpr int kThreads = 512;

__device__ __forceinline__ bool Better(float v, int64_t i, float bv, int64_t bi) {
  return v > bv || (v == bv && i < bi);
}

__global__ void __launch_bounds__(kThreads)
    ArgmaxKernel(const float* logits, int64_t n, const int32_t* exclude, int32_t* out) {
  __shared__ float sv[kThreads / 32];
  __shared__ int64_t si[kThreads / 32];
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * n;
  float bv = -INFINITY;
  int64_t bi = n;  // "none yet": loses every tie
  const int64_t skip = exclude != nullptr ? exclude[blockIdx.x] : -1;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const float v = row[i];
    if (i != skip && Better(v, i, bv, bi)) {
      bv = v;
      bi = i;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xFFFFFFFFu, bv, o);
    const int64_t oi = __shfl_xor_sync(0xFFFFFFFFu, bi, o);
    if (Better(ov, oi, bv, bi)) {
      bv = ov;
      bi = oi;
    }
  }
  if ((threadIdx.x & 31) == 0) {
    sv[threadIdx.x >> 5] = bv;
    si[threadIdx.x >> 5] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) {
      if (Better(sv[w], si[w], bv, bi)) {
        bv = sv[w];
        bi = si[w];
      }
    }
    // All NaN (or -inf): index 0, as std::max_element returns the first element then.
    out[blockIdx.x] = static_cast<int32_t>(bi < n ? bi : 0);
  }
}

}  // namespace

cudaError_t LaunchArgmax(const float* logits, int n_rows, int64_t n, int32_t* out,
                         cudaStream_t stream, const int32_t* exclude) {
  if (n_rows <= 0) return cudaSuccess;
  if (n <= 0) return cudaErrorInvalidValue;
  ArgmaxKernel<<<n_rows, kThreads, 0, stream>>>(logits, n, exclude, out);
  return cudaGetLastError();
}

}  // namespace tritmoe::gpu
