// Linked instead of device_info.cu when the build has no CUDA toolkit.
#include "runtime/cuda/device_info.h"

namespace tritmoe {

bool BuiltWithCuda() { return false; }
std::vector<GpuInfo> ListGpus() { return {}; }

}  // namespace tritmoe
