// tritmoe devices: lists the GPUs this process sees (none on CPU-only machines).
#include <cstdio>

#include "runtime/cli/commands.h"
#include "runtime/cuda/device_info.h"

namespace tritmoe {

void RegisterDevicesCommand(CLI::App& app, absl::Status* result) {
  CLI::App* cmd = app.add_subcommand("devices", "List the GPUs this process can use");
  cmd->callback([result] {
    std::vector<GpuInfo> gpus = ListGpus();
    std::printf("CUDA backend compiled: %s\n", BuiltWithCuda() ? "yes" : "no");
    if (gpus.empty()) std::printf("no GPU visible: CPU backend\n");
    for (const GpuInfo& g : gpus) {
      std::printf("GPU %d: %s, sm_%d%d, %d SMs, %.1f GiB (%.1f GiB free)\n", g.index,
                  g.name.c_str(), g.sm_major, g.sm_minor, g.multiprocessors,
                  g.total_bytes / 1073741824.0, g.free_bytes / 1073741824.0);
    }
    *result = absl::OkStatus();
  });
}

}  // namespace tritmoe
