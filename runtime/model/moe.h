// One MoE FFN block: route -> dispatch (group rows by expert) -> expert compute -> combine
// (weighted sum in slot order) -> + shared expert (formats.md §4.4), and the hook through which
// the block gets its routed experts' weights (ExpertSource).
#pragma once

#include <cstdint>
#include <span>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "base/thread_pool.h"
#include "experts/matmul.h"
#include "runtime/model/expert_exchange.h"
#include "runtime/model/model_config.h"
#include "runtime/model/router.h"
#include "runtime/model/step_times.h"
#include "runtime/model/weights.h"
#include "runtime/model/workspace.h"

namespace tritmoe {

// Where the MoE block gets the weights of its routed experts. Without one (nullptr) they are read
// in place from the memory-mapped model file, at no cost. A source may hold only some experts at
// a time (the bounded expert cache of runtime/store): the block names the experts it needs and
// the source hands each one over once, in an order of its choosing, valid only during the
// callback. Results do not depend on the order: each expert writes only its own output rows.
// Called from the one thread that runs Model::Step.
class ExpertSource {
 public:
  virtual ~ExpertSource() = default;

  // Called once by Model::Load with the bound weights (which outlive the source's use): checks
  // that the source serves these experts (tensors, types, shapes) and keeps what it needs.
  virtual absl::Status Attach(const ModelConfig& config, const Weights& weights) = 0;

  // The MoE block of `layer` starts on h2 [n_tokens][n_embd] (its input after ffn_norm): a chance
  // to predict the next layer's experts and start fetching them. `pool` is free for the call.
  virtual void BeginLayer(int layer, const float* h2, int64_t n_tokens, ThreadPool& pool) {}

  // Calls fn(i, w) exactly once for each i in [0, experts.size()), w the weights of routed expert
  // experts[i] of `layer` (ascending, distinct, local). Called for every MoE layer of every step,
  // with no experts when the rank has none. Stops at the first error and returns it.
  virtual absl::Status ForEachExpert(int layer, std::span<const int32_t> experts,
                                     absl::FunctionRef<void(size_t, const FfnWeights&)> fn) = 0;
};

// Runs each expert of `batch` as a SwiGLU FFN over its rows (a small GEMM per matrix), writing
// batch->output, with the weights from `source` (nullptr: the layer's mapped weights). Every
// expert in the batch must be local (FailedPrecondition otherwise).
absl::Status RunExperts(int layer_index, const LayerWeights& layer,
                        const std::vector<bool>& local_experts, ExpertSource* source,
                        ExpertBatch* batch, ThreadPool& pool, ActPrecision precision,
                        Workspace& ws);

// layer_index: the model layer. h2: [n_tokens][n_embd] (after ffn_norm) -> y [n_tokens][n_embd].
// The router always runs in float (llama.cpp keeps it F32). source: where the routed experts'
// weights come from (nullptr: the mapped file). routing_out, when non-null, receives the choices.
// times, when non-null, gets this block's wall time ADDED to moe_compute_s, dispatch_s and
// combine_s (dispatch/combine only for an exchange that communicates(); else compute).
absl::Status MoeForward(const ModelConfig& config, int layer_index, const LayerWeights& layer,
                        const std::vector<bool>& local_experts, const float* h2, int64_t n_tokens,
                        float* y, ExpertExchange& exchange, ThreadPool& pool,
                        ActPrecision precision, Workspace& ws, ExpertSource* source = nullptr,
                        Routing* routing_out = nullptr, ModelStepTimes* times = nullptr);

}  // namespace tritmoe
