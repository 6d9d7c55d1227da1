// Multi-rank checks of the MPI Communicator and the MoE exchange; run by ctest under
// tests/mpi/mpirun.sh with np = 2, 3, 4. Every rank checks what it received against values
// encoded from (sender, receiver, index), as nccl-tests does, then the failure counts are summed
// over ranks: the exit code is non-zero on every rank if any check failed anywhere.
//
//   mpi_comm_test [--inject-error]   (--inject-error corrupts one received byte on the last rank
//                                     so the checks must fail: proves the test can fail)
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "comm/expert_placement.h"
#include "comm/moe_exchange.h"
#include "comm/mpi_communicator.h"
#include "tests/comm/moe_test_util.h"

namespace tritmoe {
namespace {

int g_failures = 0;
int g_rank = -1;
bool g_inject_error = false;

#define EXPECT_OK(expr)                                                                           \
  do {                                                                                            \
    const absl::Status s_ = (expr);                                                               \
    if (!s_.ok()) {                                                                               \
      ++g_failures;                                                                               \
      std::fprintf(stderr, "[rank %d] %s:%d: %s failed: %s\n", g_rank, __FILE__, __LINE__, #expr, \
                   s_.ToString().c_str());                                                        \
    }                                                                                             \
  } while (0)

#define EXPECT_TRUE_MSG(cond, ...)                                                               \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      ++g_failures;                                                                              \
      std::fprintf(stderr, "[rank %d] %s:%d: expected %s: ", g_rank, __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                                         \
      std::fprintf(stderr, "\n");                                                                \
    }                                                                                            \
  } while (0)

// Byte i of the block rank `from` sends to rank `to`.
uint8_t Pattern(int from, int to, int64_t i) {
  return static_cast<uint8_t>((from * 31 + to * 7 + i * 13 + (i >> 8)) & 0xff);
}

void TestIdentity(Communicator& comm) {
  EXPECT_TRUE_MSG(comm.rank() >= 0 && comm.rank() < comm.size(), "rank %d size %d", comm.rank(),
                  comm.size());
  // All test ranks run on this one host.
  EXPECT_TRUE_MSG(comm.local_size() == comm.size(), "local_size %d size %d", comm.local_size(),
                  comm.size());
  std::vector<int64_t> ranks(comm.size()), locals(comm.size());
  const int64_t mine[2] = {comm.rank(), comm.local_rank()};
  std::vector<int64_t> both(2 * comm.size());
  EXPECT_OK(comm.AllGather(std::span<const int64_t>(mine, 2), std::span<int64_t>(both)));
  for (int p = 0; p < comm.size(); ++p) {
    EXPECT_TRUE_MSG(both[2 * p] == p, "AllGather slot %d holds rank %lld", p,
                    static_cast<long long>(both[2 * p]));
    EXPECT_TRUE_MSG(both[2 * p + 1] == p, "local rank of %d is %lld", p,
                    static_cast<long long>(both[2 * p + 1]));
  }
}

// Variable sizes, zeros included: rank r sends SizeFor(r, p) bytes to p.
int64_t SizeFor(int from, int to, int64_t scale) {
  const int64_t k = (from * 3 + to * 5) % 4;  // 0..3: some pairs send nothing
  return k * scale;
}

void TestAllToAllV(Communicator& comm, int64_t scale) {
  const int n = comm.size(), me = comm.rank();
  std::vector<int64_t> sc(n), sd(n), rc(n), rd(n);
  int64_t st = 0, rt = 0;
  for (int p = 0; p < n; ++p) {
    sc[p] = SizeFor(me, p, scale);
    rc[p] = SizeFor(p, me, scale);
    // Gaps between blocks so displacements matter.
    sd[p] = st;
    st += sc[p] + 3;
    rd[p] = rt;
    rt += rc[p] + 5;
  }
  std::vector<uint8_t> send(st, 0xEE), recv(rt, 0xCC);
  for (int p = 0; p < n; ++p) {
    for (int64_t i = 0; i < sc[p]; ++i) send[sd[p] + i] = Pattern(me, p, i);
  }
  EXPECT_OK(comm.AllToAllV(send.data(), sc, sd, recv.data(), rc, rd));
  if (g_inject_error && me == n - 1 && rt > 0) recv[rd[0]] ^= 1;
  int64_t wrong = 0;
  for (int p = 0; p < n; ++p) {
    for (int64_t i = 0; i < rc[p]; ++i) wrong += recv[rd[p] + i] != Pattern(p, me, i);
    for (int64_t i = 0; i < 5; ++i) wrong += recv[rd[p] + rc[p] + i] != 0xCC;  // gaps untouched
  }
  EXPECT_TRUE_MSG(wrong == 0, "AllToAllV (scale %lld): %lld wrong bytes",
                  static_cast<long long>(scale), static_cast<long long>(wrong));
}

void TestAllToAllVAllZero(Communicator& comm) {
  std::vector<int64_t> zero(comm.size(), 0);
  EXPECT_OK(comm.AllToAllV(nullptr, zero, zero, nullptr, zero, zero));
}

void TestAllReduce(Communicator& comm) {
  const int n = comm.size(), me = comm.rank();
  const int64_t count = 1000;
  std::vector<float> f(count);
  std::vector<double> d(count);
  std::vector<int64_t> i64(count);
  for (int64_t i = 0; i < count; ++i) {
    f[i] = static_cast<float>((me + 1) * (i % 97));  // exact small integers
    d[i] = 0.5 * (me + 1) + i;
    i64[i] = (int64_t{me} << 40) + i;
  }
  EXPECT_OK(comm.AllReduce(std::span<float>(f), ReduceOp::kSum));
  EXPECT_OK(comm.AllReduce(std::span<double>(d), ReduceOp::kMax));
  EXPECT_OK(comm.AllReduce(std::span<int64_t>(i64), ReduceOp::kSum));
  const int64_t rank_sum = int64_t{n} * (n + 1) / 2;  // sum of (r+1)
  const int64_t rank_index_sum = int64_t{n} * (n - 1) / 2;
  int64_t wrong = 0;
  for (int64_t i = 0; i < count; ++i) {
    wrong += f[i] != static_cast<float>(rank_sum * (i % 97));
    wrong += d[i] != 0.5 * n + i;
    wrong += i64[i] != (rank_index_sum << 40) + n * i;
  }
  std::vector<int64_t> mx = {me * 10 - 7};
  EXPECT_OK(comm.AllReduce(std::span<int64_t>(mx), ReduceOp::kMax));
  wrong += mx[0] != (n - 1) * 10 - 7;
  EXPECT_TRUE_MSG(wrong == 0, "AllReduce: %lld wrong values", static_cast<long long>(wrong));
}

void TestAllGatherAndBroadcast(Communicator& comm) {
  const int n = comm.size(), me = comm.rank();
  const int64_t bytes = 1000;
  std::vector<uint8_t> mine(bytes), all(bytes * n);
  for (int64_t i = 0; i < bytes; ++i) mine[i] = Pattern(me, 0, i);
  EXPECT_OK(comm.AllGather(mine.data(), bytes, all.data()));
  int64_t wrong = 0;
  for (int p = 0; p < n; ++p) {
    for (int64_t i = 0; i < bytes; ++i) wrong += all[p * bytes + i] != Pattern(p, 0, i);
  }
  for (int root = 0; root < n; ++root) {
    std::vector<uint8_t> b(777, 0);
    if (me == root) {
      for (int i = 0; i < 777; ++i) b[i] = Pattern(root, 1, i);
    }
    EXPECT_OK(comm.Broadcast(b.data(), 777, root));
    for (int i = 0; i < 777; ++i) wrong += b[i] != Pattern(root, 1, i);
  }
  EXPECT_OK(comm.Barrier());
  EXPECT_TRUE_MSG(wrong == 0, "AllGather/Broadcast: %lld wrong bytes",
                  static_cast<long long>(wrong));
  // Argument checks happen before any communication, identically on every rank.
  uint8_t one = 0;
  EXPECT_TRUE_MSG(comm.Broadcast(&one, 1, n).code() == absl::StatusCode::kInvalidArgument,
                  "bad root accepted");
}

// ---- MoE exchange ----

using ::tritmoe::testing::DistinctDestinations;
using ::tritmoe::testing::MakeMoeInputs;
using ::tritmoe::testing::MoeInputs;
using ::tritmoe::testing::ReferenceOutput;
using ::tritmoe::testing::RunScaleExperts;

// Tokens of rank `rank` in `round`: varies by rank and round, with zero-token ranks.
int TokensFor(const MoeExchangeConfig& c, int rank, int round) {
  if (round == 1 && rank == 1) return 0;  // one rank with nothing
  if (round == 2) return 0;               // every rank with nothing
  if (round == 3) return c.max_tokens_per_rank;
  return (rank * 7 + round * 13 + 1) % (c.max_tokens_per_rank + 1);
}

// Runs rounds of dispatch -> "experts" (x (e+1)) -> combine and checks the result bit for bit,
// the dedupe (rows sent and received), and the job-wide routing histogram.
void TestMoeRounds(Communicator& comm, const MoeExchangeConfig& c, const ExpertPlacement& placement,
                   const char* name, uint32_t seed) {
  const int n = comm.size(), me = comm.rank();
  auto ex = MoeExchange::Create(c, &comm);
  EXPECT_OK(ex.status());
  if (!ex.ok()) return;
  constexpr int kRounds = 6;
  RoutingStats expected_routing(c.num_layers, c.num_experts);
  int64_t expected_sent = 0, expected_received = 0;
  int64_t wrong = 0;
  for (int round = 0; round < kRounds; ++round) {
    const int layer = round % c.num_layers;
    const MoeInputs in = MakeMoeInputs(c, me, round, TokensFor(c, me, round), seed);
    EXPECT_OK((*ex)->Dispatch(placement, layer, in.n_tokens, in.x, in.ids, in.weights));
    // Every rank's inputs are reproducible anywhere: count what must arrive here.
    for (int p = 0; p < n; ++p) {
      const MoeInputs theirs = MakeMoeInputs(c, p, round, TokensFor(c, p, round), seed);
      for (int t = 0; t < theirs.n_tokens; ++t) {
        bool to_me = false;
        for (int k = 0; k < c.top_k; ++k) {
          const int e = theirs.ids[static_cast<size_t>(t) * c.top_k + k];
          if (e < 0) continue;
          expected_routing.Add(layer, e, 1);
          to_me |= placement.RouteToRank(e, int64_t{t} + p) == me;
        }
        expected_received += to_me;
      }
    }
    expected_sent += DistinctDestinations(c, placement, me, in);
    // CSR sanity: slots are this rank's experts, entries point at received rows.
    const auto local = placement.local_experts(me);
    wrong += (*ex)->local_experts().size() != local.size();
    for (int64_t i = 0; i < static_cast<int64_t>((*ex)->entry_rows().size()); ++i) {
      wrong += (*ex)->entry_rows()[i] < 0 || (*ex)->entry_rows()[i] >= (*ex)->num_received_rows();
    }
    RunScaleExperts(**ex);
    std::vector<float> out(static_cast<size_t>(in.n_tokens) * c.hidden, -12345.0f);
    EXPECT_OK((*ex)->Combine(out));
    const std::vector<float> want = ReferenceOutput(c, in);
    for (size_t i = 0; i < out.size(); ++i) wrong += out[i] != want[i];
  }
  const MoeExchangeStats& st = (*ex)->stats();
  EXPECT_TRUE_MSG(wrong == 0, "%s: %lld wrong values", name, static_cast<long long>(wrong));
  EXPECT_TRUE_MSG(st.rows_sent == expected_sent, "%s: sent %lld rows, expected %lld (dedupe)", name,
                  static_cast<long long>(st.rows_sent), static_cast<long long>(expected_sent));
  EXPECT_TRUE_MSG(st.rows_received == expected_received, "%s: received %lld rows, expected %lld",
                  name, static_cast<long long>(st.rows_received),
                  static_cast<long long>(expected_received));
  EXPECT_TRUE_MSG(st.dispatches == kRounds && st.combines == kRounds, "%s: call counts", name);
  // Bytes balance: what all ranks sent is what all ranks received.
  int64_t bytes[4] = {st.dispatch_bytes_sent, st.dispatch_bytes_received, st.combine_bytes_sent,
                      st.combine_bytes_received};
  EXPECT_OK(comm.AllReduce(std::span<int64_t>(bytes, 4), ReduceOp::kSum));
  EXPECT_TRUE_MSG(bytes[0] == bytes[1] && bytes[2] == bytes[3], "%s: byte totals disagree", name);
  RoutingStats routing = st.routing;
  EXPECT_OK(routing.AllReduceSum(comm));
  EXPECT_TRUE_MSG(routing == expected_routing, "%s: job-wide routing histogram differs", name);
}

// Bad input on one rank, or disagreeing placements, fail the step on every rank -- and the
// exchange keeps working afterwards. A hang here would hit the ctest timeout.
void TestMoeErrorsAreCollective(Communicator& comm) {
  const int n = comm.size(), me = comm.rank();
  MoeExchangeConfig c;
  c.num_experts = 8;
  c.hidden = 16;
  c.top_k = 2;
  c.max_tokens_per_rank = 8;
  auto ex = MoeExchange::Create(c, &comm);
  EXPECT_OK(ex.status());
  if (!ex.ok()) return;
  auto placement = ExpertPlacement::Contiguous(c.num_experts, n);
  MoeInputs in = MakeMoeInputs(c, me, 0, 5, 3, /*with_unused=*/false);

  // 1. The last rank names an expert that does not exist.
  MoeInputs bad = in;
  if (me == n - 1) bad.ids[1] = 99;
  absl::Status s = (*ex)->Dispatch(*placement, 0, bad.n_tokens, bad.x, bad.ids, bad.weights);
  const absl::StatusCode want =
      me == n - 1 ? absl::StatusCode::kInvalidArgument : absl::StatusCode::kAborted;
  EXPECT_TRUE_MSG(s.code() == want, "bad expert id: got %s", s.ToString().c_str());

  // 2. Rank 0 loaded a different placement.
  std::vector<std::vector<int>> lists(c.num_experts);
  for (int e = 0; e < c.num_experts; ++e) lists[e] = {(e + 1) % n};
  auto other = ExpertPlacement::FromReplicaLists(n, lists);
  const ExpertPlacement& mine = (me == 0 && n > 1) ? *other : *placement;
  s = (*ex)->Dispatch(mine, 0, in.n_tokens, in.x, in.ids, in.weights);
  if (n > 1) {
    EXPECT_TRUE_MSG(s.code() == absl::StatusCode::kFailedPrecondition, "placement mismatch: got %s",
                    s.ToString().c_str());
  }

  // 3. Still usable.
  if (n > 1) EXPECT_OK((*ex)->Dispatch(*placement, 0, in.n_tokens, in.x, in.ids, in.weights));
  RunScaleExperts(**ex);
  std::vector<float> out(static_cast<size_t>(in.n_tokens) * c.hidden);
  EXPECT_OK((*ex)->Combine(out));
  int64_t wrong = 0;
  const std::vector<float> ref = ReferenceOutput(c, in);
  for (size_t i = 0; i < out.size(); ++i) wrong += out[i] != ref[i];
  EXPECT_TRUE_MSG(wrong == 0, "after errors: %lld wrong values", static_cast<long long>(wrong));

  // 4. Configs that differ between ranks are caught when the exchange is created, everywhere.
  MoeExchangeConfig skewed = c;
  if (me == 0) skewed.max_tokens_per_rank = 9;
  auto mismatched = MoeExchange::Create(skewed, &comm);
  if (n > 1) {
    EXPECT_TRUE_MSG(mismatched.status().code() == absl::StatusCode::kInvalidArgument,
                    "config mismatch: got %s", mismatched.status().ToString().c_str());
  }
}

void TestMoe(Communicator& comm) {
  const int n = comm.size();
  // DeepSeek-like routing (256 experts, top-8), small hidden so the test is quick.
  MoeExchangeConfig big;
  big.num_experts = 256;
  big.hidden = 32;
  big.top_k = 8;
  big.max_tokens_per_rank = 48;
  big.num_layers = 2;
  TestMoeRounds(comm, big, *ExpertPlacement::Contiguous(256, n), "contiguous 256/top-8", 11);

  // Experts that do not divide the ranks, odd sizes.
  MoeExchangeConfig odd;
  odd.num_experts = 10;
  odd.hidden = 37;
  odd.top_k = 3;
  odd.max_tokens_per_rank = 33;
  TestMoeRounds(comm, odd, *ExpertPlacement::Contiguous(10, n), "contiguous 10 experts", 12);

  // Fewer experts than ranks: some ranks hold none and only send.
  MoeExchangeConfig tiny = odd;
  tiny.num_experts = 3;
  tiny.top_k = 2;
  TestMoeRounds(comm, tiny, *ExpertPlacement::Contiguous(3, n), "3 experts", 13);

  // Balanced with replicas of hot experts: tokens of a replicated expert split between ranks.
  std::vector<int64_t> load(256);
  for (int e = 0; e < 256; ++e) load[e] = 100000 / (e + 1);
  BalanceOptions options;
  options.num_extra_replicas = 16 * (n - 1);
  auto balanced = ExpertPlacement::Balanced(n, load, options);
  EXPECT_OK(balanced.status());
  if (balanced.ok()) TestMoeRounds(comm, big, *balanced, "balanced + replicas", 14);

  TestMoeErrorsAreCollective(comm);
}

int Run(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--inject-error") g_inject_error = true;
  }
  auto session = MpiSession::Init();
  if (!session.ok()) {
    std::fprintf(stderr, "MPI start failed: %s\n", session.status().ToString().c_str());
    return 1;
  }
  Communicator& comm = (*session)->world();
  g_rank = comm.rank();

  TestIdentity(comm);
  TestAllToAllVAllZero(comm);
  for (int64_t scale : {1, 1000, 300000}) TestAllToAllV(comm, scale);
  TestAllReduce(comm);
  TestAllGatherAndBroadcast(comm);
  TestMoe(comm);

  std::vector<int64_t> failures = {g_failures};
  absl::Status s = comm.AllReduce(std::span<int64_t>(failures), ReduceOp::kSum);
  if (!s.ok()) (*session)->Abort(s);
  if (comm.rank() == 0) {
    std::printf("mpi_comm_test: %d ranks, %lld failed checks%s\n", comm.size(),
                static_cast<long long>(failures[0]), g_inject_error ? " (error injected)" : "");
  }
  return failures[0] == 0 ? 0 : 1;
}

}  // namespace
}  // namespace tritmoe

int main(int argc, char** argv) { return tritmoe::Run(argc, argv); }
