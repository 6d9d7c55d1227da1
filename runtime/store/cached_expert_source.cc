#include "runtime/store/cached_expert_source.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"

namespace tritmoe {
namespace {

std::string Describe(GgmlType type, const std::array<int64_t, 4>& ne) {
  return absl::StrCat(GetTypeTraits(type).name, " [", absl::StrJoin(ne, ", "), "]");
}

}  // namespace

absl::Status CachedExpertSource::Attach(const ModelConfig& config, const Weights& weights) {
  if (cache_ != nullptr) {
    return absl::FailedPreconditionError("expert source is already attached to a model");
  }
  if (store_ == nullptr) return absl::InvalidArgumentError("expert source has no store");
  config_ = config;
  weights_ = &weights;
  views_.assign(config.n_layer, {});
  std::vector<ExpertLayerLayout> layouts;
  static constexpr const char* kNames[3] = {"gate", "up", "down"};
  for (int il = 0; il < config.n_layer; ++il) {
    if (!config.IsMoeLayer(il)) continue;
    const LayerWeights& lw = weights.layer(il);
    const MatrixStack* stacks[3] = {&lw.gate_exps, &lw.up_exps, &lw.down_exps};
    ExpertLayerLayout lay;
    lay.layer = il;
    lay.n_expert = config.n_expert;
    for (int m = 0; m < 3; ++m) {
      const MatrixStack& st = *stacks[m];
      const std::string name = absl::StrCat("blk.", il, ".ffn_", kNames[m], "_exps.weight");
      const StoreTensor* t = store_->FindTensor(name);
      if (t == nullptr) {
        return absl::NotFoundError(
            absl::StrCat(store_->name(), ": no tensor ", name, ", which the model needs"));
      }
      const std::array<int64_t, 4> want = {st.cols, st.rows, st.count, 1};
      if (t->type != st.type || t->ne != want ||
          t->nbytes != static_cast<uint64_t>(st.matrix_bytes() * st.count) ||
          st.stride_bytes != st.matrix_bytes()) {
        return absl::FailedPreconditionError(
            absl::StrCat(store_->name(), ": tensor ", name, " is ", Describe(t->type, t->ne),
                         ", the model's is ", Describe(st.type, want), " (another model?)"));
      }
      lay.tensor[m] = name;
      lay.bytes[m] = static_cast<uint64_t>(st.matrix_bytes());
      views_[il][m] = WeightView{st.type, nullptr, st.rows, st.cols};
    }
    layouts.push_back(std::move(lay));
  }
  ASSIGN_OR_RETURN(
      cache_, ExpertCache::Create(store_, std::move(layouts), weights.local_experts(), options_));
  return absl::OkStatus();
}

void CachedExpertSource::BeginLayer(int layer, const float* h2, int64_t n_tokens,
                                    ThreadPool& pool) {
  if (cache_ == nullptr) return;
  cache_->CountTokens(layer, n_tokens);
  const int next = layer + 1;
  if (!options_.prefetch || n_tokens == 0 || n_tokens > kMaxPredictTokens ||
      next >= config_.n_layer || !config_.IsMoeLayer(next)) {
    return;
  }
  const LayerWeights& nl = weights_->layer(next);
  logits_.resize(n_tokens * config_.n_expert);
  MatMul(nl.ffn_gate_inp, h2, n_tokens, logits_.data(), pool, ActPrecision::kFloat);
  Route(RouterConfig::FromModel(config_), logits_.data(),
        nl.exp_probs_b.empty() ? nullptr : nl.exp_probs_b.data(), n_tokens, &routing_);
  counts_.assign(config_.n_expert, 0);
  for (int32_t e : routing_.experts) ++counts_[e];
  predicted_.clear();
  for (int32_t e = 0; e < config_.n_expert; ++e) {
    if (counts_[e] > 0) predicted_.push_back(e);
  }
  std::stable_sort(predicted_.begin(), predicted_.end(),
                   [&](int32_t a, int32_t b) { return counts_[a] > counts_[b]; });
  cache_->Prefetch(next, predicted_);
}

absl::Status CachedExpertSource::ForEachExpert(
    int layer, std::span<const int32_t> experts,
    absl::FunctionRef<void(size_t, const FfnWeights&)> fn) {
  if (cache_ == nullptr) {
    return absl::FailedPreconditionError("expert source used before Model::Load attached it");
  }
  if (layer < 0 || layer >= static_cast<int>(views_.size())) {
    return absl::InvalidArgumentError(absl::StrCat("expert source: no layer ", layer));
  }
  const std::array<WeightView, 3>& v = views_[layer];
  return cache_->ForEach(layer, experts, [&](size_t i, const ExpertBytes& b) {
    FfnWeights w;
    w.gate = {v[0].type, b[0], v[0].rows, v[0].cols};
    w.up = {v[1].type, b[1], v[1].rows, v[1].cols};
    w.down = {v[2].type, b[2], v[2].rows, v[2].cols};
    fn(i, w);
  });
}

ExpertCacheStats CachedExpertSource::Stats() const {
  return cache_ == nullptr ? ExpertCacheStats{} : cache_->Stats();
}

void CachedExpertSource::ResetStats() {
  if (cache_ != nullptr) cache_->ResetStats();
}

}  // namespace tritmoe
