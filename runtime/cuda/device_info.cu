#include <cuda_runtime.h>

#include "runtime/cuda/device_info.h"

namespace tritmoe {

bool BuiltWithCuda() { return true; }

std::vector<GpuInfo> ListGpus() {
  std::vector<GpuInfo> gpus;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: report none
    return gpus;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    GpuInfo g;
    g.index = i;
    g.name = prop.name;
    g.sm_major = prop.major;
    g.sm_minor = prop.minor;
    g.multiprocessors = prop.multiProcessorCount;
    g.total_bytes = prop.totalGlobalMem;
    if (cudaSetDevice(i) == cudaSuccess) cudaMemGetInfo(&g.free_bytes, &g.total_bytes);
    gpus.push_back(g);
  }
  return gpus;
}

}  // namespace tritmoe
