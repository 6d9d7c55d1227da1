// main() of an MPI benchmark (bench/*_bench.cc run under mpirun): --name=value flags parsed into
// Options one by one, Options::Validate(), an MpiSession, then the run. Bad flags exit 2 before
// MPI starts; a failed run aborts the whole job, because a peer may be waiting in a collective.
#pragma once

#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "comm/mpi_communicator.h"

namespace tritmoe {

template <class Options>
int MpiBenchMain(const char* name, int argc, char** argv,
                 absl::Status (*parse_flag)(const std::string&, Options*),
                 absl::Status (*run)(MpiSession&, const Options&)) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    if (absl::Status s = parse_flag(argv[i], &o); !s.ok()) {
      std::fprintf(stderr, "%s: %s\n", name, std::string(s.message()).c_str());
      return 2;
    }
  }
  if (absl::Status s = o.Validate(); !s.ok()) {
    std::fprintf(stderr, "%s: %s\n", name, std::string(s.message()).c_str());
    return 2;
  }
  auto mpi = MpiSession::Init();
  if (!mpi.ok()) {
    std::fprintf(stderr, "%s: %s\n", name, std::string(mpi.status().message()).c_str());
    return 1;
  }
  if (absl::Status s = run(**mpi, o); !s.ok()) (*mpi)->Abort(s);
  return 0;
}

}  // namespace tritmoe
