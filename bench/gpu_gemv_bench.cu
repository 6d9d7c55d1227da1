// HBM read-bandwidth probe for gpu_gemv_bench (the ceiling the GEMV is compared with). Kept in
// its own .cu (C++17, absl-free); gpu_gemv_bench.cc declares and calls it.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "base/cuda_check.h"
#include "experts/cuda/device_buffer.h"

namespace tritmoe::bench {
namespace {

// Each thread reads 16-byte words with a grid stride, 4 loads in flight; the XOR of everything is
// written per block so the loads cannot be removed.
template <bool kNoAllocate>
__global__ void ReadKernel(const uint4* __restrict__ p, size_t n16, uint32_t* __restrict__ sink) {
  uint32_t x = 0;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n16; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if constexpr (kNoAllocate) {
        asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                     : "=r"(v[k].x), "=r"(v[k].y), "=r"(v[k].z), "=r"(v[k].w)
                     : "l"(p + i + k * stride));
      } else {
        v[k] = __ldg(p + i + k * stride);
      }
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) x ^= v[k].x ^ v[k].y ^ v[k].z ^ v[k].w;
  }
  for (; i < n16; i += stride) {
    const uint4 v = __ldg(p + i);
    x ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (x == 0x12345678u) sink[blockIdx.x] = x;  // practically never; keeps the loads alive
}

}  // namespace

// Median read bandwidth in GB/s (1e9 bytes/s) over `reps` passes of a `bytes`-sized buffer.
double MeasureReadBandwidthGBs(size_t bytes, int reps, bool no_allocate) {
  DeviceBuffer buf(bytes);
  TM_CHECK_CUDA(cudaMemset(buf.get(), 0x5A, bytes));
  int sms = 0, dev = 0;
  TM_CHECK_CUDA(cudaGetDevice(&dev));
  TM_CHECK_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const int threads = 512, blocks = sms * 4;
  DeviceBuffer sink(blocks * sizeof(uint32_t));
  CudaEvent start, stop;
  std::vector<float> ms;
  for (int r = 0; r < reps + 2; ++r) {
    start.Record(nullptr);
    if (no_allocate) {
      ReadKernel<true><<<blocks, threads>>>(buf.as<uint4>(), bytes / 16, sink.as<uint32_t>());
    } else {
      ReadKernel<false><<<blocks, threads>>>(buf.as<uint4>(), bytes / 16, sink.as<uint32_t>());
    }
    TM_CHECK_CUDA(cudaGetLastError());
    stop.Record(nullptr);
    stop.Synchronize();
    if (r >= 2) ms.push_back(stop.MillisSince(start));  // two warm-up passes
  }
  std::sort(ms.begin(), ms.end());
  return static_cast<double>(bytes) / (ms[ms.size() / 2] * 1e-3) / 1e9;
}

}  // namespace tritmoe::bench
