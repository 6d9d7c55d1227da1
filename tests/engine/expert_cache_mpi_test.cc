// Engine::CollectExpertCacheStats on N ranks (run under tests/mpi/mpirun.sh -np N), each rank with
// its own CPU expert cache (CachedExpertSource over the model file) holding only its own experts,
// against one process (LocalCommunicator, run on rank 0 after the job's engine is gone) running
// the same steps with the same budget per rank:
//   * summed over the ranks, every MoE layer's hits + misses equal one process's (each step asks
//     each chosen expert once, on the rank that holds it), its tokens equal one process's (47:
//     each rank counts its own sequences' tokens), and bytes_read = misses x one expert's bytes
//     (no prefetch);
//   * unlimited budget: the misses equal one process's too (each expert read once, wherever it
//     lives) and nothing is evicted; a budget of 2 experts per layer per rank: slots per layer
//     sum to N x 2 and experts are evicted;
//   * an engine without a cache reports none (nullopt), and the statistics come back the same
//     when collected twice without a step between.
// Exits non-zero (the job aborts) on any failure, naming the rank.
//
//   tests/mpi/mpirun.sh -np 2 expert_cache_mpi_test DIR   (the model is generated into DIR)
#include <unistd.h>
#include <array>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "comm/mpi_communicator.h"
#include "runtime/engine/engine.h"
#include "runtime/modelgen/model_generator.h"
#include "runtime/store/cached_expert_source.h"
#include "runtime/store/expert_store.h"
#include "tests/engine/mpi_test_main.h"
#include "tests/engine/mpi_test_model.h"
#include "tests/engine/mpi_test_workload.h"

namespace tritmoe {
namespace {

// The scripted workload (mpi_test_workload.h), greedy tokens fed back.
absl::Status RunSteps(Engine& e) {
  std::array<int32_t, kWorkloadSequences> next{};
  std::vector<int> seqs;
  for (int step = 0; step < kWorkloadSteps; ++step) {
    ASSIGN_OR_RETURN(EngineStepResult r, e.Step(WorkloadStep(step, next, &seqs)));
    for (size_t i = 0; i < seqs.size(); ++i) next[seqs[i]] = r.tokens[i];
  }
  return absl::OkStatus();
}

// One job: every rank's cache has budget_bytes (-1: no cache at all). Rank 0 returns the
// collected statistics.
absl::StatusOr<std::optional<ExpertCacheStats>> RunJob(Communicator& comm, const std::string& path,
                                                       int64_t budget_bytes) {
  EngineOptions o = MpiTestEngineOptions(path);
  std::unique_ptr<ExpertStore> store;
  std::unique_ptr<CachedExpertSource> source;
  if (budget_bytes >= 0) {
    ASSIGN_OR_RETURN(store, OpenExpertStore(path));
    source = std::make_unique<CachedExpertSource>(store.get(),
                                                  ExpertCacheOptions{.budget_bytes = budget_bytes});
    o.model.expert_source = source.get();
    o.expert_cache_stats = [s = source.get()] { return s->Stats(); };
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::Create(o, &comm));
  std::optional<ExpertCacheStats> stats;
  if (engine->is_driver()) {
    RETURN_IF_ERROR(RunSteps(*engine));
    ASSIGN_OR_RETURN(stats, engine->CollectExpertCacheStats());
    ASSIGN_OR_RETURN(std::optional<ExpertCacheStats> again, engine->CollectExpertCacheStats());
    if (stats.has_value() != again.has_value() ||
        (stats.has_value() && stats->Summary() != again->Summary())) {
      return absl::InternalError("two collections without a step between differ");
    }
    RETURN_IF_ERROR(engine->Shutdown());
  } else {
    RETURN_IF_ERROR(engine->RunWorker());
  }
  return stats;
}

absl::Status Compare(const std::string& what, const ExpertCacheStats& got,
                     const ExpertCacheStats& want, int64_t expert_bytes, int n_moe,
                     bool same_misses) {
  if (static_cast<int>(got.layers.size()) != n_moe ||
      static_cast<int>(want.layers.size()) != n_moe) {
    return absl::InternalError(absl::StrCat(what, ": ", got.layers.size(), " and ",
                                            want.layers.size(), " layers, expected ", n_moe));
  }
  for (int i = 0; i < n_moe; ++i) {
    const LayerCacheStats& g = got.layers[i];
    const LayerCacheStats& w = want.layers[i];
    const std::string at = absl::StrCat(what, ", MoE layer ", i, " (layer ", g.layer, "): ");
    if (g.layer != w.layer) return absl::InternalError(absl::StrCat(at, "layer ", w.layer));
    if (g.requests() != w.requests() || g.requests() == 0) {
      return absl::InternalError(absl::StrCat(at, g.requests(), " requests summed over the ranks, ",
                                              w.requests(), " in one process"));
    }
    if (g.tokens != 47 || w.tokens != 47) {
      return absl::InternalError(absl::StrCat(at, g.tokens, " and ", w.tokens, " tokens, not 47"));
    }
    for (const LayerCacheStats* s : {&g, &w}) {
      if (s->bytes_read != s->misses * expert_bytes || s->prefetched != 0) {
        return absl::InternalError(absl::StrCat(at, s->bytes_read, " bytes read for ", s->misses,
                                                " misses of ", expert_bytes, " bytes"));
      }
    }
    if (same_misses && (g.misses != w.misses || g.evictions != 0)) {
      return absl::InternalError(absl::StrCat(at, g.misses, " misses (", g.evictions,
                                              " evictions), one process ", w.misses));
    }
  }
  return absl::OkStatus();
}

absl::Status Check(Communicator& comm, const std::string& dir) {
  const int n = comm.size();
  ASSIGN_OR_RETURN(std::string path, EnsureTinyModel(comm, dir));
  ASSIGN_OR_RETURN(ModelShape shape, GetModelShape("tiny", 0));
  const int n_moe = shape.n_layers - shape.n_leading_dense;
  // gate, up and down, f16.
  const int64_t expert_bytes = int64_t{3} * shape.n_embd * shape.n_ff_exp * 2;
  const int64_t small = 2 * expert_bytes * n_moe;  // 2 slots per layer per rank

  ASSIGN_OR_RETURN(std::optional<ExpertCacheStats> none, RunJob(comm, path, -1));
  ASSIGN_OR_RETURN(std::optional<ExpertCacheStats> unlimited, RunJob(comm, path, 0));
  ASSIGN_OR_RETURN(std::optional<ExpertCacheStats> bounded, RunJob(comm, path, small));
  if (comm.rank() == 0) {
    if (none.has_value()) return absl::InternalError("an engine without a cache reported one");
    if (!unlimited.has_value() || !bounded.has_value()) {
      return absl::InternalError("an engine with a cache reported none");
    }
    LocalCommunicator local;
    ASSIGN_OR_RETURN(std::optional<ExpertCacheStats> unlimited1, RunJob(local, path, 0));
    ASSIGN_OR_RETURN(std::optional<ExpertCacheStats> bounded1, RunJob(local, path, small));
    RETURN_IF_ERROR(Compare(absl::StrCat("np=", n, " unlimited"), *unlimited, *unlimited1,
                            expert_bytes, n_moe, /*same_misses=*/true));
    RETURN_IF_ERROR(Compare(absl::StrCat("np=", n, " 2 slots"), *bounded, *bounded1, expert_bytes,
                            n_moe, /*same_misses=*/false));
    if (bounded1->slots_per_layer != 2 || bounded->slots_per_layer != 2 * n) {
      return absl::InternalError(absl::StrCat("slots per layer: ", bounded->slots_per_layer,
                                              " summed over ", n, " ranks, ",
                                              bounded1->slots_per_layer, " in one process"));
    }
    if (bounded1->Total().evictions == 0) {
      return absl::InternalError("2 slots per layer evicted nothing");
    }
    std::printf("[np=%d] %s\n[np=%d] %s\n", n, unlimited->Summary().c_str(), n,
                bounded->Summary().c_str());
  }
  return comm.Barrier();
}

}  // namespace
}  // namespace tritmoe

int main(int argc, char** argv) { return tritmoe::MpiTestMain(argc, argv, tritmoe::Check); }
