// The main() of a test run under tests/mpi/mpirun.sh -np N with one MODEL_DIR argument:
//
//   int main(int argc, char** argv) { return tritmoe::MpiTestMain(argc, argv, tritmoe::Run); }
//
// `run(world, dir)` runs on every rank; a failing Status on any rank aborts the whole job (naming
// the rank), so the job's exit code is non-zero and no rank waits forever; rank 0 prints PASS.
#pragma once

#include <cstdio>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "comm/mpi_communicator.h"

namespace tritmoe {

inline int MpiTestMain(int argc, char** argv,
                       absl::FunctionRef<absl::Status(Communicator&, const std::string&)> run) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  auto session = MpiSession::Init();
  if (!session.ok()) {
    std::fprintf(stderr, "%s\n", std::string(session.status().message()).c_str());
    return 1;
  }
  absl::Status s = run((*session)->world(), argv[1]);
  if (!s.ok()) (*session)->Abort(s);
  if ((*session)->world().rank() == 0) std::printf("PASS\n");
  return 0;
}

}  // namespace tritmoe
