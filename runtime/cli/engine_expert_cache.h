// The expert cache flags (runtime/store/expert_cache_setup.h) applied to an Engine job: on the CPU
// a CachedExpertSource under the model (its store: --expert-store or the model file); with
// --device cuda the GPU expert cache (EngineOptions::gpu_expert_cache_bytes), whose backing tier is
// the model's experts held in pinned host memory (--expert-store does not apply there).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "runtime/engine/engine.h"
#include "runtime/store/expert_cache_setup.h"

namespace tritmoe {

inline absl::StatusOr<ExpertCacheSetup> ApplyExpertCacheFlags(const ExpertCacheFlags& flags,
                                                              EngineOptions* options) {
  if (options->on_gpu()) {
    if (!flags.store.empty()) {
      return absl::InvalidArgumentError(
          "--expert-store is for --device cpu: with --device cuda the expert cache streams the "
          "experts from the model file, held in pinned host memory");
    }
    options->gpu_expert_cache_bytes = static_cast<int64_t>(flags.cache_mb * (1 << 20));
    options->gpu_expert_prefetch = flags.prefetch;
    return ExpertCacheSetup();
  }
  absl::StatusOr<ExpertCacheSetup> setup = SetUpExpertCache(options->model_path, flags);
  if (!setup.ok()) return setup.status();
  options->model.expert_source = setup->source.get();
  if (setup->source) {
    options->expert_cache_stats = [source = setup->source.get()] { return source->Stats(); };
  }
  return setup;
}

// The end-of-run line of whichever cache ran, summed over the ranks ("" when none did). Driver
// only, collective (Engine::CollectExpertCacheStats).
inline absl::StatusOr<std::string> ExpertCacheSummary(Engine& engine) {
  absl::StatusOr<std::optional<ExpertCacheStats>> s = engine.CollectExpertCacheStats();
  if (!s.ok()) return s.status();
  if (!s->has_value()) return std::string();
  const bool gpu = engine.ranks()[0].device.rfind("cuda", 0) == 0;
  std::string line = (gpu ? "GPU " : "") + (*s)->Summary();
  if (engine.num_ranks() > 1) line += absl::StrCat(" (summed over ", engine.num_ranks(), " ranks)");
  return line;
}

}  // namespace tritmoe
