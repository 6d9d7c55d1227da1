// One MoE FFN block: route -> dispatch (group rows by expert) -> expert compute -> combine
// (weighted sum in slot order) -> + shared expert (formats.md §4.4).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "base/thread_pool.h"
#include "experts/matmul.h"
#include "runtime/model/expert_exchange.h"
#include "runtime/model/model_config.h"
#include "runtime/model/router.h"
#include "runtime/model/weights.h"
#include "runtime/model/workspace.h"

namespace tritmoe {

// Runs each expert of `batch` as a SwiGLU FFN over its rows (a small GEMM per matrix), writing
// batch->output. Every expert in the batch must be local (FailedPrecondition otherwise).
absl::Status RunExperts(const LayerWeights& layer, const std::vector<bool>& local_experts,
                        ExpertBatch* batch, ThreadPool& pool, ActPrecision precision,
                        Workspace& ws);

// layer_index: the model layer. h2: [n_tokens][n_embd] (after ffn_norm) -> y [n_tokens][n_embd].
// The router always runs in float (llama.cpp keeps it F32). routing_out, when non-null, receives
// the choices.
absl::Status MoeForward(const ModelConfig& config, int layer_index, const LayerWeights& layer,
                        const std::vector<bool>& local_experts, const float* h2, int64_t n_tokens,
                        float* y, ExpertExchange& exchange, ThreadPool& pool,
                        ActPrecision precision, Workspace& ws, Routing* routing_out = nullptr);

}  // namespace tritmoe
