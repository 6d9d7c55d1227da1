// The GPU model behind the Engine's StepBackend interface (runtime/engine/step_backend.h).
#include <cuda_runtime_api.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/engine/step_backend.h"
#include "runtime/gpu/device_expert_exchange.h"
#include "runtime/gpu/gpu_kv_cache.h"
#include "runtime/gpu/gpu_model.h"
#ifdef TRITMOE_HAVE_NCCL
#include "runtime/gpu/nccl_communicator.h"
#endif

namespace tritmoe {
namespace {

class GpuCache final : public BackendCache {
 public:
  explicit GpuCache(std::unique_ptr<gpu::GpuKvCache> cache) : cache_(std::move(cache)) {}
  int64_t size() const override { return cache_->size(); }
  gpu::GpuKvCache* get() const { return cache_.get(); }

 private:
  std::unique_ptr<gpu::GpuKvCache> cache_;
};

class GpuBackend final : public StepBackend {
 public:
  GpuBackend(std::unique_ptr<gpu::GpuModel> model, std::string name, int device)
      : model_(std::move(model)), name_(std::move(name)), device_(device) {}

  const ModelConfig& config() const override { return model_->config(); }
  const gguf::GgufModel& gguf() const override { return model_->gguf(); }
  int64_t n_vocab() const override { return model_->n_vocab(); }
  int64_t max_context() const override { return model_->max_context(); }
  std::string device_name() const override { return name_; }

  absl::StatusOr<std::unique_ptr<BackendCache>> NewCache(int64_t capacity) const override {
    ASSIGN_OR_RETURN(std::unique_ptr<gpu::GpuKvCache> cache, model_->NewKvCache(capacity));
    return std::make_unique<GpuCache>(std::move(cache));
  }

  absl::Status Step(std::span<const BackendInput> batch, StepOutput* out) override {
    // A single rank with nothing to run (a step that only starts or releases sequences). With an
    // exchange the model still serves the other ranks' rows in every MoE layer.
    if (batch.empty() && !exchanges()) {
      *out = StepOutput{};
      out->n_vocab = model_->n_vocab();
      return absl::OkStatus();
    }
    return model_->Step(Inputs(batch), out);
  }

  bool has_device_greedy() const override { return true; }
  std::optional<ExpertCacheStats> expert_cache_stats() const override {
    return model_->expert_cache_stats();
  }
  absl::Status StepGreedy(std::span<const BackendInput> batch,
                          std::vector<int32_t>* next) override {
    if (batch.empty() && !exchanges()) {
      next->clear();
      return absl::OkStatus();
    }
    return model_->StepGreedy(Inputs(batch), next);
  }

  absl::Status ConnectDeviceExchange(Communicator& host,
                                     std::span<const ExpertPlacement> placements) override {
#ifdef TRITMOE_HAVE_NCCL
    if (dex_ != nullptr) return absl::FailedPreconditionError("device exchange already joined");
    const ModelConfig& c = model_->config();
    gpu::DeviceExchangeConfig xc;
    xc.n_expert = static_cast<int>(c.n_expert);
    xc.k = c.n_expert_used;
    xc.n_embd = c.n_embd;
    xc.max_ff = c.n_ff_exp;
    for (const ExpertPlacement& p : placements) {
      gpu::DeviceExchangeLayer l;
      l.replica_offsets.push_back(0);
      for (int e = 0; e < p.num_experts(); ++e) {
        for (int r : p.ranks_of(e)) l.replica_ranks.push_back(r);
        l.replica_offsets.push_back(static_cast<int32_t>(l.replica_ranks.size()));
      }
      xc.layers.push_back(std::move(l));
    }
    // Every step below is agreed over `host` (NcclCommunicator::Create), except the local checks
    // after it, which cannot differ between ranks (the same model and placements everywhere).
    ASSIGN_OR_RETURN(nccl_, gpu::NcclCommunicator::Create(host, device_));
    ASSIGN_OR_RETURN(dex_, gpu::DeviceExpertExchange::Create(xc, &host, nccl_.get()));
    return model_->AttachDeviceExchange(dex_.get());
#else
    (void)host;
    (void)placements;
    return absl::UnimplementedError(
        "--gpu-exchange nccl: this tritmoe was built without NCCL (nccl.h / libnccl not found)");
#endif
  }

 private:
  bool exchanges() const { return model_->options().exchange != nullptr || dex_ != nullptr; }
  std::span<const gpu::GpuSequenceInput> Inputs(std::span<const BackendInput> batch) {
    inputs_.clear();
    for (const BackendInput& in : batch) {
      inputs_.push_back(
          {static_cast<GpuCache*>(in.cache)->get(), in.tokens, in.logits, in.argmax_exclude});
    }
    return inputs_;
  }

#ifdef TRITMOE_HAVE_NCCL
  std::unique_ptr<gpu::NcclCommunicator> nccl_;
#endif
  std::unique_ptr<gpu::DeviceExpertExchange> dex_;  // over nccl_
  std::unique_ptr<gpu::GpuModel> model_;            // destroyed first: it points to dex_
  std::string name_;
  int device_ = 0;
  std::vector<gpu::GpuSequenceInput> inputs_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<StepBackend>> LoadGpuBackend(const std::string& path,
                                                            const ModelOptions& options, int device,
                                                            int64_t expert_cache_bytes,
                                                            bool expert_prefetch) {
  RETURN_IF_ERROR(options.Validate());
  if (options.precision == ActPrecision::kFloat) {
    return absl::InvalidArgumentError(
        "--precision float is CPU only: on the GPU, quantized weights always take quantized "
        "activations and F16/F32/BF16 weights float kernels");
  }
  if (options.attention == AttentionForm::kNaive) {
    return absl::InvalidArgumentError(
        "--attention naive is CPU only: the GPU runs MLA in the absorbed form");
  }
  if (options.expert_source != nullptr) {
    return absl::InvalidArgumentError(
        "the CPU expert cache / --expert-store do not apply to --device cuda: its expert cache "
        "(--expert-cache-mb) streams the experts from the model file held in pinned host "
        "memory");
  }
  if (!options.local_experts.empty() && options.exchange == nullptr) {
    return absl::InvalidArgumentError("local_experts without an expert exchange");
  }
  gpu::GpuModelOptions go;
  go.device = device;
  go.kv_type = options.kv_type;
  go.max_context = options.max_context;
  go.threads = options.threads;
  go.expert_cache_bytes = expert_cache_bytes;
  go.expert_prefetch = expert_prefetch;
  // Expert parallelism: every expert is uploaded (simple; only local_experts are computed).
  go.exchange = options.exchange;
  go.local_experts = options.local_experts;
  ASSIGN_OR_RETURN(std::unique_ptr<gpu::GpuModel> model, gpu::GpuModel::Load(path, go));
  std::string name = absl::StrCat("cuda:", device);
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, device) == cudaSuccess) {
    absl::StrAppend(&name, " (", prop.name, ")");
  } else {
    cudaGetLastError();
  }
  return std::make_unique<GpuBackend>(std::move(model), std::move(name), device);
}

bool GpuNcclExchangeBuilt() {
#ifdef TRITMOE_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

}  // namespace tritmoe
