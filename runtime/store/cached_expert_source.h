// The MoE layer's routed experts from a bounded ExpertCache backed by a model store: the
// ExpertSource (runtime/model/moe.h) that puts the cache under Model::Step.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<ExpertStore> store, OpenExpertStore(spec));
//   CachedExpertSource source(store.get(), {.budget_bytes = 64 << 20, .prefetch = true});
//   options.expert_source = &source;              // ModelOptions
//   ASSIGN_OR_RETURN(auto model, Model::Load(path, options));   // attaches the source
//   ... model->Step(...) ...; source.Stats().Summary()
//
// Prefetch prediction: at the start of MoE layer l the next layer's router (its ffn_gate_inp and
// selection bias) is applied to layer l's normalized input, an approximation of what layer l + 1
// will see (Eliseev & Mazur 2023; offload-anchors.md §3.6); the predicted experts, most chosen
// first, are handed to the cache's background loader. Skipped for steps of more than
// kMaxPredictTokens tokens, which touch most experts anyway.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/model/model_config.h"
#include "runtime/model/moe.h"
#include "runtime/model/router.h"
#include "runtime/model/weights.h"
#include "runtime/store/expert_cache.h"
#include "runtime/store/expert_store.h"

namespace tritmoe {

class CachedExpertSource final : public ExpertSource {
 public:
  static constexpr int64_t kMaxPredictTokens = 256;

  // store: not owned; must outlive the source.
  CachedExpertSource(ExpertStore* store, const ExpertCacheOptions& options)
      : store_(store), options_(options) {}

  // Checks that the store holds every MoE layer's expert tensors with the model's types and
  // shapes (NotFound / FailedPrecondition naming the store and tensor), then builds the cache.
  absl::Status Attach(const ModelConfig& config, const Weights& weights) override;
  void BeginLayer(int layer, const float* h2, int64_t n_tokens, ThreadPool& pool) override;
  absl::Status ForEachExpert(int layer, std::span<const int32_t> experts,
                             absl::FunctionRef<void(size_t, const FfnWeights&)> fn) override;

  // Empty stats before Attach.
  ExpertCacheStats Stats() const;
  void ResetStats();
  ExpertCache* cache() { return cache_.get(); }

 private:
  ExpertStore* store_;
  ExpertCacheOptions options_;
  ModelConfig config_;
  const Weights* weights_ = nullptr;
  std::vector<std::array<WeightView, 3>> views_;  // per model layer: type and shape, no data
  std::unique_ptr<ExpertCache> cache_;
  // Prediction temporaries.
  std::vector<float> logits_;
  Routing routing_;
  std::vector<int32_t> counts_;
  std::vector<int32_t> predicted_;
};

}  // namespace tritmoe
