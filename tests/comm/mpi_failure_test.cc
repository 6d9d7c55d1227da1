// One rank fails in a chosen way while the others are busy in collectives; the job must end
// (mpirun exits non-zero) instead of hanging. Run by tests/comm/expect_job_fails.sh, which
// asserts exactly that within a time limit.
//
//   mpi_failure_test MODE    MODE: abort | status | exit | exit0 | check | mpi_check
//     abort      the last rank calls MpiSession::Abort (the runtime's path for fatal errors)
//     status     the last rank gets an error Status from a collective and aborts with it
//     exit       the last rank exits with code 3 without MPI_Finalize
//     exit0      the last rank exits with code 0 without MPI_Finalize
//     check      the last rank fails a TM_CHECK (SIGABRT)
//     mpi_check  the last rank fails a TM_CHECK_MPI (an erroneous MPI call)
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "base/check.h"
#include "comm/mpi_check.h"
#include "comm/mpi_communicator.h"

namespace tritmoe {
namespace {

int Run(const std::string& mode) {
  auto session = MpiSession::Init();
  if (!session.ok()) {
    std::fprintf(stderr, "MPI start failed: %s\n", session.status().ToString().c_str());
    return 1;
  }
  Communicator& comm = (*session)->world();
  const int n = comm.size();
  const bool victim = comm.rank() == n - 1;
  std::vector<int64_t> counts(n, 64), displs(n);
  for (int p = 0; p < n; ++p) displs[p] = 64 * p;
  std::vector<char> send(64 * n, 1), recv(64 * n);
  // The survivors would loop forever: only the failure (or the caller's timeout) ends them.
  for (int64_t iter = 0;; ++iter) {
    if (victim && iter == 20) {
      if (mode == "abort") {
        (*session)->Abort(absl::InternalError("injected failure"), 7);
      } else if (mode == "status") {
        std::vector<int64_t> bad(n, -1);
        absl::Status s = comm.AllToAllV(send.data(), bad, displs, recv.data(), counts, displs);
        (*session)->Abort(s);
      } else if (mode == "exit") {
        std::_Exit(3);
      } else if (mode == "exit0") {
        std::_Exit(0);
      } else if (mode == "check") {
        TM_CHECK(iter < 20) << "injected failure";
      } else if (mode == "mpi_check") {
        TM_CHECK_MPI(MPI_Send(send.data(), -1, MPI_BYTE, 0, 0, MPI_COMM_WORLD)) << "injected";
      } else {
        std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
        (*session)->Abort(absl::InvalidArgumentError("unknown mode"));
      }
    }
    absl::Status s = comm.AllToAllV(send.data(), counts, displs, recv.data(), counts, displs);
    if (s.ok()) s = comm.Barrier();
    if (!s.ok()) (*session)->Abort(s);
  }
}

}  // namespace
}  // namespace tritmoe

int main(int argc, char** argv) { return tritmoe::Run(argc > 1 ? argv[1] : "abort"); }
