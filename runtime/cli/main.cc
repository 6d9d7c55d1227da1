// tritmoe: one binary, one subcommand per job (see README.md). Library code returns
// absl::Status; this is the only place that turns a status into an exit code.
#include <cstdio>

#include "runtime/cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"TritMoE: serves giant Mixture-of-Experts models at ~1.58 bits per weight"};
  app.require_subcommand(1);
  absl::Status result = absl::OkStatus();
  tritmoe::RegisterDevicesCommand(app, &result);
  tritmoe::RegisterBenchA2aCommand(app, &result);
  tritmoe::RegisterLogitsCommand(app, &result);
  tritmoe::RegisterInspectCommand(app, &result);
  tritmoe::RegisterGenModelCommand(app, &result);
  tritmoe::RegisterGenerateCommand(app, &result);
  tritmoe::RegisterTokenizeCommand(app, &result);
  tritmoe::RegisterBenchDecodeCommand(app, &result);
  tritmoe::RegisterBenchGpuDecodeCommand(app, &result);
  tritmoe::RegisterStoreCommand(app, &result);
  tritmoe::RegisterServeCommand(app, &result);
  tritmoe::RegisterBenchServeCommand(app, &result);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!result.ok()) {
    std::fprintf(stderr, "tritmoe: %s\n", std::string(result.message()).c_str());
    return 1;
  }
  return 0;
}
