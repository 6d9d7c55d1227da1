#include "runtime/model/repacked_expert_source.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace tritmoe {
namespace {

bool HasFasterLayout(const MatrixStack& s) {
  return s.data != nullptr && PreferredCpuLayout(s.type) != WeightLayout::kGguf;
}

}  // namespace

bool RepackedExpertSource::Worthwhile(const ModelConfig& config, const Weights& weights) {
  for (int il = 0; il < config.n_layer; ++il) {
    const LayerWeights& lw = weights.layer(il);
    if (HasFasterLayout(lw.gate_exps) || HasFasterLayout(lw.up_exps) ||
        HasFasterLayout(lw.down_exps)) {
      return true;
    }
  }
  return false;
}

absl::Status RepackedExpertSource::Attach(const ModelConfig& config, const Weights& weights) {
  experts_.assign(config.n_layer, {});
  copies_.clear();
  repacked_bytes_ = 0;
  // Copies one matrix when its type has a faster layout; else the mapped view.
  auto place = [&](const WeightView& w, const char* what, int il,
                   int e) -> absl::StatusOr<WeightView> {
    const WeightLayout layout = PreferredCpuLayout(w.type);
    if (layout == WeightLayout::kGguf) return w;
    absl::StatusOr<RepackedWeights> copy = RepackWeights(w, layout, pool_);
    if (!copy.ok()) {
      return absl::Status(copy.status().code(),
                          absl::StrCat("repacking blk.", il, ".ffn_", what, "_exps expert ", e,
                                       ": ", copy.status().message()));
    }
    repacked_bytes_ += copy->bytes();
    copies_.push_back(std::move(*copy));
    return copies_.back().view();
  };
  for (int il = 0; il < config.n_layer; ++il) {
    const LayerWeights& lw = weights.layer(il);
    if (lw.gate_exps.data == nullptr) continue;  // dense layer
    std::vector<FfnWeights>& layer = experts_[il];
    layer.resize(lw.gate_exps.count);
    for (int e = 0; e < lw.gate_exps.count; ++e) {
      if (!weights.IsLocalExpert(e)) continue;
      const FfnWeights mapped = lw.Expert(e);
      ASSIGN_OR_RETURN(layer[e].gate, place(mapped.gate, "gate", il, e));
      ASSIGN_OR_RETURN(layer[e].up, place(mapped.up, "up", il, e));
      ASSIGN_OR_RETURN(layer[e].down, place(mapped.down, "down", il, e));
    }
  }
  return absl::OkStatus();
}

absl::Status RepackedExpertSource::ForEachExpert(
    int layer, std::span<const int32_t> experts,
    absl::FunctionRef<void(size_t, const FfnWeights&)> fn) {
  // RunExperts has checked that every expert is local (the contract of ExpertSource).
  for (size_t i = 0; i < experts.size(); ++i) fn(i, experts_[layer][experts[i]]);
  return absl::OkStatus();
}

}  // namespace tritmoe
