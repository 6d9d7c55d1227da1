// The expert cache flags (runtime/store/expert_cache_setup.h) applied to an Engine job: on the CPU
// a CachedExpertSource under the model (its store: --expert-store or the model file); with
// --device cuda the GPU expert cache (EngineOptions::gpu_expert_cache_bytes), whose backing tier is
// the model's experts held in pinned host memory (--expert-store does not apply there).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/engine/engine.h"
#include "runtime/store/expert_cache_setup.h"

namespace tritmoe {

inline absl::StatusOr<ExpertCacheSetup> ApplyExpertCacheFlags(const ExpertCacheFlags& flags,
                                                              EngineOptions* options) {
  if (options->device == "cuda") {
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
  return setup;
}

// The end-of-run line of whichever cache ran ("" when none did).
inline std::string ExpertCacheSummary(const ExpertCacheSetup& setup, const Engine& engine) {
  if (setup.source) return setup.source->Stats().Summary();
  if (std::optional<ExpertCacheStats> s = engine.DeviceExpertCacheStats(); s.has_value()) {
    return "GPU " + s->Summary();
  }
  return "";
}

}  // namespace tritmoe
