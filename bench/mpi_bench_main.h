// main() of an MPI benchmark (bench/*_bench.cc run under mpirun): --name=value flags parsed into
// Options one by one, Options::Validate(), an MpiSession, then the run. Bad flags exit 2 before
// MPI starts; a failed run aborts the whole job, because a peer may be waiting in a collective.
#pragma once

#include <cstdio>
#include <initializer_list>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "comm/mpi_communicator.h"

namespace tritmoe {

// One --name=value flag into the int field of that name; an unknown name or a value that is not
// an integer is an error naming it.
inline absl::Status ParseIntFlag(const std::string& arg,
                                 std::initializer_list<std::pair<const char*, int*>> fields) {
  const size_t eq = arg.find('=');
  if (arg.rfind("--", 0) != 0 || eq == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("expected --name=value, got '", arg, "'"));
  }
  const std::string name = arg.substr(2, eq - 2), value = arg.substr(eq + 1);
  for (const auto& [field_name, field] : fields) {
    if (name != field_name) continue;
    if (!absl::SimpleAtoi(value, field)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, ": not an integer: '", value, "'"));
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
}

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
