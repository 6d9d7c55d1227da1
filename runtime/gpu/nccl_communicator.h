// The NCCL backend of Communicator (comm/communicator.h): the same collectives on device memory,
// one GPU per rank, NCCL choosing NVLink or the network.
//
//   ASSIGN_OR_RETURN(auto mpi, MpiSession::Init());
//   ASSIGN_OR_RETURN(auto nccl, gpu::NcclCommunicator::Create(mpi->world()));
//   RETURN_IF_ERROR(nccl->AllToAllV(d_send, counts, displs, d_recv, rcounts, rdispls));
//
// Bootstrap: rank 0 creates the NCCL unique id and the host communicator (MPI) broadcasts it;
// every rank selects its device (default: its local rank) and joins. Contracts beyond the
// interface's: every buffer is a device pointer on this rank's GPU; collectives run on this
// communicator's stream and return once they are complete there (cudaStreamSynchronize), so
// callers may reuse buffers at once. Do not set NCCL_NVLS_ENABLE=1 on shared machines.
// As DeviceCollectives (device_collectives.h) it also enqueues grouped sends / receives on a
// caller's stream without waiting (capturable in CUDA graphs).
//
// Start-up failures are agreed: Create reports a failure on every rank (rank 0's id, or any
// rank's ncclCommInitRank, through a flag gathered over `host`) instead of leaving peers waiting,
// provided every rank of `host` calls it. A peer that dies inside ncclCommInitRank can still
// leave the others waiting there (NCCL's own bootstrap).
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "runtime/gpu/device_collectives.h"

namespace tritmoe::gpu {

class NcclCommunicator final : public Communicator, public DeviceCollectives {
 public:
  // Collective over `host` (every rank of it calls). device < 0: host.local_rank().
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(Communicator& host,
                                                                  int device = -1);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  std::string backend_name() const override { return "nccl"; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }

  absl::Status EnqueueGatherV(std::span<const GatherPart> parts, std::span<const int32_t> tokens,
                              cudaStream_t stream) override;
  absl::Status EnqueueAllToAllV(const void* send, std::span<const int64_t> send_bytes,
                                std::span<const int64_t> send_displs, void* recv,
                                std::span<const int64_t> recv_bytes,
                                std::span<const int64_t> recv_displs, cudaStream_t stream) override;

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
  struct Handle;  // ncclComm_t without nccl.h in this header
  NcclCommunicator() = default;
  absl::Status Finish(const char* what);  // waits for the stream, names the call on failure

  std::unique_ptr<Handle> comm_;
  cudaStream_t stream_ = nullptr;
  void* barrier_word_ = nullptr;  // device scratch for Barrier
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1, device_ = 0;
};

}  // namespace tritmoe::gpu
