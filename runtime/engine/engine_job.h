// Running a command on the Engine in every process of a job: under mpirun (one rank per
// process) or as a plain single process.
//
//   EngineJobOptions job;  // job.comm = "auto"
//   RETURN_IF_ERROR(RunEngineJob(job, engine_options, [&](Engine& engine) -> absl::Status {
//     ...  // rank 0 only: engine.Step(...), print the results
//     return absl::OkStatus();
//   }));
//
// Every process calls RunEngineJob with the same options. comm "auto" starts MPI only when a
// launcher started the process (StartedByMpiLauncher: mpirun/srun environment), else the engine
// runs on a LocalCommunicator and MPI is never initialized; "mpi" and "local" force one.
// The body runs on rank 0 (the driver) only; the other ranks serve its steps (RunWorker) and
// return OK when it is done. Only the body prints results, so output comes from rank 0 only.
//
// Failures:
//   * Engine::Create errors that every rank agreed on (IsAgreedFailure: bad options, a model one
//     rank cannot open, ranks with different files or flags): with several ranks, every rank
//     prints the full message to stderr, waits for the others to have printed, and returns a
//     short error (MPI finalized normally); a single process returns the message itself.
//   * An error of the body: the driver shuts the engine down, the workers return OK, and the
//     driver returns the error.
//   * Anything that may leave a rank waiting in a collective (a failed collective, a worker's
//     error, a Shutdown that cannot complete) ends the whole job through MpiSession::Abort, which
//     names the rank and host; a single-process job just returns the error.
#pragma once

#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "runtime/engine/engine.h"

namespace tritmoe {

struct EngineJobOptions {
  std::string comm = "auto";  // auto, mpi or local
  bool report = true;         // rank 0 prints the start-up report (StartupReport) to stderr
};

absl::Status RunEngineJob(const EngineJobOptions& job, const EngineOptions& options,
                          absl::FunctionRef<absl::Status(Engine&)> body);

// Lines describing the job at start-up: ranks, backend, and per rank its pid, host, threads and
// the model bytes it maps (replicated + its own experts, of the whole file).
std::string StartupReport(const Engine& engine, const std::string& backend);

}  // namespace tritmoe
