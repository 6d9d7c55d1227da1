#include "comm/mpi_check.h"

#include <mpi.h>

#include "absl/strings/str_cat.h"

namespace tritmoe {

std::string MpiErrorString(int rc) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  int error_class = 0;
  std::string out;
  // MPI_Error_class/_string are callable before MPI_Init and after MPI_Finalize.
  if (MPI_Error_class(rc, &error_class) == MPI_SUCCESS && error_class != rc) {
    if (MPI_Error_string(error_class, text, &len) == MPI_SUCCESS)
      out = std::string(text, len) + ": ";
  }
  len = 0;
  if (MPI_Error_string(rc, text, &len) == MPI_SUCCESS) {
    out += std::string(text, len);
  } else {
    out += absl::StrCat("MPI error code ", rc);
  }
  return out;
}

absl::Status MpiCallStatus(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return absl::OkStatus();
  const ProcessIdentity& id = GetProcessIdentity();
  std::string host = id.host.empty() ? std::string("?") : id.host;
  return absl::InternalError(absl::StrCat(std::string(call), " failed on rank ", id.rank, " (host ",
                                          host, "): ", MpiErrorString(rc)));
}

}  // namespace tritmoe
