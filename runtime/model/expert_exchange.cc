#include "runtime/model/expert_exchange.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace tritmoe {

void GroupByExpert(const float* hidden, int64_t n_embd, const Routing& routing,
                   const std::vector<bool>* take, ExpertBatch* batch) {
  const int64_t n_choices = routing.n_tokens * routing.k;
  auto taken = [take](int32_t e) { return take == nullptr || (*take)[e]; };
  int32_t max_expert = -1;
  for (int64_t i = 0; i < n_choices; ++i) max_expert = std::max(max_expert, routing.experts[i]);
  // Counting sort by expert; stable, so rows keep (token, slot) order within an expert.
  std::vector<int64_t> next(max_expert + 1, 0);
  for (int64_t i = 0; i < n_choices; ++i) {
    if (taken(routing.experts[i])) ++next[routing.experts[i]];
  }
  batch->n_embd = n_embd;
  batch->experts.clear();
  batch->offsets.assign(1, 0);
  for (int32_t e = 0; e <= max_expert; ++e) {
    if (next[e] == 0) continue;
    const int64_t n = next[e];
    next[e] = batch->offsets.back();
    batch->experts.push_back(e);
    batch->offsets.push_back(batch->offsets.back() + n);
  }
  const int64_t n_rows = batch->offsets.back();
  batch->input.resize(n_rows * n_embd);
  batch->output.assign(n_rows * n_embd, 0.0f);
  batch->origin.resize(n_rows);
  for (int64_t i = 0; i < n_choices; ++i) {
    const int32_t e = routing.experts[i];
    if (!taken(e)) continue;
    const int64_t row = next[e]++;
    batch->origin[row] = i;
    const int64_t t = i / routing.k;
    std::memcpy(batch->input.data() + row * n_embd, hidden + t * n_embd, n_embd * sizeof(float));
  }
}

absl::Status LocalExpertExchange::Dispatch(int layer, const float* hidden, int64_t n_embd,
                                           const Routing& routing, ExpertBatch* batch) {
  GroupByExpert(hidden, n_embd, routing, nullptr, batch);
  return absl::OkStatus();
}

absl::Status LocalExpertExchange::Combine(const ExpertBatch& batch, const Routing& routing,
                                          float* y) {
  const int64_t n_choices = routing.n_tokens * routing.k;
  if (batch.n_rows() != n_choices) {
    return absl::InternalError(
        absl::StrCat("MoE combine: ", batch.n_rows(), " rows for ", n_choices, " choices"));
  }
  const int64_t D = batch.n_embd;
  std::vector<int64_t> row_of(n_choices);
  for (int64_t r = 0; r < n_choices; ++r) row_of[batch.origin[r]] = r;
  for (int64_t t = 0; t < routing.n_tokens; ++t) {
    float* yt = y + t * D;
    std::fill(yt, yt + D, 0.0f);
    for (int j = 0; j < routing.k; ++j) {
      const int64_t i = t * routing.k + j;
      const float w = routing.weights[i];
      const float* o = batch.output.data() + row_of[i] * D;
      for (int64_t d = 0; d < D; ++d) yt[d] += w * o[d];
    }
  }
  return absl::OkStatus();
}

}  // namespace tritmoe
