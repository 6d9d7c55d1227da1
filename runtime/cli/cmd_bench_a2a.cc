// tritmoe bench-a2a: all-to-all microbenchmark in the style of nccl-tests' alltoall_perf, and the
// MoE dispatch/combine of comm/moe_exchange.h at DeepSeek-V3 shapes.
//
//   mpirun -np 4 tritmoe bench-a2a -b 8 -e 64M -f 2
//   mpirun -np 4 tritmoe bench-a2a --dispatch-combine --max-tokens 4096
//
// Plain mode: "size" is the bytes each rank sends in total (size / ranks to each peer, as in
// nccl-tests), time is the mean over -n iterations of the slowest rank, algbw = size / time and
// busbw = algbw * (n - 1) / n. Received data is checked against rank-encoded values (#wrong).
// Dispatch-combine mode: random top-k routing (seeded), contiguous placement unless --placement;
// dispatch and combine are timed separately (each starts after a barrier; the slowest rank's time
// per iteration, mean and median over iterations); bytes are the payload each rank sends to OTHER
// ranks, averaged over ranks; GB/s = those bytes / mean time. With -c 1 one
// extra round runs the test experts (expert e multiplies by e+1) and checks the combined output
// bit for bit against a local computation. Tables print on rank 0 only.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "comm/communicator.h"
#include "comm/expert_placement.h"
#include "comm/moe_exchange.h"
#include "comm/mpi_communicator.h"
#include "runtime/cli/commands.h"

namespace tritmoe {
namespace {

struct BenchArgs {
  std::string min_bytes = "8";
  std::string max_bytes = "64M";
  double factor = 2;
  int iters = 20;
  int warmup = 5;
  int check = 1;
  bool dispatch_combine = false;
  int hidden = 7168;
  int experts = 256;
  int top_k = 8;
  int min_tokens = 1;
  int max_tokens = 4096;
  uint32_t seed = 1;
  std::string placement_path;
  std::string save_routing;
  std::string comm = "auto";
};

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// "8", "64K", "32M", "1G" (powers of 1024, as nccl-tests reads them).
absl::StatusOr<int64_t> ParseBytes(const std::string& text) {
  if (text.empty()) return absl::InvalidArgumentError("empty size");
  int64_t mult = 1;
  std::string digits = text;
  switch (text.back()) {
    case 'K':
    case 'k':
      mult = int64_t{1} << 10;
      break;
    case 'M':
    case 'm':
      mult = int64_t{1} << 20;
      break;
    case 'G':
    case 'g':
      mult = int64_t{1} << 30;
      break;
    default:
      break;
  }
  if (mult != 1) digits.pop_back();
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos ||
      digits.size() > 12) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad size \"", text, "\": expected a number with an optional K, M or G"));
  }
  return std::stoll(digits) * mult;
}

// The slowest rank's value (times) or the sum (counts), on every rank.
absl::StatusOr<double> MaxOverRanks(Communicator& comm, double v) {
  std::vector<double> x = {v};
  RETURN_IF_ERROR(comm.AllReduce(std::span<double>(x), ReduceOp::kMax));
  return x[0];
}
absl::StatusOr<int64_t> SumOverRanks(Communicator& comm, int64_t v) {
  std::vector<int64_t> x = {v};
  RETURN_IF_ERROR(comm.AllReduce(std::span<int64_t>(x), ReduceOp::kSum));
  return x[0];
}

struct Summary {
  double mean = 0;
  double median = 0;
};
Summary Summarize(std::span<const double> v) {
  Summary s;
  if (v.empty()) return s;
  std::vector<double> sorted(v.begin(), v.end());
  std::sort(sorted.begin(), sorted.end());
  for (double x : sorted) s.mean += x;
  s.mean /= sorted.size();
  const size_t m = sorted.size() / 2;
  s.median = sorted.size() % 2 ? sorted[m] : 0.5 * (sorted[m - 1] + sorted[m]);
  return s;
}

// Element i of the block rank `from` sends to rank `to`: an exact float.
float A2aValue(int from, int to, int64_t i) {
  return static_cast<float>((from * 131 + to * 17 + i) % 4093);
}

absl::Status RunPlainAllToAll(Communicator& comm, const BenchArgs& a) {
  const int n = comm.size(), me = comm.rank();
  ASSIGN_OR_RETURN(const int64_t min_bytes, ParseBytes(a.min_bytes));
  ASSIGN_OR_RETURN(const int64_t max_bytes, ParseBytes(a.max_bytes));
  if (min_bytes < 1 || max_bytes < min_bytes) {
    return absl::InvalidArgumentError("need 1 <= -b <= -e");
  }
  if (a.factor <= 1.0) return absl::InvalidArgumentError("-f must be > 1");
  // Counts are rounded down to whole floats and to a multiple of the rank count (equal blocks),
  // so the largest buffer holds at most max_bytes.
  const int64_t max_count = std::max<int64_t>(max_bytes / 4 / n * n, n);
  std::vector<float> send(max_count), recv(max_count);
  if (me == 0) {
    std::printf(
        "# tritmoe bench-a2a: all-to-all, %d ranks (%d on this host), backend %s, "
        "float32, %d iters + %d warmup\n#\n",
        n, comm.local_size(), comm.backend_name().c_str(), a.iters, a.warmup);
    std::printf("# %12s %12s %8s %11s %11s %11s %8s\n", "size", "count", "type", "time", "algbw",
                "busbw", "#wrong");
    std::printf("# %12s %12s %8s %11s %11s %11s %8s\n", "(B)", "(elements)", "", "(us)", "(GB/s)",
                "(GB/s)", "");
  }
  double busbw_sum = 0;
  int rows = 0;
  int64_t last_count = -1;
  for (double size = static_cast<double>(min_bytes); size <= static_cast<double>(max_bytes);
       size *= a.factor) {
    const int64_t count = std::max<int64_t>(static_cast<int64_t>(size) / 4 / n * n, n);
    if (count == last_count) continue;  // small sizes round to the same count
    last_count = count;
    const int64_t block = count / n;  // floats per peer
    std::vector<int64_t> counts(n, block * 4), displs(n);
    for (int p = 0; p < n; ++p) displs[p] = p * block * 4;
    for (int p = 0; p < n; ++p) {
      for (int64_t i = 0; i < block; ++i) send[p * block + i] = A2aValue(me, p, i);
    }
    std::fill(recv.begin(), recv.begin() + count, -1.0f);
    for (int i = 0; i < a.warmup; ++i) {
      RETURN_IF_ERROR(comm.AllToAllV(send.data(), counts, displs, recv.data(), counts, displs));
    }
    RETURN_IF_ERROR(comm.Barrier());
    const double t0 = Now();
    for (int i = 0; i < a.iters; ++i) {
      RETURN_IF_ERROR(comm.AllToAllV(send.data(), counts, displs, recv.data(), counts, displs));
    }
    ASSIGN_OR_RETURN(const double seconds, MaxOverRanks(comm, (Now() - t0) / std::max(a.iters, 1)));
    int64_t wrong = 0;
    if (a.check) {
      for (int p = 0; p < n; ++p) {
        for (int64_t i = 0; i < block; ++i) wrong += recv[p * block + i] != A2aValue(p, me, i);
      }
    }
    ASSIGN_OR_RETURN(wrong, SumOverRanks(comm, wrong));
    const double bytes = static_cast<double>(count) * 4;
    const double algbw = bytes / seconds / 1e9;
    const double busbw = algbw * (n - 1) / n;
    busbw_sum += busbw;
    ++rows;
    if (me == 0) {
      std::printf("  %12lld %12lld %8s %11.2f %11.3f %11.3f %8s\n", static_cast<long long>(bytes),
                  static_cast<long long>(count), "float", seconds * 1e6, algbw, busbw,
                  a.check ? std::to_string(wrong).c_str() : "N/A");
    }
    if (wrong != 0) {
      return absl::DataLossError(absl::StrCat("all-to-all of ", static_cast<int64_t>(bytes),
                                              " bytes delivered ", wrong, " wrong values"));
    }
  }
  if (me == 0) {
    std::printf("# Out of bounds values : 0 OK\n# Avg bus bandwidth    : %.4f GB/s\n#\n",
                rows ? busbw_sum / rows : 0.0);
  }
  return absl::OkStatus();
}

// Routing and activations of one rank for one token count. Values are small integers and weights
// multiples of 1/8 so the check is exact.
struct MoeBatch {
  std::vector<float> x;
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

MoeBatch MakeBatch(const BenchArgs& a, int rank, int tokens) {
  MoeBatch b;
  b.x.resize(static_cast<size_t>(tokens) * a.hidden);
  b.ids.resize(static_cast<size_t>(tokens) * a.top_k);
  b.weights.resize(b.ids.size());
  std::mt19937 gen(a.seed * 2654435761u + rank * 40503u + tokens);
  for (float& v : b.x) v = static_cast<float>(static_cast<int>(gen() % 17) - 8);
  for (int t = 0; t < tokens; ++t) {
    int32_t* ids = &b.ids[static_cast<size_t>(t) * a.top_k];
    for (int k = 0; k < a.top_k; ++k) {
      int32_t e;
      do {  // distinct experts per token, uniformly random
        e = static_cast<int32_t>(gen() % a.experts);
      } while (std::find(ids, ids + k, e) != ids + k);
      ids[k] = e;
      b.weights[static_cast<size_t>(t) * a.top_k + k] = static_cast<float>(1 + gen() % 4) / 8.0f;
    }
  }
  return b;
}

int64_t CheckCombined(const BenchArgs& a, const MoeBatch& b, int tokens,
                      const std::vector<float>& out) {
  std::vector<float> ref(a.hidden);
  int64_t wrong = 0;
  for (int t = 0; t < tokens; ++t) {
    std::fill(ref.begin(), ref.end(), 0.0f);
    for (int k = 0; k < a.top_k; ++k) {
      const size_t i = static_cast<size_t>(t) * a.top_k + k;
      const float scale = b.weights[i] * static_cast<float>(b.ids[i] + 1);
      const float* x = &b.x[static_cast<size_t>(t) * a.hidden];
      for (int h = 0; h < a.hidden; ++h) ref[h] += scale * x[h];
    }
    const float* o = &out[static_cast<size_t>(t) * a.hidden];
    for (int h = 0; h < a.hidden; ++h) wrong += o[h] != ref[h];
  }
  return wrong;
}

absl::StatusOr<ExpertPlacement> BenchPlacement(const BenchArgs& a, int n_ranks) {
  if (a.placement_path.empty()) return ExpertPlacement::Contiguous(a.experts, n_ranks);
  ASSIGN_OR_RETURN(std::vector<ExpertPlacement> layers, LoadPlacements(a.placement_path));
  return layers[0];
}

absl::Status RunDispatchCombine(Communicator& comm, const BenchArgs& a) {
  const int n = comm.size(), me = comm.rank();
  if (a.min_tokens < 1 || a.max_tokens < a.min_tokens) {
    return absl::InvalidArgumentError("need 1 <= --min-tokens <= --max-tokens");
  }
  MoeExchangeConfig config;
  config.num_experts = a.experts;
  config.hidden = a.hidden;
  config.top_k = a.top_k;
  config.max_tokens_per_rank = a.max_tokens;
  ASSIGN_OR_RETURN(const ExpertPlacement placement, BenchPlacement(a, n));
  ASSIGN_OR_RETURN(std::unique_ptr<MoeExchange> ex, MoeExchange::Create(config, &comm));
  if (me == 0) {
    std::printf(
        "# tritmoe bench-a2a --dispatch-combine: %d ranks (%d on this host), backend %s\n"
        "# hidden %d, %d experts, top-%d, float32 rows of %lld B, random routing (seed "
        "%u), %s placement, %d iters + %d warmup\n"
        "# times: slowest rank per iteration, mean and median over iterations; MB/rank: payload "
        "sent to other ranks; GB/s = MB/rank / mean time\n#\n",
        n, comm.local_size(), comm.backend_name().c_str(), a.hidden, a.experts, a.top_k,
        static_cast<long long>(ex->sizes().dispatch_row_bytes), a.seed,
        a.placement_path.empty() ? "contiguous" : a.placement_path.c_str(), a.iters, a.warmup);
    std::printf("# %8s %10s %10s %10s %10s %10s %10s %8s %8s %7s\n", "tokens", "dispatch",
                "dispatch", "combine", "combine", "dispatch", "combine", "dispatch", "combine",
                "#wrong");
    std::printf("# %8s %10s %10s %10s %10s %10s %10s %8s %8s %7s\n", "/rank", "mean(us)", "p50(us)",
                "mean(us)", "p50(us)", "MB/rank", "MB/rank", "GB/s", "GB/s", "");
  }
  for (int64_t tokens64 = a.min_tokens; tokens64 <= a.max_tokens; tokens64 *= 2) {
    const int tokens = static_cast<int>(tokens64);
    const MoeBatch b = MakeBatch(a, me, tokens);
    std::vector<float> out(static_cast<size_t>(tokens) * a.hidden);
    for (int i = 0; i < a.warmup; ++i) {
      RETURN_IF_ERROR(ex->Dispatch(placement, 0, tokens, b.x, b.ids, b.weights));
      RETURN_IF_ERROR(ex->Combine(out));
    }
    ex->ResetStats();
    // Per-iteration times; each iteration starts after a barrier, so the slowest rank's time per
    // iteration is the collective's latency. [0, iters): dispatch, [iters, 2 iters): combine.
    std::vector<double> times(2 * static_cast<size_t>(a.iters));
    // Experts do not run in timed iterations: combine moves the same bytes either way, and the
    // test experts would only add CPU time between the two measurements.
    for (int i = 0; i < a.iters; ++i) {
      RETURN_IF_ERROR(comm.Barrier());
      double t0 = Now();
      RETURN_IF_ERROR(ex->Dispatch(placement, 0, tokens, b.x, b.ids, b.weights));
      times[i] = Now() - t0;
      RETURN_IF_ERROR(comm.Barrier());
      t0 = Now();
      RETURN_IF_ERROR(ex->Combine(out));
      times[a.iters + i] = Now() - t0;
    }
    RETURN_IF_ERROR(comm.AllReduce(std::span<double>(times), ReduceOp::kMax));
    const Summary dispatch_t = Summarize(std::span<double>(times).first(a.iters));
    const Summary combine_t = Summarize(std::span<double>(times).last(a.iters));
    const MoeExchangeStats st = ex->stats();
    ASSIGN_OR_RETURN(const int64_t dispatch_bytes, SumOverRanks(comm, st.dispatch_bytes_sent));
    ASSIGN_OR_RETURN(const int64_t combine_bytes, SumOverRanks(comm, st.combine_bytes_sent));
    const double dispatch_per_rank = static_cast<double>(dispatch_bytes) / n / a.iters;
    const double combine_per_rank = static_cast<double>(combine_bytes) / n / a.iters;

    int64_t wrong = 0;
    if (a.check) {
      RETURN_IF_ERROR(ex->Dispatch(placement, 0, tokens, b.x, b.ids, b.weights));
      for (size_t s = 0; s < ex->local_experts().size(); ++s) {
        const float scale = static_cast<float>(ex->local_experts()[s] + 1);
        std::vector<float> y(a.hidden);
        for (int64_t i = ex->expert_offsets()[s]; i < ex->expert_offsets()[s + 1]; ++i) {
          std::span<const float> row = ex->received_row(ex->entry_rows()[i]);
          for (int h = 0; h < a.hidden; ++h) y[h] = scale * row[h];
          ex->AddExpertOutput(i, y);
        }
      }
      RETURN_IF_ERROR(ex->Combine(out));
      wrong = CheckCombined(a, b, tokens, out);
      ASSIGN_OR_RETURN(wrong, SumOverRanks(comm, wrong));
    }
    if (me == 0) {
      std::printf("  %8d %10.1f %10.1f %10.1f %10.1f %10.3f %10.3f %8.3f %8.3f %7s\n", tokens,
                  dispatch_t.mean * 1e6, dispatch_t.median * 1e6, combine_t.mean * 1e6,
                  combine_t.median * 1e6, dispatch_per_rank / 1e6, combine_per_rank / 1e6,
                  dispatch_per_rank / dispatch_t.mean / 1e9,
                  combine_per_rank / combine_t.mean / 1e9,
                  a.check ? std::to_string(wrong).c_str() : "N/A");
      std::fflush(stdout);
    }
    if (wrong != 0) {
      return absl::DataLossError(
          absl::StrCat("dispatch+combine of ", tokens, " tokens/rank: ", wrong, " wrong values"));
    }
  }
  if (!a.save_routing.empty()) {
    RoutingStats routing = ex->stats().routing;
    RETURN_IF_ERROR(routing.AllReduceSum(comm));
    if (me == 0) RETURN_IF_ERROR(routing.Save(a.save_routing));
  }
  return absl::OkStatus();
}

absl::Status RunBenchA2a(const BenchArgs& a) {
  if (a.iters < 1 || a.warmup < 0) return absl::InvalidArgumentError("need -n >= 1 and -w >= 0");
  if (a.comm != "auto" && a.comm != "mpi" && a.comm != "local") {
    return absl::InvalidArgumentError("--comm must be auto, mpi or local");
  }
  const bool use_mpi = a.comm == "mpi" || (a.comm == "auto" && StartedByMpiLauncher());
  std::unique_ptr<MpiSession> session;
  LocalCommunicator local;
  Communicator* comm = &local;
  if (use_mpi) {
    ASSIGN_OR_RETURN(session, MpiSession::Init());
    comm = &session->world();
  }
  absl::Status s = a.dispatch_combine ? RunDispatchCombine(*comm, a) : RunPlainAllToAll(*comm, a);
  // Other ranks may be waiting in a collective this rank will not reach: end the job.
  if (!s.ok() && session != nullptr && comm->size() > 1) session->Abort(s);
  return s;
}

}  // namespace

void RegisterBenchA2aCommand(CLI::App& app, absl::Status* result) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench-a2a",
      "All-to-all bandwidth (nccl-tests alltoall_perf style) or MoE dispatch/combine latency; "
      "run under mpirun");
  cmd->add_option("-b,--minbytes", a->min_bytes, "Smallest size, bytes sent per rank (K/M/G)")
      ->capture_default_str();
  cmd->add_option("-e,--maxbytes", a->max_bytes, "Largest size (K/M/G)")->capture_default_str();
  cmd->add_option("-f,--stepfactor", a->factor, "Size multiplier between rows")
      ->capture_default_str();
  cmd->add_option("-n,--iters", a->iters, "Timed iterations per row")->capture_default_str();
  cmd->add_option("-w,--warmup_iters", a->warmup, "Untimed iterations per row")
      ->capture_default_str();
  cmd->add_option("-c,--check", a->check, "Check received data (0/1)")->capture_default_str();
  cmd->add_flag("--dispatch-combine", a->dispatch_combine,
                "Benchmark MoE dispatch + combine instead of a plain all-to-all");
  cmd->add_option("--hidden", a->hidden, "Hidden size")->capture_default_str();
  cmd->add_option("--experts", a->experts, "Routed experts")->capture_default_str();
  cmd->add_option("--topk", a->top_k, "Experts per token")->capture_default_str();
  cmd->add_option("--min-tokens", a->min_tokens, "Fewest tokens per rank")->capture_default_str();
  cmd->add_option("--max-tokens", a->max_tokens, "Most tokens per rank (powers of 2 up to it)")
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "Routing seed")->capture_default_str();
  cmd->add_option("--placement", a->placement_path,
                  "Expert placement JSON (first layer); default contiguous");
  cmd->add_option("--save-routing", a->save_routing,
                  "Write the job-wide routing histogram (.json or .tsv) for balanced placement");
  cmd->add_option("--comm", a->comm, "auto (MPI when started by mpirun), mpi or local")
      ->capture_default_str();
  cmd->callback([a, result] { *result = RunBenchA2a(*a); });
}

}  // namespace tritmoe
