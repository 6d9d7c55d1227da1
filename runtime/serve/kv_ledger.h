// KV cache capacity accounted per rank, on the scheduler thread.
//
// Attention is data-parallel: a sequence's KV cache lives on one rank, chosen by the Engine when
// the sequence starts (engine.h: the rank with the fewest live sequences, ties to the lowest rank;
// a sequence released in a step stays live until that step has run). The scheduler decides every
// start and every release, so it can replay that rule exactly: the ledger holds, per rank, the
// live sequences and the KV tokens they reserved (prompt + max_tokens), and tells where the next
// started sequence will land. A request is admitted only when its reservation fits that rank's
// budget; otherwise it waits (that rank's sequences end in bounded time, and then it fits: a
// request larger than one rank's budget is refused at submission instead).
//
//   KvLedger ledger(/*n_ranks=*/2, /*budget_per_rank=*/4096);
//   if (ledger.FitsNext(capacity)) { int rank = ledger.Start(capacity); ... }
//   ...                                   // after the step that released it has run:
//   ledger.Release(rank, capacity);
#pragma once

#include <cstdint>
#include <vector>

namespace tritmoe {

class KvLedger {
 public:
  // n_ranks >= 1, budget_per_rank >= 1 (checked: the scheduler validated its options).
  KvLedger(int n_ranks, int64_t budget_per_rank);

  int num_ranks() const { return static_cast<int>(live_.size()); }
  int64_t budget_per_rank() const { return budget_; }

  // The rank the Engine will place the next started sequence on.
  int NextRank() const;
  // Whether `tokens` more fit on NextRank().
  bool FitsNext(int64_t tokens) const;
  // Records a sequence started on NextRank() with `tokens` reserved; returns that rank.
  int Start(int64_t tokens);
  // Records the end of a sequence once the step that released it has run.
  void Release(int rank, int64_t tokens);

  int live(int rank) const { return live_[rank]; }
  int64_t reserved(int rank) const { return reserved_[rank]; }
  // reserved / budget, 0..1, of one rank.
  double usage(int rank) const;
  double max_usage() const;

 private:
  const int64_t budget_;
  std::vector<int> live_;          // [rank]: live sequences
  std::vector<int64_t> reserved_;  // [rank]: KV tokens reserved by them
};

}  // namespace tritmoe
