// The Communicator contract and the MoE exchange on one process (LocalCommunicator); the
// multi-rank versions run under mpirun in mpi_comm_test.cc.
#include <cstring>
#include <numeric>
#include <vector>

#include "base/thread_pool.h"
#include "comm/communicator.h"
#include "comm/moe_exchange.h"
#include "gtest/gtest.h"
#include "tests/comm/moe_test_util.h"

namespace tritmoe {
namespace {

using ::tritmoe::testing::DistinctDestinations;
using ::tritmoe::testing::MakeMoeInputs;
using ::tritmoe::testing::MoeInputs;
using ::tritmoe::testing::ReferenceOutput;
using ::tritmoe::testing::RunScaleExperts;

TEST(LocalCommunicatorTest, CollectivesAreLocalCopies) {
  LocalCommunicator comm;
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.size(), 1);
  EXPECT_EQ(comm.local_rank(), 0);
  EXPECT_EQ(comm.local_size(), 1);

  const char send[] = "xxabcdef";
  char recv[8] = {};
  const int64_t sc[] = {6}, sd[] = {2}, rc[] = {6}, rd[] = {1};
  ASSERT_TRUE(comm.AllToAllV(send, sc, sd, recv, rc, rd).ok());
  EXPECT_EQ(std::string(recv + 1, 6), "abcdef");

  std::vector<double> v = {1.5, -2};
  ASSERT_TRUE(comm.AllReduce(std::span<double>(v), ReduceOp::kSum).ok());
  EXPECT_EQ(v, (std::vector<double>{1.5, -2}));

  std::vector<int64_t> one = {42}, all(1);
  ASSERT_TRUE(comm.AllGather(std::span<const int64_t>(one), std::span<int64_t>(all)).ok());
  EXPECT_EQ(all[0], 42);
  ASSERT_TRUE(comm.Broadcast(v.data(), 16, 0).ok());
  ASSERT_TRUE(comm.Barrier().ok());
  // Zero-size contributions with null buffers are allowed.
  const int64_t zero[] = {0};
  EXPECT_TRUE(comm.AllToAllV(nullptr, zero, zero, nullptr, zero, zero).ok());
  EXPECT_TRUE(comm.AllReduce(nullptr, 0, DataType::kFloat32, ReduceOp::kMax).ok());
  EXPECT_TRUE(comm.AllGather(nullptr, 0, nullptr).ok());
}

TEST(LocalCommunicatorTest, BadArgumentsAreErrors) {
  LocalCommunicator comm;
  char buf[8] = {};
  const int64_t one[] = {1}, minus[] = {-1}, zero[] = {0}, two[] = {0, 0};
  EXPECT_EQ(comm.AllToAllV(buf, minus, zero, buf, one, zero).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comm.AllToAllV(buf, two, two, buf, one, zero).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comm.AllToAllV(nullptr, one, zero, buf, one, zero).code(),
            absl::StatusCode::kInvalidArgument);
  // With one rank, send and receive counts must agree.
  EXPECT_EQ(comm.AllToAllV(buf, one, zero, buf + 4, zero, zero).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comm.Broadcast(buf, 1, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comm.AllReduce(nullptr, 3, DataType::kInt64, ReduceOp::kSum).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> small(1), wrong(2);
  EXPECT_EQ(comm.AllGather(std::span<const float>(small), std::span<float>(wrong)).code(),
            absl::StatusCode::kInvalidArgument);
}

MoeExchangeConfig SmallConfig() {
  MoeExchangeConfig c;
  c.num_experts = 12;
  c.hidden = 24;
  c.top_k = 4;
  c.max_tokens_per_rank = 40;
  c.num_layers = 2;
  return c;
}

TEST(MoeExchangeConfigTest, ValidatedWhenBuilt) {
  EXPECT_TRUE(SmallConfig().Validate().ok());
  LocalCommunicator comm;
  for (auto mutate : std::vector<void (*)(MoeExchangeConfig&)>{
           [](MoeExchangeConfig& c) { c.num_experts = 0; },
           [](MoeExchangeConfig& c) { c.hidden = 0; },
           [](MoeExchangeConfig& c) { c.top_k = 13; },  // more than experts
           [](MoeExchangeConfig& c) { c.top_k = 0; },
           [](MoeExchangeConfig& c) { c.max_tokens_per_rank = 0; },
           [](MoeExchangeConfig& c) { c.num_layers = 0; }}) {
    MoeExchangeConfig c = SmallConfig();
    mutate(c);
    EXPECT_EQ(MoeExchange::Create(c, &comm).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(MoeExchangeSizesTest, DerivedFromConfig) {
  MoeExchangeConfig c;
  c.num_experts = 256;
  c.hidden = 7168;
  c.top_k = 8;
  c.max_tokens_per_rank = 128;
  MoeExchangeSizes s = MoeExchangeSizes::Compute(c, 4);
  EXPECT_EQ(s.dispatch_row_bytes, 7168 * 4 + 8 * 8);  // already a multiple of 64
  EXPECT_EQ(s.combine_row_bytes, 7168 * 4);
  EXPECT_EQ(s.max_dests_per_token, 4);
  EXPECT_EQ(s.max_send_rows, 128 * 4);
  EXPECT_EQ(s.max_recv_rows, 128 * 4);
  EXPECT_EQ(s.max_entries, 128 * 4 * 8);
  EXPECT_EQ(MoeExchangeSizes::Compute(c, 16).max_dests_per_token, 8);
  c.hidden = 5;
  EXPECT_EQ(MoeExchangeSizes::Compute(c, 1).dispatch_row_bytes, 128);  // 20 + 64 -> 128
}

void ExpectExact(std::span<const float> got, std::span<const float> want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i], want[i]) << "element " << i;
  }
}

TEST(MoeExchangeLocalTest, DispatchCombineMatchesReferenceExactly) {
  LocalCommunicator comm;
  const MoeExchangeConfig c = SmallConfig();
  auto ex = MoeExchange::Create(c, &comm);
  ASSERT_TRUE(ex.ok()) << ex.status();
  auto placement = ExpertPlacement::Contiguous(c.num_experts, 1);
  ASSERT_TRUE(placement.ok());
  // Repeated rounds reuse the buffers; token counts vary, including 0 and the maximum.
  for (int round = 0; round < 6; ++round) {
    const int n_tokens = std::vector<int>{17, 0, 40, 1, 40, 23}[round];
    const MoeInputs in = MakeMoeInputs(c, 0, round, n_tokens, /*seed=*/5);
    ASSERT_TRUE((*ex)->Dispatch(*placement, round % 2, n_tokens, in.x, in.ids, in.weights).ok());
    // One rank: each token with any expert arrives exactly once.
    EXPECT_EQ((*ex)->num_received_rows(), DistinctDestinations(c, *placement, 0, in));
    RunScaleExperts(**ex);
    std::vector<float> out(static_cast<size_t>(n_tokens) * c.hidden, -1.0f);
    ASSERT_TRUE((*ex)->Combine(out).ok());
    ExpectExact(out, ReferenceOutput(c, in));
  }
  EXPECT_EQ((*ex)->stats().dispatches, 6);
  EXPECT_EQ((*ex)->stats().combines, 6);
  // Nothing crosses to another rank.
  EXPECT_EQ((*ex)->stats().dispatch_bytes_sent, 0);
  EXPECT_GT((*ex)->stats().self_bytes, 0);
}

TEST(MoeExchangeLocalTest, CsrGroupsRowsByExpert) {
  LocalCommunicator comm;
  MoeExchangeConfig c = SmallConfig();
  auto ex = MoeExchange::Create(c, &comm);
  ASSERT_TRUE(ex.ok());
  auto placement = ExpertPlacement::Contiguous(c.num_experts, 1);
  // Token 0 -> experts 3, 7; token 1 -> expert 3 (plus unused slots); token 2 -> none.
  std::vector<float> x(3 * c.hidden);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i);
  const std::vector<int32_t> ids = {3, 7, -1, -1, -1, 3, -1, -1, -1, -1, -1, -1};
  const std::vector<float> w = {0.5f, 0.25f, 0, 0, 0, 0.75f, 0, 0, 0, 0, 0, 0};
  ASSERT_TRUE((*ex)->Dispatch(*placement, 0, 3, x, ids, w).ok());
  EXPECT_EQ((*ex)->num_received_rows(), 2);
  ASSERT_EQ((*ex)->local_experts().size(), 12u);
  std::span<const int64_t> off = (*ex)->expert_offsets();
  EXPECT_EQ(off[3], 0);
  EXPECT_EQ(off[4], 2);  // expert 3: rows 0 and 1
  EXPECT_EQ(off[7], 2);
  EXPECT_EQ(off[8], 3);  // expert 7: row 0
  EXPECT_EQ(off[12], 3);
  EXPECT_EQ((*ex)->entry_rows()[0], 0);
  EXPECT_EQ((*ex)->entry_weights()[0], 0.5f);
  EXPECT_EQ((*ex)->entry_rows()[1], 1);
  EXPECT_EQ((*ex)->entry_weights()[1], 0.75f);
  EXPECT_EQ((*ex)->entry_rows()[2], 0);
  EXPECT_EQ((*ex)->entry_weights()[2], 0.25f);
  EXPECT_EQ((*ex)->received_row(1)[0], static_cast<float>(c.hidden));  // token 1's first value
  EXPECT_EQ((*ex)->stats().routing.count(0, 3), 2);
  EXPECT_EQ((*ex)->stats().routing.count(0, 7), 1);
  std::vector<float> out(3 * c.hidden);
  ASSERT_TRUE((*ex)->Combine(out).ok());  // no expert ran: everything combines to zero
  for (float v : out) ASSERT_EQ(v, 0.0f);
}

TEST(MoeExchangeLocalTest, ThreadPoolGivesTheSameBits) {
  LocalCommunicator comm;
  const MoeExchangeConfig c = SmallConfig();
  ThreadPool pool(3);
  auto ex = MoeExchange::Create(c, &comm, &pool);
  ASSERT_TRUE(ex.ok());
  auto placement = ExpertPlacement::Contiguous(c.num_experts, 1);
  const MoeInputs in = MakeMoeInputs(c, 0, 0, 40, 9);
  ASSERT_TRUE((*ex)->Dispatch(*placement, 0, 40, in.x, in.ids, in.weights).ok());
  RunScaleExperts(**ex);
  std::vector<float> out(40 * c.hidden);
  ASSERT_TRUE((*ex)->Combine(out).ok());
  ExpectExact(out, ReferenceOutput(c, in));
}

TEST(MoeExchangeLocalTest, BadInputIsRejected) {
  LocalCommunicator comm;
  const MoeExchangeConfig c = SmallConfig();
  auto ex = MoeExchange::Create(c, &comm);
  ASSERT_TRUE(ex.ok());
  auto placement = ExpertPlacement::Contiguous(c.num_experts, 1);
  MoeInputs in = MakeMoeInputs(c, 0, 0, 4, 1);
  std::vector<float> out(4 * c.hidden);

  EXPECT_EQ((*ex)->Combine(out).code(), absl::StatusCode::kFailedPrecondition);
  in.ids[5] = c.num_experts;
  EXPECT_EQ((*ex)->Dispatch(*placement, 0, 4, in.x, in.ids, in.weights).code(),
            absl::StatusCode::kInvalidArgument);
  in.ids[5] = -2;
  EXPECT_EQ((*ex)->Dispatch(*placement, 0, 4, in.x, in.ids, in.weights).code(),
            absl::StatusCode::kInvalidArgument);
  in.ids[5] = 0;
  EXPECT_EQ((*ex)->Dispatch(*placement, 2, 4, in.x, in.ids, in.weights).code(),
            absl::StatusCode::kInvalidArgument);  // layer out of range
  EXPECT_EQ((*ex)->Dispatch(*placement, 0, 3, in.x, in.ids, in.weights).code(),
            absl::StatusCode::kInvalidArgument);  // shapes disagree with n_tokens
  EXPECT_EQ((*ex)->Dispatch(*placement, 0, 41, in.x, in.ids, in.weights).code(),
            absl::StatusCode::kInvalidArgument);  // above max_tokens_per_rank
  auto two_ranks = ExpertPlacement::Contiguous(c.num_experts, 2);
  EXPECT_EQ((*ex)->Dispatch(*two_ranks, 0, 4, in.x, in.ids, in.weights).code(),
            absl::StatusCode::kInvalidArgument);
  auto other_experts = ExpertPlacement::Contiguous(c.num_experts + 1, 1);
  EXPECT_EQ((*ex)->Dispatch(*other_experts, 0, 4, in.x, in.ids, in.weights).code(),
            absl::StatusCode::kInvalidArgument);
  // A failed dispatch leaves nothing to combine; a good one works afterwards.
  EXPECT_EQ((*ex)->Combine(out).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*ex)->Dispatch(*placement, 0, 4, in.x, in.ids, in.weights).ok());
  EXPECT_EQ((*ex)->Combine(std::span<float>(out).first(3)).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tritmoe
