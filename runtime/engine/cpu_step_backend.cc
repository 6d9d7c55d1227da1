// The CPU Model behind the StepBackend interface (step_backend.h).
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/status_macros.h"
#include "runtime/engine/step_backend.h"
#include "runtime/model/kv_cache.h"

namespace tritmoe {
namespace {

class CpuCache final : public BackendCache {
 public:
  explicit CpuCache(std::unique_ptr<KvCache> cache) : cache_(std::move(cache)) {}
  int64_t size() const override { return cache_->size(); }
  KvCache* get() const { return cache_.get(); }

 private:
  std::unique_ptr<KvCache> cache_;
};

class CpuBackend final : public StepBackend {
 public:
  explicit CpuBackend(std::unique_ptr<Model> model) : model_(std::move(model)) {}

  const ModelConfig& config() const override { return model_->config(); }
  const gguf::GgufModel& gguf() const override { return model_->gguf(); }
  int64_t n_vocab() const override { return model_->n_vocab(); }
  int64_t max_context() const override { return model_->max_context(); }
  std::string device_name() const override { return "cpu"; }

  absl::StatusOr<std::unique_ptr<BackendCache>> NewCache(int64_t capacity) const override {
    ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache, model_->NewKvCache(capacity));
    return std::make_unique<CpuCache>(std::move(cache));
  }

  absl::Status Step(std::span<const BackendInput> batch, StepOutput* out) override {
    inputs_.clear();
    for (const BackendInput& in : batch) {
      inputs_.push_back({static_cast<CpuCache*>(in.cache)->get(), in.tokens, in.logits});
    }
    // Runs with an empty batch too: this rank's experts serve the other ranks' tokens.
    return model_->Step(inputs_, out);
  }

 private:
  std::unique_ptr<Model> model_;
  std::vector<SequenceInput> inputs_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<StepBackend>> LoadCpuBackend(const std::string& path,
                                                            const ModelOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Load(path, options));
  return std::make_unique<CpuBackend>(std::move(model));
}

}  // namespace tritmoe
