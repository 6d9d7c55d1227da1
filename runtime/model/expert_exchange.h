// The two data movements around the routed experts of an MoE layer. Dispatch turns every
// (token, slot) choice into one input row for the rank that holds the chosen expert, grouped by
// expert; Combine brings the expert outputs back to the token's rank and forms the weighted sum.
// On one rank both are local copies (LocalExpertExchange); expert parallelism puts the
// all-to-all of comm/moe_exchange.h behind the same interface (an adapter: its CSR of received
// rows becomes the ExpertBatch, origin = its entry index). Every rank calls Dispatch and Combine
// in every MoE layer of every step, with zero rows when it has none.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "runtime/model/router.h"

namespace tritmoe {

// This rank's routed-expert work for one layer: rows of hidden states grouped by expert.
struct ExpertBatch {
  int64_t n_embd = 0;
  std::vector<int32_t> experts;  // experts with at least one row, ascending
  // [experts.size() + 1]: expert i owns rows [offsets[i], offsets[i + 1]).
  std::vector<int64_t> offsets;
  std::vector<float> input;   // [n_rows][n_embd]
  std::vector<float> output;  // [n_rows][n_embd], the unweighted expert outputs
  // Per row, where its output goes back to; opaque to everything but the exchange.
  std::vector<int64_t> origin;

  int64_t n_rows() const { return offsets.empty() ? 0 : offsets.back(); }
};

class ExpertExchange {
 public:
  virtual ~ExpertExchange() = default;

  // layer: the model layer (placement and routing statistics may depend on it). hidden:
  // [n_tokens][n_embd] (this rank's tokens); routing: their choices. Fills *batch with the rows of
  // the experts local to this rank (input sized and filled, output sized).
  virtual absl::Status Dispatch(int layer, const float* hidden, int64_t n_embd,
                                const Routing& routing, ExpertBatch* batch) = 0;

  // batch: as filled by Dispatch, with output computed. Writes y [n_tokens][n_embd]:
  // y[t] = sum over slots j in order of routing.weights[t, j] * output of (t, j).
  virtual absl::Status Combine(const ExpertBatch& batch, const Routing& routing, float* y) = 0;

  // Whether Dispatch/Combine move rows between processes (false: local copies only). Decides
  // whether their time counts as communication or as MoE compute (ModelStepTimes).
  virtual bool communicates() const { return false; }
};

// One rank holding every expert: dispatch gathers rows, combine scatters them back.
class LocalExpertExchange final : public ExpertExchange {
 public:
  absl::Status Dispatch(int layer, const float* hidden, int64_t n_embd, const Routing& routing,
                        ExpertBatch* batch) override;
  absl::Status Combine(const ExpertBatch& batch, const Routing& routing, float* y) override;
};

// Builds the rows of `batch` for the (token, slot) choices whose expert e has take[e] set (all
// choices when take is null), origin = t * k + slot, grouped by expert ascending and in (token,
// slot) order within an expert. Shared by exchanges: the local one takes every choice.
void GroupByExpert(const float* hidden, int64_t n_embd, const Routing& routing,
                   const std::vector<bool>* take, ExpertBatch* batch);

}  // namespace tritmoe
