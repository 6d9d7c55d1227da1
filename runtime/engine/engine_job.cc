#include "runtime/engine/engine_job.h"

#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "comm/communicator.h"
#include "comm/mpi_communicator.h"

namespace tritmoe {

std::string StartupReport(const Engine& engine, const std::string& backend) {
  std::string out = absl::StrFormat("engine: %d rank%s (%s)\n", engine.num_ranks(),
                                    engine.num_ranks() == 1 ? "" : "s", backend);
  for (size_t r = 0; r < engine.ranks().size(); ++r) {
    const EngineRankInfo& x = engine.ranks()[r];
    absl::StrAppendFormat(
        &out,
        "  rank %d (pid %d on %s, %d thread%s): weights %.2f MB = replicated %.2f MB + %d "
        "expert-layers %.2f MB, of %.2f MB in the file, on %s\n",
        r, x.pid, x.host, x.threads, x.threads == 1 ? "" : "s",
        (x.replicated_bytes + x.expert_bytes) / 1e6, x.replicated_bytes / 1e6, x.num_local_experts,
        x.expert_bytes / 1e6, x.file_tensor_bytes / 1e6, x.device);
  }
  return out;
}

absl::Status RunEngineJob(const EngineJobOptions& job, const EngineOptions& options,
                          absl::FunctionRef<absl::Status(Engine&)> body) {
  if (job.comm != "auto" && job.comm != "mpi" && job.comm != "local") {
    return absl::InvalidArgumentError(
        absl::StrCat("--comm must be auto, mpi or local, got \"", job.comm, "\""));
  }
  const bool use_mpi = job.comm == "mpi" || (job.comm == "auto" && StartedByMpiLauncher());
  std::unique_ptr<MpiSession> session;  // destroyed last: finalizes MPI after the engine is gone
  LocalCommunicator local;
  Communicator* comm = &local;
  if (use_mpi) {
    ASSIGN_OR_RETURN(session, MpiSession::Init());
    comm = &session->world();
  }
  // Ends the job for errors after which a rank may be waiting in a collective.
  auto fatal = [&](const absl::Status& s) -> absl::Status {
    if (session != nullptr && comm->size() > 1) session->Abort(s);
    return s;
  };

  absl::StatusOr<std::unique_ptr<Engine>> created = Engine::Create(options, comm);
  if (!created.ok()) {
    if (!IsAgreedFailure(created.status())) return fatal(created.status());
    if (comm->size() == 1) return created.status();
    // Every rank reports. The barrier keeps a rank from exiting (after which mpirun kills the
    // rest) before every rank has printed.
    std::fprintf(stderr, "tritmoe: rank %d: %s\n", comm->rank(),
                 std::string(created.status().message()).c_str());
    std::fflush(stderr);
    if (absl::Status b = comm->Barrier(); !b.ok()) return fatal(b);
    return absl::Status(created.status().code(),
                        absl::StrCat("rank ", comm->rank(), ": the engine did not start (above)"));
  }
  Engine& engine = **created;
  if (!engine.is_driver()) {
    absl::Status s = engine.RunWorker();
    return s.ok() ? s : fatal(s);
  }
  if (job.report) {
    std::fprintf(stderr, "%s", StartupReport(engine, comm->backend_name()).c_str());
  }
  absl::Status s = body(engine);
  absl::Status down = engine.Shutdown();
  if (!down.ok()) return fatal(s.ok() ? down : s);
  return s;
}

}  // namespace tritmoe
