#include "runtime/gpu/nccl_communicator.h"

#include <nccl.h>

#include <cstdio>
#include <string>
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
  // Rank 0's id goes out with a flag, and every rank's init result comes back to all, so that a
  // failure anywhere fails every rank with the same message.
  struct IdMessage {
    int32_t ok = 0;
    char error[200] = {};
    ncclUniqueId id;
  } msg;
  if (c->rank_ == 0) {
    const absl::Status s = FromNccl(ncclGetUniqueId(&msg.id), "GetUniqueId", c->rank_);
    msg.ok = s.ok() ? 1 : 0;
    if (!s.ok())
      std::snprintf(msg.error, sizeof(msg.error), "%s", std::string(s.message()).c_str());
  }
  RETURN_IF_ERROR(host.Broadcast(&msg, sizeof(msg), 0));
  if (msg.ok == 0) {
    return absl::FailedPreconditionError(absl::StrCat("NCCL start failed on rank 0: ", msg.error));
  }
  c->comm_ = std::make_unique<Handle>();
  const absl::Status init = FromNccl(ncclCommInitRank(&c->comm_->comm, c->size_, msg.id, c->rank_),
                                     "CommInitRank", c->rank_);
  struct InitResult {
    int32_t ok = 0;
    char error[200] = {};
  } mine;
  mine.ok = init.ok() ? 1 : 0;
  if (!init.ok())
    std::snprintf(mine.error, sizeof(mine.error), "%s", std::string(init.message()).c_str());
  std::vector<InitResult> all(c->size_);
  RETURN_IF_ERROR(host.AllGather(&mine, sizeof(InitResult), all.data()));
  std::string failed;
  for (int r = 0; r < c->size_; ++r) {
    if (all[r].ok == 0) absl::StrAppend(&failed, "\n  rank ", r, ": ", all[r].error);
  }
  if (!failed.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("NCCL start failed on some ranks:", failed));
  }
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

absl::Status NcclCommunicator::EnqueueGatherV(std::span<const GatherPart> parts,
                                              std::span<const int32_t> tokens,
                                              cudaStream_t stream) {
  if (static_cast<int>(tokens.size()) != size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("EnqueueGatherV: ", tokens.size(), " token counts for ", size_, " ranks"));
  }
  RETURN_IF_ERROR(FromNccl(ncclGroupStart(), "GroupStart", rank_));
  absl::Status st;
  for (const GatherPart& part : parts) {
    const int64_t mine = int64_t{tokens[rank_]} * part.row_bytes;
    int64_t offset = 0;
    for (int p = 0; p < size_ && st.ok(); ++p) {
      const int64_t theirs = int64_t{tokens[p]} * part.row_bytes;
      if (mine > 0) {
        st = FromNccl(ncclSend(part.send, mine, ncclUint8, p, comm_->comm, stream), "Send", rank_);
      }
      if (st.ok() && theirs > 0) {
        st = FromNccl(ncclRecv(static_cast<uint8_t*>(part.recv) + offset, theirs, ncclUint8, p,
                               comm_->comm, stream),
                      "Recv", rank_);
      }
      offset += theirs;
    }
  }
  const absl::Status end = FromNccl(ncclGroupEnd(), "GroupEnd (gather)", rank_);
  RETURN_IF_ERROR(st);
  return end;
}

absl::Status NcclCommunicator::EnqueueAllToAllV(const void* send,
                                                std::span<const int64_t> send_bytes,
                                                std::span<const int64_t> send_displs, void* recv,
                                                std::span<const int64_t> recv_bytes,
                                                std::span<const int64_t> recv_displs,
                                                cudaStream_t stream) {
  const size_t n = static_cast<size_t>(size_);
  if (send_bytes.size() != n || send_displs.size() != n || recv_bytes.size() != n ||
      recv_displs.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("EnqueueAllToAllV: spans must have ", size_, " entries"));
  }
  const auto* s = static_cast<const uint8_t*>(send);
  auto* r = static_cast<uint8_t*>(recv);
  RETURN_IF_ERROR(FromNccl(ncclGroupStart(), "GroupStart", rank_));
  absl::Status st;
  for (int p = 0; p < size_ && st.ok(); ++p) {
    if (send_bytes[p] > 0) {
      st = FromNccl(ncclSend(s + send_displs[p], send_bytes[p], ncclUint8, p, comm_->comm, stream),
                    "Send", rank_);
    }
    if (st.ok() && recv_bytes[p] > 0) {
      st = FromNccl(ncclRecv(r + recv_displs[p], recv_bytes[p], ncclUint8, p, comm_->comm, stream),
                    "Recv", rank_);
    }
  }
  const absl::Status end = FromNccl(ncclGroupEnd(), "GroupEnd (all-to-all)", rank_);
  RETURN_IF_ERROR(st);
  return end;
}

}  // namespace tritmoe::gpu
