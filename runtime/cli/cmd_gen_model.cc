// tritmoe gen-model: writes a deepseek2 GGUF with seeded random weights.
#include <chrono>
#include <cstdio>
#include <string>

#include "base/thread_pool.h"
#include "runtime/cli/commands.h"
#include "runtime/modelgen/model_generator.h"

namespace tritmoe {

void RegisterGenModelCommand(CLI::App& app, absl::Status* result) {
  struct Args {
    std::string config = "tiny";
    std::string recipe = "f16";
    std::string out;
    std::string layout = "mla";
    int layers = 0;
    uint64_t seed = 1234;
    int threads = 0;
    int split_tensors = 0;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "gen-model", "Write a deepseek2 GGUF with seeded random weights (tiny, small, v3 shapes)");
  cmd->add_option("--config", args->config, "Shape: tiny, small or v3")->capture_default_str();
  cmd->add_option("--recipe", args->recipe,
                  "Quantization: f16, pure-<type>, ud-1.58 (IQ1_S experts), ud-1.58-tq1")
      ->capture_default_str();
  cmd->add_option("--out,-o", args->out, "Output .gguf path")->required();
  cmd->add_option("--layout", args->layout, "Attention tensors: mla (attn_k_b/attn_v_b) or legacy "
                  "(attn_kv_b)")->capture_default_str();
  cmd->add_option("--layers", args->layers, "Cut the depth to N layers (0: the preset's)");
  cmd->add_option("--seed", args->seed, "Random seed")->capture_default_str();
  cmd->add_option("--threads,-t", args->threads, "Threads (0: all cores)");
  cmd->add_option("--split-max-tensors", args->split_tensors,
                  "Write gguf-split shards of at most N tensors each");
  cmd->callback([args, result] {
    absl::StatusOr<ModelShape> shape = GetModelShape(args->config, args->layers);
    if (!shape.ok()) return void(*result = shape.status());
    if (args->layout == "legacy") {
      shape->layout = AttentionLayout::kLegacy;
    } else if (args->layout != "mla") {
      return void(*result = absl::InvalidArgumentError("--layout must be mla or legacy"));
    }
    absl::StatusOr<QuantRecipe> recipe = QuantRecipe::Parse(args->recipe);
    if (!recipe.ok()) return void(*result = recipe.status());
    GenerateOptions opts;
    opts.seed = args->seed;
    opts.threads = args->threads > 0 ? args->threads : DefaultThreadCount();
    opts.max_tensors_per_shard = args->split_tensors;
    auto t0 = std::chrono::steady_clock::now();
    *result = GenerateModel(*shape, *recipe, opts, args->out);
    if (result->ok()) {
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("wrote %s: %s, %d layers, %.3fB parameters, recipe %s, in %.1f s\n",
                  args->out.c_str(), shape->name.c_str(), shape->n_layers,
                  shape->ParameterCount() / 1e9, recipe->name().c_str(), s);
    }
  });
}

}  // namespace tritmoe
