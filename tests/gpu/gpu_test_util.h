// Helpers shared by the GPU tests: whether an sm_90 GPU is visible (the kernels are built for
// sm_90a), and random data.
#pragma once

#include <cuda_runtime_api.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tritmoe::testing {

inline bool HaveSm90Gpu(std::string* why) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    cudaGetLastError();
    *why = "no CUDA GPU visible: GPU test skipped";
    return false;
  }
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    *why = "cannot query GPU 0: GPU test skipped";
    return false;
  }
  if (prop.major != 9 || prop.minor != 0) {
    *why = std::string("kernels are built for sm_90a; GPU 0 is ") + prop.name + ": skipped";
    return false;
  }
  return true;
}

#define TM_SKIP_WITHOUT_GPU()                                                \
  do {                                                                       \
    std::string tm_why_;                                                     \
    if (!::tritmoe::testing::HaveSm90Gpu(&tm_why_)) GTEST_SKIP() << tm_why_; \
  } while (0)

inline std::vector<float> RandomFloats(size_t n, std::mt19937& rng, float lo = -1.0f,
                                       float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

}  // namespace tritmoe::testing
