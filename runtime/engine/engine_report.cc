#include "runtime/engine/engine_report.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "runtime/engine/expert_load.h"
#include "runtime/engine/placement_spec.h"

namespace tritmoe {

void PhaseTimesAccumulator::Add(const EngineStepResult& r) {
  if (sums_.size() < r.rank_times.size()) sums_.resize(r.rank_times.size());
  for (size_t p = 0; p < r.rank_times.size(); ++p) sums_[p] += r.rank_times[p];
  ++steps_;
}

std::string PhaseTableHeader(const std::string& label_column) {
  return absl::StrCat("| ", label_column,
                      " | rank | tokens/step | attention ms | MoE compute ms | dispatch ms | "
                      "combine ms | other ms | sum ms |\n|---|---|---|---|---|---|---|---|---|\n");
}

std::string PhaseTableRows(const std::string& label, const PhaseTimesAccumulator& acc) {
  std::string out;
  const double n = acc.steps() > 0 ? static_cast<double>(acc.steps()) : 1.0;
  for (size_t p = 0; p < acc.sums().size(); ++p) {
    const StepPhaseTimes& t = acc.sums()[p];
    absl::StrAppendFormat(&out, "| %s | %d | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n",
                          label, p, t.tokens / n, 1e3 * t.attention_s / n,
                          1e3 * t.moe_compute_s / n, 1e3 * t.dispatch_s / n, 1e3 * t.combine_s / n,
                          1e3 * t.other_s / n, 1e3 * t.total_s() / n);
  }
  return out;
}

absl::Status SaveEngineRoutingStats(Engine& engine, const std::string& path) {
  ASSIGN_OR_RETURN(RoutingStats stats, engine.CollectRoutingStats());
  RETURN_IF_ERROR(stats.Save(path));
  int64_t choices = 0;
  for (int l = 0; l < stats.num_layers(); ++l) {
    for (int64_t c : stats.layer_counts(l)) choices += c;
  }
  std::fprintf(
      stderr, "routing statistics: %d MoE layers x %d experts, %lld routed choices -> %s\n",
      stats.num_layers(), stats.num_experts(), static_cast<long long>(choices), path.c_str());
  return absl::OkStatus();
}

absl::StatusOr<std::string> LoadImbalanceReport(Engine& engine) {
  const std::vector<ExpertPlacement> current = engine.expert_placements();
  if (current.empty()) return std::string();
  if (!engine.records_routing_stats()) {
    return std::string(
        "expert load per layer: not recorded on this path (routing statistics come from the CPU "
        "and host-staged exchanges only)\n");
  }
  ASSIGN_OR_RETURN(RoutingStats stats, engine.CollectRoutingStats());
  const int n_ranks = current[0].num_ranks(), n_experts = stats.num_experts();
  ASSIGN_OR_RETURN(std::vector<LayerLoad> now, LayerLoadImbalance(stats, current));
  ASSIGN_OR_RETURN(ExpertPlacement contiguous, ExpertPlacement::Contiguous(n_experts, n_ranks));
  ASSIGN_OR_RETURN(std::vector<LayerLoad> cont,
                   LayerLoadImbalance(stats, std::span<const ExpertPlacement>(&contiguous, 1)));
  std::vector<ExpertPlacement> balanced;
  for (int l = 0; l < stats.num_layers(); ++l) {
    ASSIGN_OR_RETURN(ExpertPlacement p, ExpertPlacement::Balanced(n_ranks, stats.layer_counts(l)));
    balanced.push_back(std::move(p));
  }
  ASSIGN_OR_RETURN(std::vector<LayerLoad> bal, LayerLoadImbalance(stats, balanced));
  std::string out = absl::StrFormat(
      "expert load, max/mean routed tokens per rank (1.00 = even; %d = one rank does all), per "
      "MoE layer, from the routing recorded in this run:\n",
      n_ranks);
  auto line = [&](const char* name, const std::vector<LayerLoad>& layers) {
    const LoadSummary s = SummarizeLoad(layers);
    std::string l = absl::StrFormat("  %-28s mean %.3f, worst %.3f (MoE layer %d):", name,
                                    s.mean_max_over_mean, s.worst_max_over_mean, s.worst_layer);
    for (const LayerLoad& x : layers) absl::StrAppendFormat(&l, " %.2f", x.max_over_mean);
    return l + "\n";
  };
  out += line("this run's placement", now);
  out += line("contiguous", cont);
  out += line("balanced (in-sample)", bal);
  return out;
}

}  // namespace tritmoe
