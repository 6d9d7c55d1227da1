// What GPUs this process can see. Plain C++ header: callers need no CUDA headers, and builds
// without CUDA link runtime/cuda/device_info_stub.cc instead, which reports none.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tritmoe {

struct GpuInfo {
  int index = 0;
  std::string name;
  int sm_major = 0, sm_minor = 0;
  int multiprocessors = 0;
  size_t total_bytes = 0;
  size_t free_bytes = 0;
};

// The CUDA devices visible to this process; an empty list when there are none or when the build
// has no CUDA backend (ListGpus never fails for a missing driver: that is "no GPUs").
std::vector<GpuInfo> ListGpus();

// True when this binary was compiled with the CUDA backend.
bool BuiltWithCuda();

}  // namespace tritmoe
