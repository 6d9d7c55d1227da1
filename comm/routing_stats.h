// Routing statistics: how many tokens the router sent to each (layer, expert). Recorded by
// MoeExchange on each rank, summed over ranks with AllReduceSum, saved, and fed to
// ExpertPlacement::Balanced on the next start.
//
// Files, chosen by extension (.json or anything else for TSV):
//   JSON: {"format": "tritmoe.routing_stats", "version": 1, "num_layers": L, "num_experts": E,
//          "counts": [[c(0,0), ..., c(0,E-1)], ...]}
//   TSV:  a header line "layer\texpert\ttokens", then one line per (layer, expert).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tritmoe {

class Communicator;

class RoutingStats {
 public:
  RoutingStats() = default;
  // All counts zero. num_layers, num_experts >= 1 (checked by the callers that build them from
  // validated configs; Create validates untrusted values).
  RoutingStats(int num_layers, int num_experts);
  static absl::StatusOr<RoutingStats> Create(int num_layers, int num_experts);

  int num_layers() const { return num_layers_; }
  int num_experts() const { return num_experts_; }

  void Add(int layer, int expert, int64_t tokens) {
    counts_[static_cast<size_t>(layer) * num_experts_ + expert] += tokens;
  }
  int64_t count(int layer, int expert) const {
    return counts_[static_cast<size_t>(layer) * num_experts_ + expert];
  }
  // [num_experts] counts of one layer.
  std::span<const int64_t> layer_counts(int layer) const {
    return {counts_.data() + static_cast<size_t>(layer) * num_experts_,
            static_cast<size_t>(num_experts_)};
  }
  // Per-expert sums over all layers (for one placement shared by every layer).
  std::vector<int64_t> SumOverLayers() const;
  void Clear() { std::fill(counts_.begin(), counts_.end(), 0); }
  // Adds `other`, which must have the same shape.
  absl::Status Merge(const RoutingStats& other);

  // Sums the counts of every rank (collective: every rank calls it, with the same shape).
  absl::Status AllReduceSum(Communicator& comm);

  std::string ToJson() const;
  std::string ToTsv() const;
  static absl::StatusOr<RoutingStats> FromJson(const std::string& text);
  static absl::StatusOr<RoutingStats> FromTsv(const std::string& text);
  absl::Status Save(const std::string& path) const;
  static absl::StatusOr<RoutingStats> Load(const std::string& path);

  bool operator==(const RoutingStats& other) const = default;

 private:
  int num_layers_ = 0;
  int num_experts_ = 0;
  std::vector<int64_t> counts_;  // [num_layers][num_experts]
};

}  // namespace tritmoe
