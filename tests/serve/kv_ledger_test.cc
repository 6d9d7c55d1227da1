// KvLedger: placement follows engine.h (fewest live sequences, ties to the lowest rank), budgets
// are per rank, usage is reserved / budget, and a release that matches no sequence is a bug.
#include "runtime/serve/kv_ledger.h"

#include "gtest/gtest.h"

namespace tritmoe {
namespace {

TEST(KvLedgerTest, PlacesOnTheRankWithFewestLiveSequences) {
  KvLedger l(3, 100);
  EXPECT_EQ(l.Start(10), 0);
  EXPECT_EQ(l.Start(20), 1);
  EXPECT_EQ(l.Start(30), 2);
  EXPECT_EQ(l.Start(40), 0);  // all tied at one: the lowest rank
  l.Release(1, 20);
  EXPECT_EQ(l.NextRank(), 1);  // placement counts sequences, not tokens
  EXPECT_EQ(l.Start(5), 1);
  EXPECT_EQ(l.live(0), 2);
  EXPECT_EQ(l.reserved(0), 50);
  EXPECT_EQ(l.reserved(1), 5);
  EXPECT_DOUBLE_EQ(l.usage(0), 0.5);
  EXPECT_DOUBLE_EQ(l.max_usage(), 0.5);
}

TEST(KvLedgerTest, FitsOnlyWithinTheNextRanksBudget) {
  KvLedger l(2, 40);
  l.Start(30);  // rank 0
  l.Start(5);   // rank 1
  // Rank 0 is next (1:1, lowest) and has 10 left, though rank 1 has 35.
  EXPECT_TRUE(l.FitsNext(10));
  EXPECT_FALSE(l.FitsNext(11));
  l.Release(1, 5);
  EXPECT_TRUE(l.FitsNext(40));
  EXPECT_FALSE(l.FitsNext(41));
}

TEST(KvLedgerDeathTest, ReleaseOfNothingIsABug) {
  KvLedger l(2, 40);
  l.Start(10);
  EXPECT_DEATH(l.Release(1, 10), "holds no such sequence");
  EXPECT_DEATH(l.Release(0, 11), "holds no such sequence");
  EXPECT_DEATH(KvLedger(0, 10), "0 ranks");
}

}  // namespace
}  // namespace tritmoe
