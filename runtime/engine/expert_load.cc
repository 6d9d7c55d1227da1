#include "runtime/engine/expert_load.h"

#include <numeric>

#include "absl/strings/str_cat.h"

namespace tritmoe {

absl::StatusOr<std::vector<LayerLoad>> LayerLoadImbalance(
    const RoutingStats& stats, std::span<const ExpertPlacement> placements) {
  const int n_layers = stats.num_layers();
  if (placements.empty() ||
      (placements.size() != 1 && static_cast<int>(placements.size()) != n_layers)) {
    return absl::InvalidArgumentError(absl::StrCat("expert load: ", placements.size(),
                                                   " placements for routing statistics of ",
                                                   n_layers, " MoE layers (give one per layer)"));
  }
  std::vector<LayerLoad> out;
  out.reserve(n_layers);
  for (int l = 0; l < n_layers; ++l) {
    const ExpertPlacement& p = placements.size() == 1 ? placements[0] : placements[l];
    if (p.num_experts() != stats.num_experts()) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert load: the placement of MoE layer ", l, " has ", p.num_experts(),
                       " experts; the routing statistics have ", stats.num_experts()));
    }
    LayerLoad load;
    load.rank_tokens = p.RankLoads(stats.layer_counts(l));
    load.max_over_mean = MaxOverMean(load.rank_tokens);
    out.push_back(std::move(load));
  }
  return out;
}

LoadSummary SummarizeLoad(std::span<const LayerLoad> layers) {
  LoadSummary s;
  double weighted = 0, weight = 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    const double tokens =
        std::accumulate(layers[l].rank_tokens.begin(), layers[l].rank_tokens.end(), 0.0);
    weighted += tokens * layers[l].max_over_mean;
    weight += tokens;
    if (l == 0 || layers[l].max_over_mean > s.worst_max_over_mean) {
      s.worst_max_over_mean = layers[l].max_over_mean;
      s.worst_layer = static_cast<int>(l);
    }
  }
  s.mean_max_over_mean = weight > 0 ? weighted / weight : 1.0;
  return s;
}

}  // namespace tritmoe
