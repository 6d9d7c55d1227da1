// What one Engine rank runs its share of a step on: the CPU Model (runtime/model) or, with
// EngineOptions::device "cuda", the GPU model (runtime/gpu/gpu_model.h). Both have the same Step
// contract (a batch of sequences, each with its own KV cache; logits of the requested rows to the
// host); the Engine sees them only through this interface.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<StepBackend> b, LoadCpuBackend(path, model_options));
//   ASSIGN_OR_RETURN(std::unique_ptr<BackendCache> c, b->NewCache(capacity));
//   RETURN_IF_ERROR(b->Step({{c.get(), tokens, LogitsRequest::kLast}}, &out));
//
// Contracts:
//   * A BackendCache belongs to the backend that made it (passing another's is a programming
//     error) and must be destroyed before it.
//   * Step with an empty batch is valid and does no model work on a single-rank backend; with an
//     exchange (CPU or GPU) it still takes part in the MoE exchange (expert parallelism).
//   * StepGreedy: each sequence asks for kLast or kNone; next[s] is -1 for kNone, else the argmax
//     of its last row over the tokens other than its argmax_exclude (first maximum on ties, as
//     Sampler's greedy draw with that token masked), computed where the model runs, so that only
//     the tokens come back. Backends without it return Unimplemented; callers check
//     has_device_greedy().
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "comm/expert_placement.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/model.h"
#include "runtime/model/model_config.h"
#include "runtime/store/cache_stats.h"

namespace tritmoe {

// One sequence's KV cache, wherever it lives.
class BackendCache {
 public:
  virtual ~BackendCache() = default;
  virtual int64_t size() const = 0;
};

// One sequence's part of a step (as SequenceInput).
struct BackendInput {
  BackendCache* cache = nullptr;
  std::span<const int32_t> tokens;
  LogitsRequest logits = LogitsRequest::kLast;
  int32_t argmax_exclude = -1;  // StepGreedy: a token the argmax skips (EOS under ignore_eos)
};

class StepBackend {
 public:
  virtual ~StepBackend() = default;

  virtual const ModelConfig& config() const = 0;
  virtual const gguf::GgufModel& gguf() const = 0;  // tokenizer and other metadata
  virtual int64_t n_vocab() const = 0;
  virtual int64_t max_context() const = 0;
  // "cpu" or "cuda:<index> (<GPU name>)": for the start-up report.
  virtual std::string device_name() const = 0;

  virtual absl::StatusOr<std::unique_ptr<BackendCache>> NewCache(int64_t capacity) const = 0;
  virtual absl::Status Step(std::span<const BackendInput> batch, StepOutput* out) = 0;
  virtual bool has_device_greedy() const { return false; }
  virtual absl::Status StepGreedy(std::span<const BackendInput> /*batch*/,
                                  std::vector<int32_t>* /*next*/) {
    return absl::UnimplementedError("this backend has no device-side greedy sampling");
  }
  // The GPU expert cache's statistics, nullopt where there is none.
  virtual std::optional<ExpertCacheStats> expert_cache_stats() const { return std::nullopt; }
  // --gpu-exchange nccl: joins the expert exchange on device buffers over NCCL with the ranks of
  // `host` (collective: every rank calls it once, after an agreed start, before any step; a
  // failure on any rank fails it on every rank). placements: one per MoE layer. Afterwards the
  // routed experts of rank r are those placements give r. `host` must outlive the backend.
  virtual absl::Status ConnectDeviceExchange(Communicator& /*host*/,
                                             std::span<const ExpertPlacement> /*placements*/) {
    return absl::UnimplementedError("this backend has no device expert exchange");
  }
};

// The CPU Model of runtime/model (options as Model::Load).
absl::StatusOr<std::unique_ptr<StepBackend>> LoadCpuBackend(const std::string& path,
                                                            const ModelOptions& options);

// The GPU model on CUDA device `device`, with the KV cache type and max context of `options`;
// options.threads repack the weights at load. The GPU quantizes activations for quantized weights
// and runs float kernels for F16/F32/BF16 ones, in the absorbed MLA form, with the routed experts
// in device memory: options.precision kFloat, attention kNaive and expert_source are rejected
// (InvalidArgument naming the option). options.exchange / local_experts: expert parallelism,
// host-staged (gpu_model.h GpuModelOptions::exchange; every expert is still uploaded, only the
// local ones computed; with a cache, without prefetch and host-computed misses).
// expert_cache_bytes > 0: the
// routed experts in a GPU expert cache of that budget (gpu_model.h), with the next-layer
// prefetch when expert_prefetch. Builds without CUDA: Unimplemented ("built without CUDA").
absl::StatusOr<std::unique_ptr<StepBackend>> LoadGpuBackend(const std::string& path,
                                                            const ModelOptions& options, int device,
                                                            int64_t expert_cache_bytes = 0,
                                                            bool expert_prefetch = false);

// Whether this build has the device expert exchange (CUDA and NCCL): --gpu-exchange nccl.
bool GpuNcclExchangeBuilt();

}  // namespace tritmoe
