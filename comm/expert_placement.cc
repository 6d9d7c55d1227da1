#include "comm/expert_placement.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "comm/file_util.h"
#include "nlohmann/json.hpp"

namespace tritmoe {
namespace {

constexpr char kFormat[] = "tritmoe.expert_placement";
constexpr int kVersion = 1;

uint64_t Fnv1a(uint64_t h, int64_t value) {
  for (int i = 0; i < 8; ++i) {
    h ^= static_cast<uint64_t>(value >> (8 * i)) & 0xff;
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace

absl::StatusOr<ExpertPlacement> ExpertPlacement::FromReplicaLists(
    int num_ranks, std::vector<std::vector<int>> expert_ranks) {
  if (num_ranks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("placement: num_ranks ", num_ranks, " < 1"));
  }
  if (expert_ranks.empty()) {
    return absl::InvalidArgumentError("placement: no experts");
  }
  ExpertPlacement p;
  const int num_experts = static_cast<int>(expert_ranks.size());
  p.expert_offsets_.assign(1, 0);
  std::vector<int> per_rank(num_ranks, 0);
  for (int e = 0; e < num_experts; ++e) {
    const std::vector<int>& ranks = expert_ranks[e];
    if (ranks.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("placement: expert ", e, " has no rank"));
    }
    for (size_t i = 0; i < ranks.size(); ++i) {
      if (ranks[i] < 0 || ranks[i] >= num_ranks) {
        return absl::InvalidArgumentError(absl::StrCat("placement: expert ", e, " is on rank ",
                                                       ranks[i], ", outside [0, ", num_ranks, ")"));
      }
      if (std::find(ranks.begin(), ranks.begin() + i, ranks[i]) != ranks.begin() + i) {
        return absl::InvalidArgumentError(
            absl::StrCat("placement: expert ", e, " is listed twice on rank ", ranks[i]));
      }
      p.expert_ranks_.push_back(ranks[i]);
      ++per_rank[ranks[i]];
    }
    p.expert_offsets_.push_back(static_cast<int>(p.expert_ranks_.size()));
  }
  p.rank_offsets_.assign(num_ranks + 1, 0);
  for (int r = 0; r < num_ranks; ++r) p.rank_offsets_[r + 1] = p.rank_offsets_[r] + per_rank[r];
  p.rank_experts_.resize(p.expert_ranks_.size());
  std::vector<int> cursor(p.rank_offsets_.begin(), p.rank_offsets_.end() - 1);
  // Experts visited in ascending order, so each rank's list comes out ascending.
  for (int e = 0; e < num_experts; ++e) {
    for (int r : p.ranks_of(e)) p.rank_experts_[cursor[r]++] = e;
  }
  uint64_t h = 0xcbf29ce484222325ull;
  h = Fnv1a(h, num_ranks);
  h = Fnv1a(h, num_experts);
  for (int v : p.expert_offsets_) h = Fnv1a(h, v);
  for (int v : p.expert_ranks_) h = Fnv1a(h, v);
  p.fingerprint_ = h;
  return p;
}

absl::StatusOr<ExpertPlacement> ExpertPlacement::Contiguous(int num_experts, int num_ranks) {
  if (num_experts < 1 || num_ranks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("contiguous placement: need >= 1 expert and >= 1 "
                     "rank, got ",
                     num_experts, " experts, ", num_ranks, " ranks"));
  }
  const int base = num_experts / num_ranks;
  const int extra = num_experts % num_ranks;
  std::vector<std::vector<int>> lists(num_experts);
  int e = 0;
  for (int r = 0; r < num_ranks; ++r) {
    const int n = base + (r < extra ? 1 : 0);
    for (int i = 0; i < n; ++i) lists[e++] = {r};
  }
  return FromReplicaLists(num_ranks, std::move(lists));
}

absl::StatusOr<ExpertPlacement> ExpertPlacement::Balanced(int num_ranks,
                                                          std::span<const int64_t> expert_load,
                                                          const BalanceOptions& options) {
  const int num_experts = static_cast<int>(expert_load.size());
  if (num_experts < 1 || num_ranks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("balanced placement: need >= 1 expert and >= 1 "
                     "rank, got ",
                     num_experts, " experts, ", num_ranks, " ranks"));
  }
  for (int e = 0; e < num_experts; ++e) {
    if (expert_load[e] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("balanced placement: expert ", e, " has negative load ", expert_load[e]));
    }
  }
  const int64_t extra = options.num_extra_replicas;
  if (extra < 0 || extra > int64_t{num_experts} * (num_ranks - 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "balanced placement: ", extra, " extra replicas is outside [0, ",
        int64_t{num_experts} * (num_ranks - 1), "] (at most one copy of an expert per rank)"));
  }
  const int64_t copies_total = num_experts + extra;
  const int64_t slots = options.slots_per_rank > 0 ? options.slots_per_rank
                                                   : (copies_total + num_ranks - 1) / num_ranks;
  if (options.slots_per_rank < 0 || slots * num_ranks < copies_total) {
    return absl::InvalidArgumentError(absl::StrCat("balanced placement: ", num_ranks, " ranks x ",
                                                   slots, " slots cannot hold ", copies_total,
                                                   " expert copies"));
  }

  // Replicas go one at a time to the expert with the most load per existing copy.
  std::vector<int> copies(num_experts, 1);
  for (int64_t i = 0; i < extra; ++i) {
    int best = -1;
    for (int e = 0; e < num_experts; ++e) {
      if (copies[e] >= num_ranks) continue;
      // load[e]/copies[e] > load[best]/copies[best], cross-multiplied to stay exact.
      if (best < 0 || static_cast<double>(expert_load[e]) * copies[best] >
                          static_cast<double>(expert_load[best]) * copies[e]) {
        best = e;
      }
    }
    ++copies[best];  // exists: extra <= E*(N-1) leaves some expert below N copies
  }

  struct Item {
    double load;
    int expert;
  };
  std::vector<Item> items;
  items.reserve(copies_total);
  for (int e = 0; e < num_experts; ++e) {
    for (int c = 0; c < copies[e]; ++c) {
      items.push_back({static_cast<double>(expert_load[e]) / copies[e], e});
    }
  }
  // Largest first; ties by expert id so the result does not depend on sort stability.
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.load != b.load ? a.load > b.load : a.expert < b.expert;
  });

  std::vector<double> rank_load(num_ranks, 0.0);
  std::vector<int64_t> rank_count(num_ranks, 0);
  std::vector<std::vector<int>> lists(num_experts);
  for (const Item& item : items) {
    std::vector<int>& holders = lists[item.expert];
    int best = -1;
    for (int r = 0; r < num_ranks; ++r) {
      if (rank_count[r] >= slots) continue;
      if (std::find(holders.begin(), holders.end(), r) != holders.end()) continue;
      if (best < 0 || rank_load[r] < rank_load[best] ||
          (rank_load[r] == rank_load[best] && rank_count[r] < rank_count[best])) {
        best = r;
      }
    }
    if (best < 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "balanced placement: no rank has a free slot for another copy of expert ", item.expert,
          " (", slots, " slots per rank); allow more slots or fewer replicas"));
    }
    holders.push_back(best);
    rank_load[best] += item.load;
    ++rank_count[best];
  }
  for (std::vector<int>& holders : lists) std::sort(holders.begin(), holders.end());
  return FromReplicaLists(num_ranks, std::move(lists));
}

int ExpertPlacement::max_local_experts() const {
  int m = 0;
  for (int r = 0; r < num_ranks(); ++r) m = std::max(m, rank_offsets_[r + 1] - rank_offsets_[r]);
  return m;
}

std::vector<double> ExpertPlacement::RankLoads(std::span<const int64_t> expert_load) const {
  std::vector<double> loads(num_ranks(), 0.0);
  const int n = std::min<int>(num_experts(), static_cast<int>(expert_load.size()));
  for (int e = 0; e < n; ++e) {
    std::span<const int> ranks = ranks_of(e);
    for (int r : ranks) loads[r] += static_cast<double>(expert_load[e]) / ranks.size();
  }
  return loads;
}

std::string ExpertPlacement::DebugString() const {
  std::string out;
  for (int e = 0; e < num_experts(); ++e) {
    absl::StrAppend(&out, e, "\t");
    std::span<const int> ranks = ranks_of(e);
    for (size_t i = 0; i < ranks.size(); ++i) absl::StrAppend(&out, i ? "," : "", ranks[i]);
    out += "\n";
  }
  return out;
}

double MaxOverMean(std::span<const double> loads) {
  if (loads.empty()) return 1.0;
  const double sum = std::accumulate(loads.begin(), loads.end(), 0.0);
  if (sum <= 0) return 1.0;
  return *std::max_element(loads.begin(), loads.end()) / (sum / loads.size());
}

std::string PlacementsToJson(std::span<const ExpertPlacement> layers) {
  // Written by hand so each expert's list stays on one short line: the file is meant to be read
  // and edited by people.
  std::string out = absl::StrCat(
      "{\n  \"format\": \"", kFormat, "\",\n  \"version\": ", kVersion,
      ",\n  \"num_ranks\": ", layers.empty() ? 0 : layers[0].num_ranks(),
      ",\n  \"num_experts\": ", layers.empty() ? 0 : layers[0].num_experts(), ",\n  \"layers\": [");
  for (size_t l = 0; l < layers.size(); ++l) {
    absl::StrAppend(&out, l ? "," : "", "\n    {\"experts\": [");
    for (int e = 0; e < layers[l].num_experts(); ++e) {
      absl::StrAppend(&out, e ? "," : "", e % 16 == 0 ? "\n      " : " ", "[");
      std::span<const int> ranks = layers[l].ranks_of(e);
      for (size_t i = 0; i < ranks.size(); ++i) absl::StrAppend(&out, i ? ", " : "", ranks[i]);
      out += "]";
    }
    out += "\n    ]}";
  }
  out += "\n  ]\n}\n";
  return out;
}

absl::StatusOr<std::vector<ExpertPlacement>> PlacementsFromJson(const std::string& json_text) {
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("placement file: not a JSON object");
  }
  if (j.value("format", std::string()) != kFormat) {
    return absl::InvalidArgumentError(
        absl::StrCat("placement file: \"format\" must be \"", kFormat, "\""));
  }
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"] != kVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("placement file: unsupported \"version\" (expected ", kVersion, ")"));
  }
  for (const char* key : {"num_ranks", "num_experts"}) {
    if (!j.contains(key) || !j[key].is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat("placement file: \"", key, "\" must be an integer"));
    }
  }
  const int64_t num_ranks = j["num_ranks"].get<int64_t>();
  const int64_t num_experts = j["num_experts"].get<int64_t>();
  if (!j.contains("layers") || !j["layers"].is_array() || j["layers"].empty()) {
    return absl::InvalidArgumentError("placement file: \"layers\" must be a non-empty array");
  }
  if (num_ranks < 1 || num_ranks > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("placement file: num_ranks ", num_ranks, " out of range"));
  }
  std::vector<ExpertPlacement> out;
  for (size_t l = 0; l < j["layers"].size(); ++l) {
    const nlohmann::json& layer = j["layers"][l];
    const std::string where = absl::StrCat("placement file: layers[", l, "]");
    if (!layer.is_object() || !layer.contains("experts") || !layer["experts"].is_array()) {
      return absl::InvalidArgumentError(where + ": needs an \"experts\" array");
    }
    const nlohmann::json& experts = layer["experts"];
    if (static_cast<int64_t>(experts.size()) != num_experts) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": ", experts.size(), " experts, expected num_experts = ", num_experts));
    }
    std::vector<std::vector<int>> lists(experts.size());
    for (size_t e = 0; e < experts.size(); ++e) {
      if (!experts[e].is_array()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ".experts[", e, "]: must be an array of ranks"));
      }
      for (const nlohmann::json& r : experts[e]) {
        if (!r.is_number_integer() || r.get<int64_t>() < 0 || r.get<int64_t>() >= num_ranks) {
          return absl::InvalidArgumentError(absl::StrCat(where, ".experts[", e, "]: ", r.dump(),
                                                         " is not a rank in [0, ", num_ranks, ")"));
        }
        lists[e].push_back(r.get<int>());
      }
    }
    absl::StatusOr<ExpertPlacement> p =
        ExpertPlacement::FromReplicaLists(static_cast<int>(num_ranks), std::move(lists));
    if (!p.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", std::string(p.status().message())));
    }
    out.push_back(*std::move(p));
  }
  return out;
}

absl::Status SavePlacements(const std::string& path, std::span<const ExpertPlacement> layers) {
  if (layers.empty()) return absl::InvalidArgumentError("SavePlacements: no layers");
  for (const ExpertPlacement& p : layers) {
    if (p.num_ranks() != layers[0].num_ranks() || p.num_experts() != layers[0].num_experts()) {
      return absl::InvalidArgumentError(
          "SavePlacements: all layers must have the same rank and expert counts");
    }
  }
  return comm_internal::WriteTextFile(path, PlacementsToJson(layers));
}

absl::StatusOr<std::vector<ExpertPlacement>> LoadPlacements(const std::string& path) {
  absl::StatusOr<std::string> text = comm_internal::ReadTextFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<ExpertPlacement>> layers = PlacementsFromJson(*text);
  if (!layers.ok()) {
    return absl::Status(layers.status().code(),
                        absl::StrCat(path, ": ", std::string(layers.status().message())));
  }
  return layers;
}

}  // namespace tritmoe
