// Builds without CUDA: the GPU backend of the Engine does not exist.
#include "runtime/engine/step_backend.h"

namespace tritmoe {

absl::StatusOr<std::unique_ptr<StepBackend>> LoadGpuBackend(const std::string&, const ModelOptions&,
                                                            int, int64_t, bool) {
  return absl::UnimplementedError(
      "--device cuda: this tritmoe was built without CUDA (configure on a machine with the CUDA "
      "toolkit, TRITMOE_CUDA=ON)");
}

bool GpuNcclExchangeBuilt() { return false; }

}  // namespace tritmoe
