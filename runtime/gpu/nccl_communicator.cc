#include "runtime/gpu/nccl_communicator.h"

#include <nccl.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/status_macros.h"

namespace tritmoe::gpu {

struct NcclCommunicator::Handle {
  ncclComm_t comm = nullptr;
};

namespace {

std::string Where(int rank) {
  const ProcessIdentity& id = GetProcessIdentity();
  return absl::StrCat("rank ", rank, " on ", id.host.empty() ? "this host" : id.host);
}

absl::Status FromNccl(ncclResult_t r, const char* what, int rank) {
  if (r == ncclSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat("NCCL ", what, " failed (", Where(rank), "): ", ncclGetErrorString(r)));
}

absl::Status FromCuda(cudaError_t e, const char* what, int rank) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("CUDA ", what, " failed (", Where(rank),
                                          "): ", cudaGetErrorName(e), " ", cudaGetErrorString(e)));
}

ncclDataType_t NcclType(DataType t) {
  switch (t) {
    case DataType::kFloat32:
      return ncclFloat32;
    case DataType::kFloat64:
      return ncclFloat64;
    case DataType::kInt64:
      return ncclInt64;
  }
  return ncclFloat32;
}

}  // namespace

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(Communicator& host,
                                                                           int device) {
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator());
  c->rank_ = host.rank();
  c->size_ = host.size();
  c->local_rank_ = host.local_rank();
  c->local_size_ = host.local_size();
  c->device_ = device >= 0 ? device : host.local_rank();
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || c->device_ >= n_dev) {
    cudaGetLastError();
    // A rank without its GPU cannot join; its peers block in the id broadcast until the caller
    // ends the job (the interface's failure rule: abort on a failed collective).
    return absl::FailedPreconditionError(absl::StrCat("NCCL communicator: ", Where(c->rank_),
                                                      " needs CUDA device ", c->device_, ", ",
                                                      n_dev, " visible"));
  }
  RETURN_IF_ERROR(FromCuda(cudaSetDevice(c->device_), "cudaSetDevice", c->rank_));
  ncclUniqueId id;
  if (c->rank_ == 0) RETURN_IF_ERROR(FromNccl(ncclGetUniqueId(&id), "GetUniqueId", c->rank_));
  RETURN_IF_ERROR(host.Broadcast(&id, sizeof(id), 0));
  c->comm_ = std::make_unique<Handle>();
  RETURN_IF_ERROR(FromNccl(ncclCommInitRank(&c->comm_->comm, c->size_, id, c->rank_),
                           "CommInitRank", c->rank_));
  RETURN_IF_ERROR(FromCuda(cudaStreamCreateWithFlags(&c->stream_, cudaStreamNonBlocking),
                           "stream create", c->rank_));
  RETURN_IF_ERROR(FromCuda(cudaMalloc(&c->barrier_word_, sizeof(float)), "cudaMalloc", c->rank_));
  return c;
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ != nullptr && comm_->comm != nullptr) ncclCommDestroy(comm_->comm);
  if (barrier_word_ != nullptr) cudaFree(barrier_word_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

absl::Status NcclCommunicator::Finish(const char* what) {
  return FromCuda(cudaStreamSynchronize(stream_), what, rank_);
}

absl::Status NcclCommunicator::DoAllToAllV(const void* send, std::span<const int64_t> send_counts,
                                           std::span<const int64_t> send_displs, void* recv,
                                           std::span<const int64_t> recv_counts,
                                           std::span<const int64_t> recv_displs) {
  const auto* s = static_cast<const uint8_t*>(send);
  auto* r = static_cast<uint8_t*>(recv);
  RETURN_IF_ERROR(FromNccl(ncclGroupStart(), "GroupStart", rank_));
  absl::Status st;
  for (int p = 0; p < size_ && st.ok(); ++p) {
    if (send_counts[p] > 0) {
      st =
          FromNccl(ncclSend(s + send_displs[p], send_counts[p], ncclUint8, p, comm_->comm, stream_),
                   "Send", rank_);
    }
    if (st.ok() && recv_counts[p] > 0) {
      st =
          FromNccl(ncclRecv(r + recv_displs[p], recv_counts[p], ncclUint8, p, comm_->comm, stream_),
                   "Recv", rank_);
    }
  }
  const absl::Status end = FromNccl(ncclGroupEnd(), "GroupEnd (all-to-all)", rank_);
  RETURN_IF_ERROR(st);
  RETURN_IF_ERROR(end);
  return Finish("all-to-all");
}

absl::Status NcclCommunicator::DoAllReduce(void* data, int64_t count, DataType type, ReduceOp op) {
  RETURN_IF_ERROR(
      FromNccl(ncclAllReduce(data, data, count, NcclType(type),
                             op == ReduceOp::kSum ? ncclSum : ncclMax, comm_->comm, stream_),
               "AllReduce", rank_));
  return Finish("all-reduce");
}

absl::Status NcclCommunicator::DoAllGather(const void* send, int64_t bytes_per_rank, void* recv) {
  RETURN_IF_ERROR(
      FromNccl(ncclAllGather(send, recv, bytes_per_rank, ncclUint8, comm_->comm, stream_),
               "AllGather", rank_));
  return Finish("all-gather");
}

absl::Status NcclCommunicator::DoBroadcast(void* data, int64_t bytes, int root) {
  RETURN_IF_ERROR(FromNccl(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_->comm, stream_),
                           "Broadcast", rank_));
  return Finish("broadcast");
}

absl::Status NcclCommunicator::DoBarrier() {
  RETURN_IF_ERROR(FromNccl(
      ncclAllReduce(barrier_word_, barrier_word_, 1, ncclFloat32, ncclSum, comm_->comm, stream_),
      "Barrier", rank_));
  return Finish("barrier");
}

}  // namespace tritmoe::gpu
