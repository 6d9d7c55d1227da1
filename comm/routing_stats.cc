#include "comm/routing_stats.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "comm/communicator.h"
#include "comm/file_util.h"
#include "nlohmann/json.hpp"

namespace tritmoe {
namespace {

constexpr char kFormat[] = "tritmoe.routing_stats";
constexpr int kVersion = 1;
constexpr char kTsvHeader[] = "layer\texpert\ttokens";
// Bounds for untrusted files: far above any real model, low enough to never allocate absurdly.
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxExperts = 1 << 16;

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

RoutingStats::RoutingStats(int num_layers, int num_experts)
    : num_layers_(num_layers),
      num_experts_(num_experts),
      counts_(static_cast<size_t>(num_layers) * num_experts, 0) {}

absl::StatusOr<RoutingStats> RoutingStats::Create(int num_layers, int num_experts) {
  if (num_layers < 1 || num_layers > kMaxLayers || num_experts < 1 || num_experts > kMaxExperts) {
    return absl::InvalidArgumentError(absl::StrCat("routing stats: bad shape ", num_layers,
                                                   " layers x ", num_experts, " experts"));
  }
  return RoutingStats(num_layers, num_experts);
}

std::vector<int64_t> RoutingStats::SumOverLayers() const {
  std::vector<int64_t> sum(num_experts_, 0);
  for (int l = 0; l < num_layers_; ++l) {
    for (int e = 0; e < num_experts_; ++e) sum[e] += count(l, e);
  }
  return sum;
}

absl::Status RoutingStats::Merge(const RoutingStats& other) {
  if (other.num_layers_ != num_layers_ || other.num_experts_ != num_experts_) {
    return absl::InvalidArgumentError(absl::StrCat("routing stats: cannot merge ",
                                                   other.num_layers_, "x", other.num_experts_,
                                                   " into ", num_layers_, "x", num_experts_));
  }
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  return absl::OkStatus();
}

absl::Status RoutingStats::AllReduceSum(Communicator& comm) {
  return comm.AllReduce(std::span<int64_t>(counts_), ReduceOp::kSum);
}

std::string RoutingStats::ToJson() const {
  std::string out = absl::StrCat("{\n  \"format\": \"", kFormat, "\",\n  \"version\": ", kVersion,
                                 ",\n  \"num_layers\": ", num_layers_,
                                 ",\n  \"num_experts\": ", num_experts_, ",\n  \"counts\": [");
  for (int l = 0; l < num_layers_; ++l) {
    absl::StrAppend(&out, l ? "," : "", "\n    [");
    for (int e = 0; e < num_experts_; ++e) absl::StrAppend(&out, e ? ", " : "", count(l, e));
    out += "]";
  }
  out += "\n  ]\n}\n";
  return out;
}

std::string RoutingStats::ToTsv() const {
  std::string out = absl::StrCat(kTsvHeader, "\n");
  for (int l = 0; l < num_layers_; ++l) {
    for (int e = 0; e < num_experts_; ++e)
      absl::StrAppend(&out, l, "\t", e, "\t", count(l, e), "\n");
  }
  return out;
}

absl::StatusOr<RoutingStats> RoutingStats::FromJson(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("routing stats: not a JSON object");
  }
  if (j.value("format", std::string()) != kFormat) {
    return absl::InvalidArgumentError(
        absl::StrCat("routing stats: \"format\" must be \"", kFormat, "\""));
  }
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"] != kVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("routing stats: unsupported \"version\" (expected ", kVersion, ")"));
  }
  for (const char* key : {"num_layers", "num_experts"}) {
    if (!j.contains(key) || !j[key].is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat("routing stats: \"", key, "\" must be an integer"));
    }
  }
  const int64_t layers = j["num_layers"].get<int64_t>();
  const int64_t experts = j["num_experts"].get<int64_t>();
  if (layers < 1 || layers > kMaxLayers || experts < 1 || experts > kMaxExperts) {
    return absl::InvalidArgumentError(
        absl::StrCat("routing stats: bad shape ", layers, " layers x ", experts, " experts"));
  }
  const nlohmann::json& counts = j["counts"];
  if (!counts.is_array() || static_cast<int64_t>(counts.size()) != layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("routing stats: \"counts\" must be an array of ", layers, " layers"));
  }
  RoutingStats stats(static_cast<int>(layers), static_cast<int>(experts));
  for (int64_t l = 0; l < layers; ++l) {
    if (!counts[l].is_array() || static_cast<int64_t>(counts[l].size()) != experts) {
      return absl::InvalidArgumentError(
          absl::StrCat("routing stats: counts[", l, "] must hold ", experts, " integers"));
    }
    for (int64_t e = 0; e < experts; ++e) {
      const nlohmann::json& c = counts[l][e];
      if (!c.is_number_integer() || c.get<int64_t>() < 0) {
        return absl::InvalidArgumentError(absl::StrCat("routing stats: counts[", l, "][", e, "] = ",
                                                       c.dump(), " is not a non-negative integer"));
      }
      stats.Add(static_cast<int>(l), static_cast<int>(e), c.get<int64_t>());
    }
  }
  return stats;
}

absl::StatusOr<RoutingStats> RoutingStats::FromTsv(const std::string& text) {
  // Collect first, then size the table from the largest indices seen.
  std::map<std::pair<int64_t, int64_t>, int64_t> cells;
  int64_t max_layer = -1, max_expert = -1;
  int line_no = 0;
  bool header_seen = false;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripSuffix(line, "\r");
    if (line.empty() || line[0] == '#') continue;
    if (!header_seen) {
      if (line != kTsvHeader) {
        return absl::InvalidArgumentError(absl::StrCat("routing stats TSV line ", line_no,
                                                       ": expected the header \"layer<TAB>"
                                                       "expert<TAB>tokens\""));
      }
      header_seen = true;
      continue;
    }
    std::vector<absl::string_view> fields = absl::StrSplit(line, '\t');
    int64_t v[3];
    if (fields.size() != 3 || !absl::SimpleAtoi(fields[0], &v[0]) ||
        !absl::SimpleAtoi(fields[1], &v[1]) || !absl::SimpleAtoi(fields[2], &v[2]) || v[0] < 0 ||
        v[1] < 0 || v[2] < 0 || v[0] >= kMaxLayers || v[1] >= kMaxExperts) {
      return absl::InvalidArgumentError(
          absl::StrCat("routing stats TSV line ", line_no,
                       ": expected three non-negative integers (layer, expert, tokens) in range"));
    }
    if (!cells.emplace(std::make_pair(v[0], v[1]), v[2]).second) {
      return absl::InvalidArgumentError(absl::StrCat("routing stats TSV line ", line_no, ": layer ",
                                                     v[0], " expert ", v[1], " appears twice"));
    }
    max_layer = std::max(max_layer, v[0]);
    max_expert = std::max(max_expert, v[1]);
  }
  if (cells.empty()) return absl::InvalidArgumentError("routing stats TSV: no data lines");
  RoutingStats stats(static_cast<int>(max_layer + 1), static_cast<int>(max_expert + 1));
  for (const auto& [key, tokens] : cells) {
    stats.Add(static_cast<int>(key.first), static_cast<int>(key.second), tokens);
  }
  return stats;
}

absl::Status RoutingStats::Save(const std::string& path) const {
  return comm_internal::WriteTextFile(path, EndsWith(path, ".json") ? ToJson() : ToTsv());
}

absl::StatusOr<RoutingStats> RoutingStats::Load(const std::string& path) {
  absl::StatusOr<std::string> text = comm_internal::ReadTextFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<RoutingStats> stats = EndsWith(path, ".json") ? FromJson(*text) : FromTsv(*text);
  if (!stats.ok()) {
    return absl::Status(stats.status().code(),
                        absl::StrCat(path, ": ", std::string(stats.status().message())));
  }
  return stats;
}

}  // namespace tritmoe
