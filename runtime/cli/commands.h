// Each subcommand lives in its own cmd_*.cc and registers itself on the CLI11 app. A command's
// callback stores an absl::Status in *result; main turns it into the exit code.
#pragma once

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace tritmoe {

// --device of every command that runs the model through the Engine (EngineOptions::device).
inline constexpr char kDeviceHelp[] =
    "Where the model runs: cpu; cuda (each rank on the GPU of its local rank: one GPU per rank); "
    "or cuda:N (every rank of a host on GPU N: ranks share it, for tests on fewer GPUs)";

// --gpu-exchange (EngineOptions::gpu_exchange).
inline constexpr char kGpuExchangeHelp[] =
    "With --device cuda and several ranks: how the routed experts' rows move between GPUs: nccl "
    "(device buffers over NCCL, CUDA graphs kept; one GPU per rank) or host (staged through host "
    "memory and MPI). Default: nccl with --device cuda where NCCL is built, else host";

void RegisterDevicesCommand(CLI::App& app, absl::Status* result);
void RegisterBenchA2aCommand(CLI::App& app, absl::Status* result);
void RegisterLogitsCommand(CLI::App& app, absl::Status* result);
void RegisterInspectCommand(CLI::App& app, absl::Status* result);
void RegisterGenModelCommand(CLI::App& app, absl::Status* result);
void RegisterGenerateCommand(CLI::App& app, absl::Status* result);
void RegisterTokenizeCommand(CLI::App& app, absl::Status* result);
void RegisterBenchDecodeCommand(CLI::App& app, absl::Status* result);
void RegisterBenchGpuDecodeCommand(CLI::App& app, absl::Status* result);
void RegisterStoreCommand(CLI::App& app, absl::Status* result);  // store and bench-cache
void RegisterServeCommand(CLI::App& app, absl::Status* result);
void RegisterBenchServeCommand(CLI::App& app, absl::Status* result);

}  // namespace tritmoe
