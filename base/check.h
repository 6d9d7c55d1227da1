// The one CHECK macro family for errors that cannot be returned as a Status: failed CUDA/NCCL/MPI
// calls and broken invariants. Each prints the expression, file:line, the rank and the host, then
// aborts the process (mpirun then tears down the other ranks).
//
//   TM_CHECK(cond) << "extra context";   // invariant
//   TM_CHECK_CUDA(cudaMalloc(...));      // defined in base/cuda_check.h (CUDA builds only)
//   TM_CHECK_MPI(MPI_Barrier(comm));     // defined in comm/mpi_check.h
#pragma once

#include <sstream>
#include <string>

namespace tritmoe {

// Process identity used in fatal messages; set once at start-up by the launcher code (rank -1 until
// then). Kept in a function-local static so there is no global constructor order to worry about.
struct ProcessIdentity {
  int rank = -1;
  std::string host;
};
ProcessIdentity& GetProcessIdentity();
void SetProcessIdentity(int rank);  // also reads the host name

// Streams a message and aborts in its destructor.
class FatalMessage {
 public:
  FatalMessage(const char* file, int line, const char* what);
  [[noreturn]] ~FatalMessage();
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

}  // namespace tritmoe

#define TM_CHECK(cond)                                                          \
  if (__builtin_expect(!!(cond), 1)) {                                          \
  } else                                                                        \
    ::tritmoe::FatalMessage(__FILE__, __LINE__, "CHECK failed: " #cond).stream()
