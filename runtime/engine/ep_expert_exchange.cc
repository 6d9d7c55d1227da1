#include "runtime/engine/ep_expert_exchange.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/status_macros.h"

namespace tritmoe {

absl::StatusOr<std::unique_ptr<EpExpertExchange>> EpExpertExchange::Create(
    const ModelConfig& config, std::vector<ExpertPlacement> placements, int num_ranks) {
  const int n_moe = config.n_layer - config.n_dense_lead;
  if (n_moe < 1) return absl::InvalidArgumentError("the model has no MoE layer");
  if (static_cast<int>(placements.size()) != n_moe) {
    return absl::InvalidArgumentError(
        absl::StrCat(placements.size(), " expert placements for ", n_moe, " MoE layers"));
  }
  for (const ExpertPlacement& p : placements) {
    if (p.num_ranks() != num_ranks || p.num_experts() != config.n_expert) {
      return absl::InvalidArgumentError(absl::StrCat(
          "expert placement for ", p.num_experts(), " experts over ", p.num_ranks(),
          " ranks; the job has ", config.n_expert, " experts and ", num_ranks, " ranks"));
    }
  }
  return std::unique_ptr<EpExpertExchange>(new EpExpertExchange(config, std::move(placements)));
}

absl::Status EpExpertExchange::Connect(int max_tokens_per_rank, Communicator* comm) {
  if (exchange_ != nullptr) return absl::FailedPreconditionError("MoE exchange already connected");
  if (comm->size() != placements_[0].num_ranks()) {
    return absl::InvalidArgumentError(absl::StrCat("expert placement for ",
                                                   placements_[0].num_ranks(),
                                                   " ranks; the communicator has ", comm->size()));
  }
  MoeExchangeConfig mc;
  mc.num_experts = config_.n_expert;
  mc.hidden = config_.n_embd;
  mc.top_k = config_.n_expert_used;
  mc.max_tokens_per_rank = max_tokens_per_rank;
  mc.num_layers = static_cast<int>(placements_.size());
  ASSIGN_OR_RETURN(exchange_, MoeExchange::Create(mc, comm));
  return absl::OkStatus();
}

const ExpertPlacement& EpExpertExchange::placement(int layer) const {
  const int i = layer - config_.n_dense_lead;
  TM_CHECK(i >= 0 && i < static_cast<int>(placements_.size())) << "layer " << layer;
  return placements_[i];
}

absl::Status EpExpertExchange::Dispatch(int layer, const float* hidden, int64_t n_embd,
                                        const Routing& routing, ExpertBatch* batch) {
  if (exchange_ == nullptr) return absl::FailedPreconditionError("MoE exchange not connected");
  const int moe_layer = layer - config_.n_dense_lead;
  if (moe_layer < 0 || moe_layer >= static_cast<int>(placements_.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("MoE dispatch for layer ", layer, ", which is not an MoE layer"));
  }
  const int64_t n = routing.n_tokens;
  RETURN_IF_ERROR(
      exchange_->Dispatch(placements_[moe_layer], moe_layer, static_cast<int>(n),
                          {hidden, static_cast<size_t>(n * n_embd)},
                          {routing.experts.data(), static_cast<size_t>(n * routing.k)},
                          {routing.weights.data(), static_cast<size_t>(n * routing.k)}));
  n_tokens_ = n;

  // One batch row per CSR entry, in CSR order: row index = entry index = origin.
  const std::span<const int> locals = exchange_->local_experts();
  const std::span<const int64_t> offsets = exchange_->expert_offsets();
  const std::span<const int32_t> entry_rows = exchange_->entry_rows();
  const int64_t n_entries = static_cast<int64_t>(entry_rows.size());
  batch->n_embd = n_embd;
  batch->experts.clear();
  batch->offsets.assign(1, 0);
  for (size_t s = 0; s < locals.size(); ++s) {
    if (offsets[s + 1] == offsets[s]) continue;
    batch->experts.push_back(locals[s]);
    batch->offsets.push_back(offsets[s + 1]);
  }
  batch->input.resize(n_entries * n_embd);
  batch->output.assign(n_entries * n_embd, 0.0f);
  batch->origin.resize(n_entries);
  for (int64_t i = 0; i < n_entries; ++i) {
    std::memcpy(batch->input.data() + i * n_embd, exchange_->received_row(entry_rows[i]).data(),
                n_embd * sizeof(float));
    batch->origin[i] = i;
  }
  return absl::OkStatus();
}

absl::Status EpExpertExchange::Combine(const ExpertBatch& batch, const Routing& routing, float* y) {
  if (exchange_ == nullptr) return absl::FailedPreconditionError("MoE exchange not connected");
  const int64_t D = batch.n_embd;
  if (routing.n_tokens != n_tokens_ ||
      batch.n_rows() != static_cast<int64_t>(exchange_->entry_rows().size())) {
    return absl::InternalError(absl::StrCat("MoE combine: ", batch.n_rows(), " rows and ",
                                            routing.n_tokens, " tokens do not match the dispatch (",
                                            exchange_->entry_rows().size(), " rows, ", n_tokens_,
                                            " tokens)"));
  }
  for (int64_t r = 0; r < batch.n_rows(); ++r) {
    exchange_->AddExpertOutput(batch.origin[r], {batch.output.data() + r * D, size_t(D)});
  }
  return exchange_->Combine({y, static_cast<size_t>(n_tokens_ * D)});
}

}  // namespace tritmoe
