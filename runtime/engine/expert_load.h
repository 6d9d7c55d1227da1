// How evenly a placement spreads recorded routing over the ranks: per MoE layer, the tokens each
// rank's experts would receive (ExpertPlacement::RankLoads: a replicated expert's tokens split
// equally between its copies) and their max / mean. 1.0 is perfect balance; N (the rank count)
// means one rank does all the work. This is the figure "balanced" placement minimises, and what
// limits expert-parallel decode: every MoE layer waits for its most loaded rank.
//
//   ASSIGN_OR_RETURN(RoutingStats stats, engine.CollectRoutingStats());
//   ASSIGN_OR_RETURN(std::vector<LayerLoad> load,
//                    LayerLoadImbalance(stats, engine.expert_placements()));
#pragma once

#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/expert_placement.h"
#include "comm/routing_stats.h"

namespace tritmoe {

struct LayerLoad {
  std::vector<double> rank_tokens;  // [num_ranks]: expected routed tokens per rank
  double max_over_mean = 1.0;       // MaxOverMean(rank_tokens); 1.0 when the layer saw no tokens
};

// stats: one row per MoE layer; placements: one per MoE layer, or one for every layer (as
// placement files allow), all over the same experts as stats. Returns one entry per stats row.
// InvalidArgument (naming both shapes) when they do not fit.
absl::StatusOr<std::vector<LayerLoad>> LayerLoadImbalance(
    const RoutingStats& stats, std::span<const ExpertPlacement> placements);

// Token-weighted mean of the layers' max/mean (a layer with more routed tokens counts more; all
// layers see the same tokens in practice) and the worst layer's, for one-line summaries.
struct LoadSummary {
  double mean_max_over_mean = 1.0;
  double worst_max_over_mean = 1.0;
  int worst_layer = 0;  // index into the LayerLoadImbalance result (MoE layer)
};
LoadSummary SummarizeLoad(std::span<const LayerLoad> layers);

}  // namespace tritmoe
