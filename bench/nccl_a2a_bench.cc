// nccl_a2a_bench: the bare all-to-all a MoE layer's dispatch (and again its combine) needs, on
// GPU buffers through the NCCL Communicator (runtime/gpu/nccl_communicator.h), at DeepSeek-V3
// shapes. Run one rank per GPU:
//
//   mpirun -np 2 nccl_a2a_bench [--hidden=7168] [--topk=8] [--max_tokens=4096] [--iters=20]
//
// For tokens per rank T = 1, 2, 4, ... max_tokens every rank sends T x topk rows of `hidden` bf16
// values (the activations of its tokens' expert choices, each row once per choice: the payload of
// a dispatch without deduplication), split evenly over the ranks, itself included. Time = each
// iteration's wall time (AllToAllV returns once its stream is done), slowest rank, p50 and mean
// over `iters` after `warmup`; algbw = bytes sent per rank / time, busbw = algbw x (n - 1) / n as
// in nccl-tests. Every received element is checked against the sender-encoded value (#wrong; a
// mismatch ends the run with exit code 1). Output: one table on rank 0.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "bench/mpi_bench_main.h"
#include "comm/mpi_communicator.h"
#include "experts/cuda/device_buffer.h"
#include "runtime/gpu/nccl_communicator.h"

namespace tritmoe {
namespace {

struct Options {
  int hidden = 7168;
  int topk = 8;
  int max_tokens = 4096;
  int iters = 20;
  int warmup = 5;

  absl::Status Validate() const {
    if (hidden < 1 || topk < 1 || max_tokens < 1 || iters < 1 || warmup < 0) {
      return absl::InvalidArgumentError(
          "--hidden, --topk, --max_tokens, --iters must be >= 1 and --warmup >= 0");
    }
    return absl::OkStatus();
  }
};

absl::Status ParseFlag(const std::string& arg, Options* o) {
  return ParseIntFlag(arg, {{"hidden", &o->hidden},
                            {"topk", &o->topk},
                            {"max_tokens", &o->max_tokens},
                            {"iters", &o->iters},
                            {"warmup", &o->warmup}});
}

// The 16-bit pattern sender `from` puts at element i of its block for `to` (bf16 payload bits;
// the check compares bits, so any 16-bit value will do).
uint16_t Pattern(int from, int to, int64_t i) {
  return static_cast<uint16_t>((from * 40503u + to * 9973u + static_cast<uint64_t>(i)) & 0xffff);
}

double Seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

absl::Status Run(MpiSession& mpi, const Options& o) {
  Communicator& host = mpi.world();
  ASSIGN_OR_RETURN(std::unique_ptr<gpu::NcclCommunicator> nccl,
                   gpu::NcclCommunicator::Create(host));
  const int n = nccl->size(), me = nccl->rank();
  // Rows per peer are rounded up so every peer gets the same share.
  const int64_t max_rows_per_peer = (int64_t{o.max_tokens} * o.topk + n - 1) / n;
  const int64_t max_elems = max_rows_per_peer * o.hidden * n;
  DeviceBuffer send(static_cast<size_t>(max_elems) * 2), recv(static_cast<size_t>(max_elems) * 2);
  std::vector<uint16_t> host_buf(static_cast<size_t>(max_elems));
  if (me == 0) {
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, nccl->device());
    std::printf(
        "# nccl_a2a_bench: %d ranks (%d on this host), %s, bf16 rows of %d, top-%d, %d iters + %d "
        "warmup; time = slowest rank per iteration\n#\n",
        n, nccl->local_size(), prop.name, o.hidden, o.topk, o.iters, o.warmup);
    std::printf("# %8s %12s %10s %10s %10s %10s %8s\n", "tokens", "bytes/rank", "p50(us)",
                "mean(us)", "algbw", "busbw", "#wrong");
    std::printf("# %8s %12s %10s %10s %10s %10s %8s\n", "/rank", "", "", "", "(GB/s)", "(GB/s)",
                "");
  }
  for (int tokens = 1; tokens <= o.max_tokens; tokens *= 2) {
    const int64_t rows_per_peer = (int64_t{tokens} * o.topk + n - 1) / n;
    const int64_t block = rows_per_peer * o.hidden;  // elements per peer
    const int64_t bytes = block * n * 2;
    std::vector<int64_t> counts(n, block * 2), displs(n);
    for (int p = 0; p < n; ++p) displs[p] = p * block * 2;
    for (int p = 0; p < n; ++p) {
      for (int64_t i = 0; i < block; ++i) host_buf[p * block + i] = Pattern(me, p, i);
    }
    send.CopyFromHost(host_buf.data(), static_cast<size_t>(bytes));
    recv.Fill(0);
    std::vector<double> times;
    for (int it = 0; it < o.warmup + o.iters; ++it) {
      RETURN_IF_ERROR(host.Barrier());
      const double t0 = Seconds();
      RETURN_IF_ERROR(nccl->AllToAllV(send.get(), counts, displs, recv.get(), counts, displs));
      std::vector<double> t = {Seconds() - t0};
      RETURN_IF_ERROR(host.AllReduce(std::span<double>(t), ReduceOp::kMax));
      if (it >= o.warmup) times.push_back(t[0]);
    }
    recv.CopyToHost(host_buf.data(), static_cast<size_t>(bytes));
    std::vector<int64_t> wrong = {0};
    for (int p = 0; p < n; ++p) {
      for (int64_t i = 0; i < block; ++i) wrong[0] += host_buf[p * block + i] != Pattern(p, me, i);
    }
    RETURN_IF_ERROR(host.AllReduce(std::span<int64_t>(wrong), ReduceOp::kSum));
    std::sort(times.begin(), times.end());
    double mean = 0;
    for (double t : times) mean += t / times.size();
    const double p50 = times[times.size() / 2];
    const double algbw = static_cast<double>(bytes) / p50 / 1e9;
    if (me == 0) {
      std::printf("  %8d %12lld %10.1f %10.1f %10.2f %10.2f %8lld\n", tokens,
                  static_cast<long long>(bytes), p50 * 1e6, mean * 1e6, algbw, algbw * (n - 1) / n,
                  static_cast<long long>(wrong[0]));
    }
    if (wrong[0] != 0) {
      return absl::DataLossError(absl::StrCat("all-to-all of ", bytes, " bytes per rank at ",
                                              tokens, " tokens delivered ", wrong[0],
                                              " wrong elements"));
    }
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace tritmoe

int main(int argc, char** argv) {
  return tritmoe::MpiBenchMain<tritmoe::Options>("nccl_a2a_bench", argc, argv, tritmoe::ParseFlag,
                                                 tritmoe::Run);
}
