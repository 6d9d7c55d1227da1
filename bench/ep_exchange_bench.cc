// ep_exchange_bench: the dispatch and combine of one MoE layer through the device expert exchange
// (runtime/gpu/device_expert_exchange.h: NCCL grouped sends / receives on device buffers, plus
// its masking / grouping / partial-sum / rank-sum kernels), timed from CUDA-graph replays, beside
// the bare NCCL all-to-all of the payload (tokens x topk x hidden bf16 per rank, split
// evenly: bench/nccl_a2a_bench's pattern) replayed the same way. Run one rank per GPU:
//
//   mpirun -np 2 ep_exchange_bench [--hidden=7168] [--experts=256] [--topk=8]
//       [--max_tokens=4096] [--iters=20] [--warmup=5]
//
// One rank runs the exchange with itself (checkable on one GPU). Per T = 1, 2, 4, ... max_tokens
// tokens per rank: random top-k routing (distinct experts, contiguous placement), int8 activation
// records as the grouped GEMV consumes them (304 B per 256 columns). Timed per iteration with CUDA
// events around one graph launch (after a host barrier), slowest rank, median over `iters`:
// dispatch (gather of records + routing, mask + group kernels), combine (partial sums, all-to-all
// of float rows back, rank-order sum into x), and the bare all-to-all. The expert GEMVs are not
// run: every expert output element is set to one value v, so that after a combine every element
// of x must equal v times the sum of its token's k weights (#wrong counts elements off by more than
// 1e-5 relative; any fails the run with exit code 1): every choice served exactly once, by the
// right rank.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "bench/mpi_bench_main.h"
#include "comm/mpi_communicator.h"
#include "experts/cuda/device_buffer.h"
#include "runtime/gpu/device_expert_exchange.h"
#include "runtime/gpu/nccl_communicator.h"

namespace tritmoe {
namespace {

struct Options {
  int hidden = 7168;
  int experts = 256;
  int topk = 8;
  int max_tokens = 4096;
  int iters = 20;
  int warmup = 5;

  absl::Status Validate() const {
    if (hidden < 256 || hidden % 256 != 0 || experts < 1 || topk < 1 || topk > experts ||
        max_tokens < 1 || iters < 1 || warmup < 0) {
      return absl::InvalidArgumentError(
          "--hidden a multiple of 256, 1 <= --topk <= --experts, --max_tokens and --iters >= 1, "
          "--warmup >= 0");
    }
    return absl::OkStatus();
  }
};

absl::Status ParseFlag(const std::string& arg, Options* o) {
  return ParseIntFlag(arg, {{"hidden", &o->hidden},
                            {"experts", &o->experts},
                            {"topk", &o->topk},
                            {"max_tokens", &o->max_tokens},
                            {"iters", &o->iters},
                            {"warmup", &o->warmup}});
}

absl::Status Cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

// A captured graph (RAII).
class Graph {
 public:
  ~Graph() {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
  }
  template <typename F>
  absl::Status Capture(cudaStream_t st, F&& enqueue) {
    RETURN_IF_ERROR(
        Cuda(cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed), "begin capture"));
    const absl::Status s = enqueue();
    cudaGraph_t g = nullptr;
    const cudaError_t end = cudaStreamEndCapture(st, &g);
    RETURN_IF_ERROR(s);
    RETURN_IF_ERROR(Cuda(end, "end capture"));
    const cudaError_t inst = cudaGraphInstantiate(&exec_, g, 0);
    cudaGraphDestroy(g);
    return Cuda(inst, "instantiate");
  }
  cudaGraphExec_t get() const { return exec_; }

 private:
  cudaGraphExec_t exec_ = nullptr;
};

// Median over iterations of the slowest rank's event time of one launch of `g` (us).
absl::StatusOr<double> Time(Communicator& host, cudaStream_t st, const Graph& g, const Options& o) {
  cudaEvent_t a, b;
  RETURN_IF_ERROR(Cuda(cudaEventCreate(&a), "event"));
  RETURN_IF_ERROR(Cuda(cudaEventCreate(&b), "event"));
  std::vector<double> times;
  absl::Status s;
  for (int it = 0; it < o.warmup + o.iters && s.ok(); ++it) {
    s = host.Barrier();
    if (!s.ok()) break;
    cudaEventRecord(a, st);
    cudaGraphLaunch(g.get(), st);
    cudaEventRecord(b, st);
    s = Cuda(cudaEventSynchronize(b), "graph replay");
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    std::vector<double> t = {ms * 1e3};
    if (s.ok()) s = host.AllReduce(std::span<double>(t), ReduceOp::kMax);
    if (it >= o.warmup) times.push_back(t[0]);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  RETURN_IF_ERROR(s);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

absl::Status Run(MpiSession& mpi, const Options& o) {
  Communicator& host = mpi.world();
  ASSIGN_OR_RETURN(std::unique_ptr<gpu::NcclCommunicator> nccl,
                   gpu::NcclCommunicator::Create(host));
  const int n = nccl->size(), me = nccl->rank();
  const int64_t D = o.hidden, k = o.topk, E = o.experts;
  const int64_t rec_bytes = D / 256 * 304;
  gpu::DeviceExchangeConfig cfg;
  cfg.n_expert = o.experts;
  cfg.k = o.topk;
  cfg.n_embd = D;
  cfg.max_ff = 256;                // no expert GEMVs here: the smallest workspace
  gpu::DeviceExchangeLayer layer;  // contiguous: rank r holds [r E / n, (r + 1) E / n)
  for (int e = 0; e <= o.experts; ++e) layer.replica_offsets.push_back(e);
  for (int e = 0; e < o.experts; ++e) {
    layer.replica_ranks.push_back(static_cast<int32_t>(int64_t{e} * n / E));
  }
  cfg.layers.push_back(layer);
  ASSIGN_OR_RETURN(std::unique_ptr<gpu::DeviceExpertExchange> ex,
                   gpu::DeviceExpertExchange::Create(cfg, &host, nccl.get()));
  cudaStream_t st;
  RETURN_IF_ERROR(Cuda(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "stream"));
  const int64_t T_max = o.max_tokens;
  DeviceBuffer records(rec_bytes * T_max), experts(sizeof(int32_t) * k * T_max),
      weights(sizeof(float) * k * T_max), x(sizeof(float) * D * T_max);
  // The bare all-to-all: T x topk rows of D bf16 per rank, split evenly.
  const int64_t a2a_max = (T_max * k + n - 1) / n * D * 2 * n;
  DeviceBuffer a2a_send(a2a_max), a2a_recv(a2a_max);
  std::mt19937 rng(1234 + me);
  if (me == 0) {
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, nccl->device());
    std::printf(
        "# ep_exchange_bench: %d ranks (%d on this host), %s, hidden %lld, %lld experts, top-%lld, "
        "int8 records of %lld B/token; CUDA-graph replays, slowest rank, median of %d (+%d "
        "warmup)\n#\n",
        n, nccl->local_size(), prop.name, static_cast<long long>(D), static_cast<long long>(E),
        static_cast<long long>(k), static_cast<long long>(rec_bytes), o.iters, o.warmup);
    std::printf("# %8s %12s %12s %10s %10s %10s %12s %10s %8s\n", "tokens", "dispatch", "combine",
                "dispatch", "combine", "d+c", "a2a bf16", "a2a", "#wrong");
    std::printf("# %8s %12s %12s %10s %10s %10s %12s %10s %8s\n", "/rank", "B/rank", "B/rank",
                "(us)", "(us)", "(us)", "B/rank", "(us)", "");
  }
  for (int T = 1; T <= o.max_tokens; T *= 2) {
    // Routing: k distinct experts per token, weights in (0.1, 1).
    std::vector<int32_t> ex_ids(T * k);
    std::vector<float> w(T * k);
    std::vector<uint8_t> rec(rec_bytes * T);
    std::uniform_real_distribution<float> wd(0.1f, 1.0f);
    for (int t = 0; t < T; ++t) {
      std::vector<int32_t> pick;
      while (static_cast<int64_t>(pick.size()) < k) {
        const int32_t e = static_cast<int32_t>(rng() % E);
        if (std::find(pick.begin(), pick.end(), e) == pick.end()) pick.push_back(e);
      }
      for (int j = 0; j < k; ++j) {
        ex_ids[t * k + j] = pick[j];
        w[t * k + j] = wd(rng);
      }
    }
    for (uint8_t& b : rec) b = static_cast<uint8_t>(rng());
    experts.CopyFromHost(ex_ids.data(), ex_ids.size() * 4);
    weights.CopyFromHost(w.data(), w.size() * 4);
    records.CopyFromHost(rec.data(), rec.size());
    ASSIGN_OR_RETURN(const bool moved, ex->BeginStep(T));
    (void)moved;  // graphs are captured per T below
    // The expert outputs: every byte 0x3F (the float 0.747...; Received::y is fixed until the
    // buffers move).
    ASSIGN_OR_RETURN(
        gpu::ExchangeReceived r,
        ex->Dispatch(0, records.get(), rec_bytes, experts.as<int32_t>(), weights.as<float>(), st));
    const int64_t pairs = ex->step_total() * k;
    RETURN_IF_ERROR(Cuda(cudaMemsetAsync(r.y, 0x3F, sizeof(float) * pairs * D, st), "outputs"));
    RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(st), "setup"));
    Graph dispatch, combine, a2a;
    RETURN_IF_ERROR(dispatch.Capture(st, [&]() -> absl::Status {
      return ex
          ->Dispatch(0, records.get(), rec_bytes, experts.as<int32_t>(), weights.as<float>(), st)
          .status();
    }));
    RETURN_IF_ERROR(combine.Capture(st, [&]() { return ex->Combine(x.as<float>(), nullptr, st); }));
    const int64_t block = (int64_t{T} * k + n - 1) / n * D * 2;
    std::vector<int64_t> counts(n, block), displs(n);
    for (int p = 0; p < n; ++p) displs[p] = p * block;
    RETURN_IF_ERROR(a2a.Capture(st, [&]() {
      return nccl->EnqueueAllToAllV(a2a_send.get(), counts, displs, a2a_recv.get(), counts, displs,
                                    st);
    }));
    ASSIGN_OR_RETURN(const double t_dispatch, Time(host, st, dispatch, o));
    ASSIGN_OR_RETURN(const double t_combine, Time(host, st, combine, o));
    ASSIGN_OR_RETURN(const double t_a2a, Time(host, st, a2a, o));
    // d+c: both graphs back to back per iteration.
    Graph both;
    RETURN_IF_ERROR(both.Capture(st, [&]() -> absl::Status {
      RETURN_IF_ERROR(
          ex->Dispatch(0, records.get(), rec_bytes, experts.as<int32_t>(), weights.as<float>(), st)
              .status());
      return ex->Combine(x.as<float>(), nullptr, st);
    }));
    ASSIGN_OR_RETURN(const double t_both, Time(host, st, both, o));
    // Check: x from 0, one dispatch + combine: x[t][c] = sum of token t's weights.
    RETURN_IF_ERROR(Cuda(cudaMemsetAsync(x.get(), 0, sizeof(float) * D * T, st), "x"));
    RETURN_IF_ERROR(Cuda(cudaGraphLaunch(both.get(), st), "check launch"));
    std::vector<float> got(static_cast<size_t>(D) * T);
    RETURN_IF_ERROR(
        Cuda(cudaMemcpyAsync(got.data(), x.get(), got.size() * 4, cudaMemcpyDeviceToHost, st),
             "x download"));
    RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(st), "check"));
    std::vector<int64_t> wrong = {0};
    const uint32_t y_bits = 0x3F3F3F3Fu;
    float y_value = 0;
    std::memcpy(&y_value, &y_bits, sizeof(float));
    for (int t = 0; t < T; ++t) {
      double want = 0;
      for (int j = 0; j < k; ++j) want += double{w[t * k + j]} * y_value;
      for (int64_t c = 0; c < D; ++c) {
        wrong[0] += std::fabs(got[t * D + c] - want) > 1e-5 * want;
      }
    }
    RETURN_IF_ERROR(host.AllReduce(std::span<int64_t>(wrong), ReduceOp::kSum));
    const int64_t total = ex->step_total();
    if (me == 0) {
      std::printf("  %8d %12lld %12lld %10.1f %10.1f %10.1f %12lld %10.1f %8lld\n", T,
                  static_cast<long long>(T * (rec_bytes + 8 * k) * n),
                  static_cast<long long>(total * D * 4), t_dispatch, t_combine, t_both,
                  static_cast<long long>(block * n), t_a2a, static_cast<long long>(wrong[0]));
      std::fflush(stdout);
    }
    if (wrong[0] != 0) {
      return absl::DataLossError(
          absl::StrCat("dispatch + combine at ", T, " tokens: ", wrong[0], " wrong elements"));
    }
  }
  cudaStreamDestroy(st);
  return absl::OkStatus();
}

}  // namespace
}  // namespace tritmoe

int main(int argc, char** argv) {
  return tritmoe::MpiBenchMain<tritmoe::Options>("ep_exchange_bench", argc, argv,
                                                 tritmoe::ParseFlag, tritmoe::Run);
}
