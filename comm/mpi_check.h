// MPI error handling in one place.
//
// Library code turns a failed MPI call into an absl::Status that names the call, the rank and the
// host, and returns it (communicators are created with MPI_ERRORS_RETURN so a failure comes back
// as a return code instead of aborting inside MPI):
//
//   TM_RETURN_IF_MPI_ERROR(MPI_Barrier(comm));
//
// Where no Status can be returned (destructors, start-up before any caller exists) a failure is
// fatal; the process aborts and mpirun tears the job down:
//
//   TM_CHECK_MPI(MPI_Comm_free(&comm));
#pragma once

#include <string>

#include "absl/status/status.h"
#include "base/check.h"

namespace tritmoe {

// "MPI_Alltoallv failed on rank 3 (host n17): MPI_ERR_TRUNCATE: message truncated" as an
// absl::Status; OkStatus when rc == MPI_SUCCESS. `call` is the expression text.
absl::Status MpiCallStatus(int rc, const char* call);

// The MPI library's text for an error code ("MPI_ERR_COMM: invalid communicator").
std::string MpiErrorString(int rc);

}  // namespace tritmoe

#define TM_RETURN_IF_MPI_ERROR(call)                      \
  do {                                                    \
    const int tm_mpi_rc_ = (call);                        \
    if (tm_mpi_rc_ != 0 /* MPI_SUCCESS */) {              \
      return ::tritmoe::MpiCallStatus(tm_mpi_rc_, #call); \
    }                                                     \
  } while (0)

// FatalMessage prints "[rank R on HOST] file:line: MPI call failed: <call> <MPI error text>".
#define TM_CHECK_MPI(call)                                                         \
  for (int tm_mpi_rc_ = (call); tm_mpi_rc_ != 0 /* MPI_SUCCESS */; tm_mpi_rc_ = 0) \
  ::tritmoe::FatalMessage(__FILE__, __LINE__, "MPI call failed: " #call).stream()  \
      << ::tritmoe::MpiErrorString(tm_mpi_rc_) << " "
