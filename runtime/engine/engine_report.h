// Text the commands print about what the Engine measured: the per-rank phase split of steps
// (StepPhaseTimes) and how evenly the recorded routing loads the ranks (LayerLoadImbalance), and
// writing the routing statistics for a later `--placement balanced:FILE`.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/engine/engine.h"

namespace tritmoe {

// Sums a run of steps per rank: add each step's rank_times, then report means per step.
class PhaseTimesAccumulator {
 public:
  void Add(const EngineStepResult& r);
  int64_t steps() const { return steps_; }
  const std::vector<StepPhaseTimes>& sums() const { return sums_; }  // [rank]

 private:
  std::vector<StepPhaseTimes> sums_;
  int64_t steps_ = 0;
};

// Markdown rows, one per rank, "| <label> | rank | tokens/step | attention | MoE compute | dispatch
// | combine | other | sum |" in ms per step (means over the accumulated steps); header() first.
std::string PhaseTableHeader(const std::string& label_column);
std::string PhaseTableRows(const std::string& label, const PhaseTimesAccumulator& acc);

// Driver only, collective: CollectRoutingStats, saved to `path` (RoutingStats::Save: .json, else
// TSV) -- the file `--placement balanced:<path>` reads.
absl::Status SaveEngineRoutingStats(Engine& engine, const std::string& path);

// Lines on the routing recorded so far: per MoE layer, max/mean routed tokens per rank under the
// engine's placement, and what contiguous and balanced (computed from these same counts, i.e.
// in-sample) would give. Driver only, collective. Empty for a model without MoE layers; a line
// saying so where the engine records no routing statistics (the NCCL exchange).
absl::StatusOr<std::string> LoadImbalanceReport(Engine& engine);

}  // namespace tritmoe
