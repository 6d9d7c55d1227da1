// tritmoe inspect: describes a GGUF model (one file or a split set) without loading its weights:
// header, architecture hyperparameters, tokenizer, attention layout, tensors and sizes.
#include <cstdio>
#include <memory>
#include <string>

#include "runtime/cli/commands.h"
#include "runtime/gguf/gguf.h"
#include "runtime/gguf/gguf_summary.h"

namespace tritmoe {

void RegisterInspectCommand(CLI::App& app, absl::Status* result) {
  struct Args {
    std::string path;
    bool json = false;
    bool no_tensors = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "inspect", "Describe a GGUF model: metadata, hyperparameters, tensors, bytes per type");
  cmd->add_option("file", args->path, "A .gguf file, or any shard of a -NNNNN-of-MMMMM set")
      ->required();
  cmd->add_flag("--json", args->json, "Print one JSON object instead of text");
  cmd->add_flag("--no-tensors", args->no_tensors, "Leave out the per-tensor table");
  cmd->callback([args, result] {
    absl::StatusOr<std::unique_ptr<gguf::GgufModel>> model = gguf::GgufModel::Open(args->path);
    if (!model.ok()) return void(*result = model.status());
    const gguf::GgufSummary summary = gguf::Summarize(**model);
    const std::string out = args->json ? gguf::SummaryJson(summary, !args->no_tensors)
                                       : gguf::SummaryText(summary, !args->no_tensors);
    std::fwrite(out.data(), 1, out.size(), stdout);
    *result = absl::OkStatus();
  });
}

}  // namespace tritmoe
