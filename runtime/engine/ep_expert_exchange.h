// The model's ExpertExchange over comm/moe_exchange.h: Model::Step's MoE layers run
// expert-parallel across the ranks of a Communicator. Each rank passes its own tokens; Dispatch
// returns the rows of this rank's experts (from every rank), Combine sends the expert outputs
// back and leaves each token's weighted sum on its owner.
//
// Mapping onto MoeExchange: the ExpertBatch is MoeExchange's CSR flattened -- one batch row per
// CSR entry (a received row may feed several local experts), experts ascending (the placement's
// local slot order), origin = the entry index. Combine adds each output row with its entry's
// weight into the received row's combine buffer, then runs the all-to-all back.
//
// Numerics: a token's sum runs over its destination ranks in top-k order and, within a rank,
// over experts ascending, so it differs from LocalExpertExchange (slots in top-k order) by float
// reordering only; the result is the same for any number of ranks up to that reordering.
// Lockstep: every rank calls Dispatch and Combine for every MoE layer of every step (zero tokens
// allowed); see MoeExchange for how bad input on one rank fails on all of them.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "comm/expert_placement.h"
#include "comm/moe_exchange.h"
#include "runtime/model/expert_exchange.h"
#include "runtime/model/model_config.h"

namespace tritmoe {

class EpExpertExchange final : public ExpertExchange {
 public:
  // placements: one per MoE layer (model layer il uses placements[il - config.n_dense_lead]),
  // each over `num_ranks` ranks and config.n_expert experts; identical on every rank. Local:
  // validates shapes only; Connect makes it usable.
  static absl::StatusOr<std::unique_ptr<EpExpertExchange>> Create(
      const ModelConfig& config, std::vector<ExpertPlacement> placements, int num_ranks);

  // Collective over `comm` (size = num_ranks): creates the MoeExchange, which checks that every
  // rank passed the same shapes. max_tokens_per_rank: the most tokens one rank passes to one
  // step. `comm` must outlive this object.
  absl::Status Connect(int max_tokens_per_rank, Communicator* comm);

  absl::Status Dispatch(int layer, const float* hidden, int64_t n_embd, const Routing& routing,
                        ExpertBatch* batch) override;
  absl::Status Combine(const ExpertBatch& batch, const Routing& routing, float* y) override;
  // With one rank the all-to-alls are local copies: their time is MoE compute, not communication.
  bool communicates() const override { return placements_[0].num_ranks() > 1; }

  // Valid after Connect.
  const MoeExchange& exchange() const { return *exchange_; }
  // The placement of model layer `layer` (an MoE layer).
  const ExpertPlacement& placement(int layer) const;
  const std::vector<ExpertPlacement>& placements() const { return placements_; }

 private:
  EpExpertExchange(const ModelConfig& config, std::vector<ExpertPlacement> placements)
      : config_(config), placements_(std::move(placements)) {}

  const ModelConfig config_;
  const std::vector<ExpertPlacement> placements_;
  std::unique_ptr<MoeExchange> exchange_;
  int64_t n_tokens_ = 0;  // of the last Dispatch
};

}  // namespace tritmoe
