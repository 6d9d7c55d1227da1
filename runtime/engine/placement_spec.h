// Turns EngineOptions::placement into one ExpertPlacement per MoE layer:
//   "contiguous"            rank r holds experts [r*E/N, (r+1)*E/N) in every layer (default)
//   "balanced:<stats file>" ExpertPlacement::Balanced per layer from recorded routing statistics
//                           (RoutingStats file with one row per MoE layer, or one for all layers)
//   "balanced+R:<file>"     the same with R extra copies per layer of the hottest experts (each
//                           to a rank without one; an expert's tokens split evenly between its
//                           copies), so a single hot expert no longer bounds its rank's load
//   anything else           a placement file (SavePlacements: one entry, or one per MoE layer)
// Deterministic: every rank that reads the same inputs builds the same placements (the engine
// checks this with their fingerprints at start).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/expert_placement.h"

namespace tritmoe {

// Errors name the spec (or file) and what did not fit: rank count, expert count, layer count.
absl::StatusOr<std::vector<ExpertPlacement>> PlacementsFromSpec(const std::string& spec,
                                                                int num_moe_layers, int num_experts,
                                                                int num_ranks);

// Flags, per expert, of the experts `rank` holds in any layer (what the model binds as local).
std::vector<bool> LocalExpertUnion(const std::vector<ExpertPlacement>& placements, int rank);

// One hash of all layers' placements.
uint64_t PlacementsFingerprint(const std::vector<ExpertPlacement>& placements);

}  // namespace tritmoe
