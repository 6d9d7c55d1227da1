// The MPI backend of Communicator (host memory), and the process-wide MPI session.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<MpiSession> mpi, MpiSession::Init());
//   Communicator& world = mpi->world();
//   absl::Status s = RunEverything(world);
//   if (!s.ok()) mpi->Abort(s);   // never return normally from a failed collective: see below
//
// Failure rule: a rank that hits an error must not simply return and finalize, because its peers
// may be blocked in a collective it will never enter, and MPI_Finalize would then wait for them
// forever. MpiSession::Abort prints the status (with rank and host) and calls MPI_Abort, which
// makes mpirun end every rank with a non-zero exit code.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/communicator.h"

namespace tritmoe {

// Owns one MPI communicator handle and frees it on destruction. Freeing needs MPI to be alive, so
// every handle must be destroyed before MpiSession (a fatal check enforces it).
class MpiCommHandle {
 public:
  MpiCommHandle() = default;
  explicit MpiCommHandle(MPI_Comm comm) : comm_(comm) {}
  ~MpiCommHandle() { Reset(); }
  MpiCommHandle(MpiCommHandle&& other) noexcept : comm_(other.release()) {}
  MpiCommHandle& operator=(MpiCommHandle&& other) noexcept;
  MpiCommHandle(const MpiCommHandle&) = delete;
  MpiCommHandle& operator=(const MpiCommHandle&) = delete;

  MPI_Comm get() const { return comm_; }
  MPI_Comm release() {
    MPI_Comm c = comm_;
    comm_ = MPI_COMM_NULL;
    return c;
  }
  void Reset();

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

class MpiCommunicator final : public Communicator {
 public:
  // Duplicates `parent` (so traffic here never matches messages of other users of `parent`, such
  // as the control plane), switches it to MPI_ERRORS_RETURN, and finds the ranks on this host
  // with MPI_Comm_split_type(MPI_COMM_TYPE_SHARED). Collective over `parent`.
  static absl::StatusOr<std::unique_ptr<MpiCommunicator>> Create(MPI_Comm parent);

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  std::string backend_name() const override { return "mpi"; }

  // The underlying communicator, for bootstrapping other libraries (e.g. broadcasting an NCCL
  // unique id). Owned by this object.
  MPI_Comm comm() const { return comm_.get(); }

 protected:
  absl::Status DoAllToAllV(const void* send, std::span<const int64_t> send_counts,
                           std::span<const int64_t> send_displs, void* recv,
                           std::span<const int64_t> recv_counts,
                           std::span<const int64_t> recv_displs) override;
  absl::Status DoAllReduce(void* data, int64_t count, DataType type, ReduceOp op) override;
  absl::Status DoAllGather(const void* send, int64_t bytes_per_rank, void* recv) override;
  absl::Status DoBroadcast(void* data, int64_t bytes, int root) override;
  absl::Status DoBarrier() override;

 private:
  MpiCommunicator(MpiCommHandle comm, MpiCommHandle node, int rank, int size, int local_rank,
                  int local_size);

  MpiCommHandle comm_;
  MpiCommHandle node_;
  int rank_, size_, local_rank_, local_size_;
  // MPI wants int counts; converted per call into these, kept to avoid allocating every call.
  std::vector<int> send_counts_, send_displs_, recv_counts_, recv_displs_;
};

// MPI for the lifetime of this object: MPI_Init_thread(MPI_THREAD_FUNNELED) (only the engine
// thread calls MPI), MPI_ERRORS_RETURN on MPI_COMM_WORLD, SetProcessIdentity(world rank) so every
// fatal message names the rank, and a world communicator. The destructor frees the world
// communicator and calls MPI_Finalize. MPI can be initialized only once per process, so there is
// at most one session, ever.
class MpiSession {
 public:
  static absl::StatusOr<std::unique_ptr<MpiSession>> Init();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  // All ranks of the job (a duplicate of MPI_COMM_WORLD).
  MpiCommunicator& world() { return *world_; }

  // Ends the whole job: prints "[rank R on HOST] <status>" to stderr and calls
  // MPI_Abort(MPI_COMM_WORLD, exit_code). Use it for any error after which peers could be left
  // waiting in a collective.
  [[noreturn]] void Abort(const absl::Status& status, int exit_code = 1);

 private:
  MpiSession() = default;
  std::unique_ptr<MpiCommunicator> world_;
};

// True when a launcher (mpirun/mpiexec, srun with PMI/PMIx, hydra) started this process, judged
// from the environment variables they set. Lets `--comm auto` pick LocalCommunicator for a plain
// single-process run without starting MPI at all.
bool StartedByMpiLauncher();

}  // namespace tritmoe
