// What the commands need to put the expert cache under a model: the flags
//   --expert-cache-mb N   per-rank budget in MiB; 0 (default): no cache unless --expert-store is
//                         given, experts read in place from the mapped file (resident); with
//                         --expert-store, 0 means an unlimited cache
//   --expert-store SPEC   where experts come from: a GGUF path or grpc://host:port (default: the
//                         model file)
//   --expert-prefetch     predict and load the next layer's experts in the background
// and the store and source they describe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "runtime/store/cached_expert_source.h"
#include "runtime/store/expert_store.h"

namespace tritmoe {

struct ExpertCacheFlags {
  double cache_mb = 0;  // fractions allowed (tests of tiny models)
  std::string store;
  bool prefetch = false;

  bool enabled() const { return cache_mb > 0 || !store.empty(); }
};

inline void AddExpertCacheFlags(CLI::App* cmd, ExpertCacheFlags* f) {
  cmd->add_option("--expert-cache-mb", f->cache_mb,
                  "Routed-expert cache budget per rank in MiB (0: experts resident, read in "
                  "place; with --expert-store: unlimited)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--expert-store", f->store,
                  "Where routed experts are read from: a GGUF path or grpc://host:port "
                  "(default: the model)");
  cmd->add_flag("--expert-prefetch", f->prefetch,
                "Load the next layer's predicted experts in the background");
}

// The store and the source (both null when !flags.enabled()). The source goes into
// ModelOptions::expert_source; both must outlive the model.
struct ExpertCacheSetup {
  std::unique_ptr<ExpertStore> store;
  std::unique_ptr<CachedExpertSource> source;
};

inline absl::StatusOr<ExpertCacheSetup> SetUpExpertCache(const std::string& model_path,
                                                         const ExpertCacheFlags& flags) {
  ExpertCacheSetup s;
  if (!flags.enabled()) return s;
  absl::StatusOr<std::unique_ptr<ExpertStore>> store =
      OpenExpertStore(flags.store.empty() ? model_path : flags.store);
  if (!store.ok()) return store.status();
  s.store = std::move(*store);
  ExpertCacheOptions o;
  o.budget_bytes = static_cast<int64_t>(flags.cache_mb * (1 << 20));
  o.prefetch = flags.prefetch;
  s.source = std::make_unique<CachedExpertSource>(s.store.get(), o);
  return s;
}

}  // namespace tritmoe
