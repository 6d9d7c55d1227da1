#include "runtime/serve/kv_ledger.h"

#include <algorithm>

#include "base/check.h"

namespace tritmoe {

KvLedger::KvLedger(int n_ranks, int64_t budget_per_rank)
    : budget_(budget_per_rank), live_(n_ranks, 0), reserved_(n_ranks, 0) {
  TM_CHECK(n_ranks >= 1 && budget_per_rank >= 1)
      << "KvLedger: " << n_ranks << " ranks, budget " << budget_per_rank;
}

int KvLedger::NextRank() const {
  // min_element returns the first minimum: ties go to the lowest rank, as in the Engine.
  return static_cast<int>(std::min_element(live_.begin(), live_.end()) - live_.begin());
}

bool KvLedger::FitsNext(int64_t tokens) const { return reserved_[NextRank()] + tokens <= budget_; }

int KvLedger::Start(int64_t tokens) {
  const int rank = NextRank();
  ++live_[rank];
  reserved_[rank] += tokens;
  return rank;
}

void KvLedger::Release(int rank, int64_t tokens) {
  TM_CHECK(rank >= 0 && rank < num_ranks() && live_[rank] > 0 && reserved_[rank] >= tokens)
      << "KvLedger: release of " << tokens << " tokens on rank " << rank
      << " that holds no such sequence";
  --live_[rank];
  reserved_[rank] -= tokens;
}

double KvLedger::usage(int rank) const {
  return static_cast<double>(reserved_[rank]) / static_cast<double>(budget_);
}

double KvLedger::max_usage() const {
  double m = 0;
  for (int r = 0; r < num_ranks(); ++r) m = std::max(m, usage(r));
  return m;
}

}  // namespace tritmoe
