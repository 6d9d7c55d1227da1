// The Engine's self-measurement on N ranks (run under tests/mpi/mpirun.sh -np N):
//   * every step's rank_times has one entry per rank, all non-negative, the ranks' tokens add up
//     to the step's, rank 0's phases fit inside (and cover most of) its wall time of Step, and
//     with N > 1 every rank spends time in dispatch and combine (it takes part in every MoE
//     exchange), with N = 1 none;
//   * CollectRoutingStats summed over the N ranks equals what one process (LocalCommunicator,
//     run on rank 0 after the job's engine is gone) records for the same steps, row sums are
//     tokens x k, and the JSON file round-trips;
//   * from that file, placements "balanced:<file>" and "balanced+4:<file>" (hot experts copied)
//     run the same steps to the same greedy tokens as one process, recording the same routing.
// Exits non-zero (the job aborts) on any failure, naming the rank.
//
//   tests/mpi/mpirun.sh -np 3 ep_stats_mpi_test DIR   (the model is generated into DIR)
#include <unistd.h>
#include <array>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "comm/mpi_communicator.h"
#include "comm/routing_stats.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/placement_spec.h"
#include "runtime/modelgen/model_generator.h"
#include "tests/engine/mpi_test_main.h"
#include "tests/engine/mpi_test_model.h"
#include "tests/engine/mpi_test_workload.h"

namespace tritmoe {
namespace {

EngineOptions Options(const std::string& path, const std::string& placement) {
  EngineOptions o = MpiTestEngineOptions(path);
  o.placement = placement;
  return o;
}

struct Run {
  std::vector<std::vector<int32_t>> tokens;  // [seq]
  RoutingStats stats;
};

// Four sequences (prompts of 3..12 tokens), then 5 greedy decode steps; sequence 3 ends early
// so that late steps leave some rank without sequences.
absl::StatusOr<Run> RunSteps(Engine& e, bool check_times) {
  using Clock = std::chrono::steady_clock;
  const int n = e.num_ranks();
  Run run;
  run.tokens.resize(kWorkloadSequences);
  std::array<int32_t, kWorkloadSequences> next{};
  std::vector<int> seqs;
  double wall = 0, phases = 0;
  for (int step = 0; step < kWorkloadSteps; ++step) {
    const EngineStep s = WorkloadStep(step, next, &seqs);
    int64_t tokens = 0;
    for (const auto& item : s.items) tokens += static_cast<int64_t>(item.tokens.size());
    const auto t0 = Clock::now();
    ASSIGN_OR_RETURN(EngineStepResult r, e.Step(s));
    const double w = std::chrono::duration<double>(Clock::now() - t0).count();
    for (size_t i = 0; i < seqs.size(); ++i) {
      next[seqs[i]] = r.tokens[i];
      run.tokens[seqs[i]].push_back(r.tokens[i]);
    }
    if (!check_times) continue;
    if (static_cast<int>(r.rank_times.size()) != n) {
      return absl::InternalError(
          absl::StrCat("step ", step, ": ", r.rank_times.size(), " rank times for ", n, " ranks"));
    }
    int64_t sum_tokens = 0;
    for (int p = 0; p < n; ++p) {
      const StepPhaseTimes& t = r.rank_times[p];
      sum_tokens += t.tokens;
      const bool negative = t.attention_s < 0 || t.moe_compute_s < 0 || t.dispatch_s < 0 ||
                            t.combine_s < 0 || t.other_s < 0 || t.tokens < 0;
      const bool comm = t.dispatch_s > 0 && t.combine_s > 0;
      if (negative || (n > 1 && !comm) || (n == 1 && (t.dispatch_s != 0 || t.combine_s != 0))) {
        return absl::InternalError(
            absl::StrCat("step ", step, " rank ", p, ": attention ", t.attention_s, " moe ",
                         t.moe_compute_s, " dispatch ", t.dispatch_s, " combine ", t.combine_s,
                         " other ", t.other_s, " tokens ", t.tokens, " (np=", n, ")"));
      }
    }
    if (sum_tokens != tokens) {
      return absl::InternalError(
          absl::StrCat("step ", step, ": ranks report ", sum_tokens, " tokens of ", tokens));
    }
    if (r.rank_times[0].total_s() > w) {
      return absl::InternalError(absl::StrCat("step ", step, ": rank 0's phases add up to ",
                                              r.rank_times[0].total_s(), " s, Step took ", w));
    }
    wall += w;
    phases += r.rank_times[0].total_s();
  }
  // Left out: planning, the step broadcast, the gather of results (which waits for the slowest
  // rank's last layer and lm_head). Generous, for oversubscribed runs.
  if (check_times && phases < 0.5 * wall) {
    return absl::InternalError(
        absl::StrCat("rank 0's phases cover ", phases, " s of ", wall, " s of Step"));
  }
  ASSIGN_OR_RETURN(run.stats, e.CollectRoutingStats());
  return run;
}

absl::StatusOr<Run> RunJob(Communicator& comm, const std::string& path,
                           const std::string& placement) {
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::Create(Options(path, placement), &comm));
  Run run;
  if (engine->is_driver()) {
    ASSIGN_OR_RETURN(run, RunSteps(*engine, /*check_times=*/true));
    // The placement in use is the one the spec describes.
    ASSIGN_OR_RETURN(std::vector<ExpertPlacement> want,
                     PlacementsFromSpec(placement, run.stats.num_layers(), run.stats.num_experts(),
                                        comm.size()));
    if (engine->expert_placements() != want) {
      return absl::InternalError(absl::StrCat(placement, ": expert_placements() differ"));
    }
    RETURN_IF_ERROR(engine->Shutdown());
  } else {
    RETURN_IF_ERROR(engine->RunWorker());
  }
  return run;
}

absl::Status Check(Communicator& comm, const std::string& dir) {
  const int n = comm.size();
  ASSIGN_OR_RETURN(std::string path, EnsureTinyModel(comm, dir));
  // Rank 0's pid names the file on every rank.
  int32_t pid = comm.rank() == 0 ? static_cast<int32_t>(getpid()) : 0;
  RETURN_IF_ERROR(comm.Broadcast(&pid, sizeof(pid), 0));
  const std::string file = absl::StrCat(std::filesystem::weakly_canonical(dir).string(),
                                        "/stats-np", n, "-", pid, ".json");

  ASSIGN_OR_RETURN(Run got, RunJob(comm, path, "contiguous"));
  Run want;
  if (comm.rank() == 0) {
    LocalCommunicator local;
    ASSIGN_OR_RETURN(want, RunJob(local, path, "contiguous"));
    if (got.tokens != want.tokens) {
      return absl::InternalError(absl::StrCat("np=", n, ": greedy tokens differ from one process"));
    }
    if (!(got.stats == want.stats)) {
      return absl::InternalError(absl::StrCat(
          "np=", n, ": routing statistics summed over the ranks differ from one process's"));
    }
    ASSIGN_OR_RETURN(ModelShape shape, GetModelShape("tiny", 0));
    const int64_t k = shape.n_expert_used;
    for (int l = 0; l < got.stats.num_layers(); ++l) {
      const auto c = got.stats.layer_counts(l);
      const int64_t sum = std::accumulate(c.begin(), c.end(), int64_t{0});
      // Tokens through the model: prompts 3+6+9+12 = 30, then 4+4+3+3+3 decode tokens.
      if (sum != (30 + 17) * k) {
        return absl::InternalError(
            absl::StrCat("MoE layer ", l, ": ", sum, " routed choices, expected ", 47 * k));
      }
    }
    RETURN_IF_ERROR(got.stats.Save(file));
    ASSIGN_OR_RETURN(RoutingStats loaded, RoutingStats::Load(file));
    if (!(loaded == got.stats)) return absl::InternalError("routing statistics file round trip");
  }
  RETURN_IF_ERROR(comm.Barrier());

  for (const std::string& placement :
       {absl::StrCat("balanced:", file), absl::StrCat("balanced+4:", file)}) {
    if (n == 1 && placement.find('+') != std::string::npos) continue;  // no room for copies
    ASSIGN_OR_RETURN(Run b, RunJob(comm, path, placement));
    if (comm.rank() != 0) continue;
    if (b.tokens != want.tokens) {
      return absl::InternalError(
          absl::StrCat("np=", n, " ", placement, ": greedy tokens differ from one process"));
    }
    if (!(b.stats == want.stats)) {
      return absl::InternalError(
          absl::StrCat("np=", n, " ", placement, ": routing differs from one process's"));
    }
    std::printf("[np=%d] %s: same tokens and routing as one process\n", n, placement.c_str());
  }
  if (comm.rank() == 0) {
    std::printf("[np=%d] phase times, routing statistics (%d x %d) and balanced placements OK\n", n,
                got.stats.num_layers(), got.stats.num_experts());
    std::filesystem::remove(file);
  }
  return comm.Barrier();
}

}  // namespace
}  // namespace tritmoe

int main(int argc, char** argv) { return tritmoe::MpiTestMain(argc, argv, tritmoe::Check); }
