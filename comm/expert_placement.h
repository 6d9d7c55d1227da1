// Which rank(s) own each routed expert of one MoE layer.
//
// A placement is built once at start-up, is identical on every rank (MoeExchange checks this
// with a fingerprint on every dispatch), and never changes afterwards. An expert may have several
// replicas on distinct ranks; tokens are then split between the replicas round robin.
//
//   contiguous: rank r owns experts [r*E/N .. (r+1)*E/N) (the first E mod N ranks get one extra
//               when N does not divide E; with E < N some ranks own none).
//   balanced:   greedy bin-packing of recorded per-expert token counts (largest first onto the
//               least-loaded rank with a free slot), optionally with extra replicas of the hottest
//               experts, so that max/mean rank load approaches 1.
//   from file:  JSON written by SavePlacements (one placement per MoE layer).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tritmoe {

struct BalanceOptions {
  // Extra copies to place beyond one per expert; they go, one at a time, to the expert with the
  // highest load per existing copy (an expert has at most one copy per rank).
  int num_extra_replicas = 0;
  // Experts (copies included) a rank may hold: memory is what limits a rank, not just load.
  // 0 means ceil((num_experts + num_extra_replicas) / num_ranks), the tightest that fits.
  int slots_per_rank = 0;
};

class ExpertPlacement {
 public:
  // Placement of `num_experts` experts over `num_ranks` ranks in contiguous blocks.
  static absl::StatusOr<ExpertPlacement> Contiguous(int num_experts, int num_ranks);

  // expert_ranks[e] lists the ranks holding expert e. Validated: every expert has at least one
  // rank, ranks are in [0, num_ranks) and distinct per expert.
  static absl::StatusOr<ExpertPlacement> FromReplicaLists(
      int num_ranks, std::vector<std::vector<int>> expert_ranks);

  // Load-balanced placement from per-expert token counts (expert_load[e] >= 0), deterministic for
  // given inputs. See BalanceOptions.
  static absl::StatusOr<ExpertPlacement> Balanced(int num_ranks,
                                                  std::span<const int64_t> expert_load,
                                                  const BalanceOptions& options = {});

  int num_experts() const { return static_cast<int>(expert_offsets_.size()) - 1; }
  int num_ranks() const { return static_cast<int>(rank_offsets_.size()) - 1; }

  // Ranks holding `expert`, in the order tokens are spread over them.
  std::span<const int> ranks_of(int expert) const {
    return {expert_ranks_.data() + expert_offsets_[expert],
            expert_ranks_.data() + expert_offsets_[expert + 1]};
  }
  // Experts held by `rank`, ascending (the rank's local expert slots, in order).
  std::span<const int> local_experts(int rank) const {
    return {rank_experts_.data() + rank_offsets_[rank],
            rank_experts_.data() + rank_offsets_[rank + 1]};
  }
  int max_local_experts() const;
  int total_copies() const { return static_cast<int>(expert_ranks_.size()); }

  // The rank that serves `expert` for a token; `route_key` (token index + source rank) picks
  // among replicas round robin, so a replicated expert's tokens split evenly between its copies.
  int RouteToRank(int expert, int64_t route_key) const {
    const int n = expert_offsets_[expert + 1] - expert_offsets_[expert];
    return expert_ranks_[expert_offsets_[expert] + static_cast<int>(route_key % n)];
  }

  // Expected tokens per rank for the given per-expert counts, replicas sharing equally.
  std::vector<double> RankLoads(std::span<const int64_t> expert_load) const;

  // Same on every rank iff the placements are equal; exchanged by MoeExchange to catch ranks
  // that loaded different placements.
  uint64_t fingerprint() const { return fingerprint_; }

  bool operator==(const ExpertPlacement& other) const {
    return expert_offsets_ == other.expert_offsets_ && expert_ranks_ == other.expert_ranks_ &&
           rank_offsets_ == other.rank_offsets_;
  }

  // One line per expert: "expert\trank[,rank...]". For logs.
  std::string DebugString() const;

 private:
  ExpertPlacement() = default;

  // CSR both ways: expert -> ranks, rank -> experts.
  std::vector<int> expert_offsets_, expert_ranks_;
  std::vector<int> rank_offsets_, rank_experts_;
  uint64_t fingerprint_ = 0;
};

// max / mean of `loads` (1.0 is perfect balance; 1.0 when all are zero).
double MaxOverMean(std::span<const double> loads);

// File I/O: a JSON object
//   {"format": "tritmoe.expert_placement", "version": 1, "num_ranks": N, "num_experts": E,
//    "layers": [{"experts": [[r, ...], ...]}, ...]}
// with one entry per MoE layer (a single entry means "the same for every layer"). All layers
// share num_ranks and num_experts.
std::string PlacementsToJson(std::span<const ExpertPlacement> layers);
absl::StatusOr<std::vector<ExpertPlacement>> PlacementsFromJson(const std::string& json);
absl::Status SavePlacements(const std::string& path, std::span<const ExpertPlacement> layers);
absl::StatusOr<std::vector<ExpertPlacement>> LoadPlacements(const std::string& path);

}  // namespace tritmoe
