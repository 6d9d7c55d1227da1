#include "runtime/engine/placement_spec.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "comm/routing_stats.h"

namespace tritmoe {

absl::StatusOr<std::vector<ExpertPlacement>> PlacementsFromSpec(const std::string& spec,
                                                                int num_moe_layers, int num_experts,
                                                                int num_ranks) {
  std::vector<ExpertPlacement> out;
  if (spec.empty() || spec == "contiguous") {
    ASSIGN_OR_RETURN(ExpertPlacement p, ExpertPlacement::Contiguous(num_experts, num_ranks));
    out.assign(num_moe_layers, p);
    return out;
  }
  if (absl::StartsWith(spec, "balanced:") || absl::StartsWith(spec, "balanced+")) {
    BalanceOptions balance;
    const size_t colon = spec.find(':');
    if (spec[8] == '+') {
      // "balanced+R:FILE": R extra copies of the hottest experts per layer.
      if (colon == std::string::npos ||
          !absl::SimpleAtoi(spec.substr(9, colon - 9), &balance.num_extra_replicas) ||
          balance.num_extra_replicas < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "placement \"", spec, "\": expected balanced+<extra replicas>:<routing stats file>"));
      }
    }
    const std::string path = spec.substr(colon + 1);
    if (path.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("placement \"", spec, "\" names no routing statistics file"));
    }
    ASSIGN_OR_RETURN(RoutingStats stats, RoutingStats::Load(path));
    if (stats.num_experts() != num_experts ||
        (stats.num_layers() != num_moe_layers && stats.num_layers() != 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("routing statistics ", path, " have ", stats.num_layers(), " layers x ",
                       stats.num_experts(), " experts; the model has ", num_moe_layers,
                       " MoE layers x ", num_experts, " experts"));
    }
    for (int l = 0; l < num_moe_layers; ++l) {
      const int row = stats.num_layers() == 1 ? 0 : l;
      ASSIGN_OR_RETURN(ExpertPlacement p,
                       ExpertPlacement::Balanced(num_ranks, stats.layer_counts(row), balance));
      out.push_back(std::move(p));
    }
    return out;
  }
  ASSIGN_OR_RETURN(std::vector<ExpertPlacement> file, LoadPlacements(spec));
  if (file.size() != 1 && static_cast<int>(file.size()) != num_moe_layers) {
    return absl::InvalidArgumentError(absl::StrCat("placement file ", spec, " has ", file.size(),
                                                   " layers; the model has ", num_moe_layers,
                                                   " MoE layers (or give one for all)"));
  }
  for (const ExpertPlacement& p : file) {
    if (p.num_ranks() != num_ranks || p.num_experts() != num_experts) {
      return absl::InvalidArgumentError(absl::StrCat(
          "placement file ", spec, " places ", p.num_experts(), " experts on ", p.num_ranks(),
          " ranks; this job has ", num_experts, " experts and ", num_ranks, " ranks"));
    }
  }
  if (file.size() == 1) {
    out.assign(num_moe_layers, file[0]);
  } else {
    out = std::move(file);
  }
  return out;
}

std::vector<bool> LocalExpertUnion(const std::vector<ExpertPlacement>& placements, int rank) {
  std::vector<bool> local(placements.empty() ? 0 : placements[0].num_experts(), false);
  for (const ExpertPlacement& p : placements) {
    for (int e : p.local_experts(rank)) local[e] = true;
  }
  return local;
}

uint64_t PlacementsFingerprint(const std::vector<ExpertPlacement>& placements) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the per-layer fingerprints
  for (const ExpertPlacement& p : placements) {
    uint64_t f = p.fingerprint();
    for (int i = 0; i < 8; ++i) {
      h ^= (f >> (8 * i)) & 0xff;
      h *= 1099511628211ull;
    }
  }
  return h;
}

}  // namespace tritmoe
