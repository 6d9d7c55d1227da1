#include "runtime/model/moe.h"

#include <chrono>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/model/ffn.h"

namespace tritmoe {

absl::Status RunExperts(int layer_index, const LayerWeights& layer,
                        const std::vector<bool>& local_experts, ExpertSource* source,
                        ExpertBatch* batch, ThreadPool& pool, ActPrecision precision,
                        Workspace& ws) {
  const int64_t D = batch->n_embd;
  for (size_t i = 0; i < batch->experts.size(); ++i) {
    const int32_t e = batch->experts[i];
    if (e < 0 || e >= static_cast<int32_t>(local_experts.size()) || !local_experts[e]) {
      return absl::FailedPreconditionError(
          absl::StrCat("MoE: expert ", e, " was dispatched to a rank that does not hold it"));
    }
  }
  auto run = [&](size_t i, const FfnWeights& w) {
    const int64_t begin = batch->offsets[i], n = batch->offsets[i + 1] - begin;
    SwiGluFfn(w, batch->input.data() + begin * D, n, batch->output.data() + begin * D, pool,
              precision, ws);
  };
  if (source == nullptr) {
    for (size_t i = 0; i < batch->experts.size(); ++i) run(i, layer.Expert(batch->experts[i]));
    return absl::OkStatus();
  }
  return source->ForEachExpert(layer_index, batch->experts, run);
}

absl::Status MoeForward(const ModelConfig& config, int layer_index, const LayerWeights& layer,
                        const std::vector<bool>& local_experts, const float* h2, int64_t n_tokens,
                        float* y, ExpertExchange& exchange, ThreadPool& pool,
                        ActPrecision precision, Workspace& ws, ExpertSource* source,
                        Routing* routing_out, ModelStepTimes* times) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point t_begin = Clock::now();
  const int64_t D = config.n_embd;
  // First, so that a prefetch of the next layer's experts overlaps this whole block.
  if (source != nullptr) source->BeginLayer(layer_index, h2, n_tokens, pool);
  float* logits = ws.Get(Buf::kRouterLogits, n_tokens * config.n_expert);
  MatMul(layer.ffn_gate_inp, h2, n_tokens, logits, pool, ActPrecision::kFloat);
  Routing routing;
  Route(RouterConfig::FromModel(config), logits,
        layer.exp_probs_b.empty() ? nullptr : layer.exp_probs_b.data(), n_tokens, &routing);
  ExpertBatch batch;
  const Clock::time_point t_dispatch = Clock::now();
  RETURN_IF_ERROR(exchange.Dispatch(layer_index, h2, D, routing, &batch));
  const Clock::time_point t_experts = Clock::now();
  RETURN_IF_ERROR(
      RunExperts(layer_index, layer, local_experts, source, &batch, pool, precision, ws));
  const Clock::time_point t_combine = Clock::now();
  RETURN_IF_ERROR(exchange.Combine(batch, routing, y));
  const Clock::time_point t_shared = Clock::now();
  if (layer.shared.present()) {
    float* sh = ws.Get(Buf::kShared, n_tokens * D);
    SwiGluFfn(layer.shared, h2, n_tokens, sh, pool, precision, ws);
    for (int64_t i = 0; i < n_tokens * D; ++i) y[i] += sh[i];
  }
  if (routing_out != nullptr) *routing_out = std::move(routing);
  if (times != nullptr) {
    auto seconds = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
    const double dispatch = seconds(t_experts - t_dispatch);
    const double combine = seconds(t_shared - t_combine);
    const double all = seconds(Clock::now() - t_begin);
    if (exchange.communicates()) {
      times->dispatch_s += dispatch;
      times->combine_s += combine;
      times->moe_compute_s += all - dispatch - combine;
    } else {
      times->moe_compute_s += all;
    }
  }
  return absl::OkStatus();
}

}  // namespace tritmoe
