#include "comm/communicator.h"

#include <cstring>
#include <vector>

namespace tritmoe {
namespace {

absl::Status CheckCountsAndDispls(const char* what, int n_ranks, std::span<const int64_t> counts,
                                  std::span<const int64_t> displs, const void* buffer) {
  if (counts.size() != static_cast<size_t>(n_ranks) ||
      displs.size() != static_cast<size_t>(n_ranks)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AllToAllV: ", std::string(what), " counts (", counts.size(), ") and displacements (",
        displs.size(), ") must have one entry per rank (", n_ranks, ")"));
  }
  for (int p = 0; p < n_ranks; ++p) {
    if (counts[p] < 0 || displs[p] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("AllToAllV: negative ", std::string(what),
                                                     " count or displacement for rank ", p, " (",
                                                     counts[p], ", ", displs[p], ")"));
    }
    if (counts[p] > 0 && buffer == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("AllToAllV: null ", std::string(what),
                                                     " buffer with ", counts[p], " bytes for rank ",
                                                     p));
    }
  }
  return absl::OkStatus();
}

}  // namespace

int64_t DataTypeSize(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return 4;
    case DataType::kFloat64:
    case DataType::kInt64:
      return 8;
  }
  return 0;
}

const char* DataTypeName(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return "float32";
    case DataType::kFloat64:
      return "float64";
    case DataType::kInt64:
      return "int64";
  }
  return "?";
}

const char* ReduceOpName(ReduceOp op) { return op == ReduceOp::kSum ? "sum" : "max"; }

absl::Status Communicator::AllToAllV(const void* send, std::span<const int64_t> send_counts,
                                     std::span<const int64_t> send_displs, void* recv,
                                     std::span<const int64_t> recv_counts,
                                     std::span<const int64_t> recv_displs) {
  absl::Status s = CheckCountsAndDispls("send", size(), send_counts, send_displs, send);
  if (!s.ok()) return s;
  s = CheckCountsAndDispls("recv", size(), recv_counts, recv_displs, recv);
  if (!s.ok()) return s;
  return DoAllToAllV(send, send_counts, send_displs, recv, recv_counts, recv_displs);
}

absl::Status Communicator::AllToAll(const void* send, void* recv, int64_t bytes_per_rank) {
  if (bytes_per_rank < 0) {
    return absl::InvalidArgumentError(absl::StrCat("AllToAll: negative size ", bytes_per_rank));
  }
  std::vector<int64_t> counts(size(), bytes_per_rank);
  std::vector<int64_t> displs(size());
  for (int p = 0; p < size(); ++p) displs[p] = p * bytes_per_rank;
  return AllToAllV(send, counts, displs, recv, counts, displs);
}

absl::Status Communicator::AllReduce(void* data, int64_t count, DataType type, ReduceOp op) {
  if (count < 0 || (count > 0 && data == nullptr)) {
    return absl::InvalidArgumentError(
        absl::StrCat("AllReduce: bad buffer (", count, " elements, null=", data == nullptr, ")"));
  }
  return DoAllReduce(data, count, type, op);
}

absl::Status Communicator::AllGather(const void* send, int64_t bytes_per_rank, void* recv) {
  if (bytes_per_rank < 0 || (bytes_per_rank > 0 && (send == nullptr || recv == nullptr))) {
    return absl::InvalidArgumentError(
        absl::StrCat("AllGather: bad buffers (", bytes_per_rank, " bytes per rank)"));
  }
  return DoAllGather(send, bytes_per_rank, recv);
}

absl::Status Communicator::Broadcast(void* data, int64_t bytes, int root) {
  if (root < 0 || root >= size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Broadcast: root ", root, " is not a rank of this group of ", size()));
  }
  if (bytes < 0 || (bytes > 0 && data == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("Broadcast: bad buffer (", bytes, " bytes)"));
  }
  return DoBroadcast(data, bytes, root);
}

absl::Status Communicator::Barrier() { return DoBarrier(); }

// ---- LocalCommunicator ----

absl::Status LocalCommunicator::DoAllToAllV(const void* send, std::span<const int64_t> send_counts,
                                            std::span<const int64_t> send_displs, void* recv,
                                            std::span<const int64_t> recv_counts,
                                            std::span<const int64_t> recv_displs) {
  // With one rank the pairwise agreement is checkable, so check it.
  if (send_counts[0] != recv_counts[0]) {
    return absl::InvalidArgumentError(absl::StrCat("AllToAllV: rank 0 sends ", send_counts[0],
                                                   " bytes to itself but expects ",
                                                   recv_counts[0]));
  }
  if (send_counts[0] > 0) {
    std::memmove(static_cast<char*>(recv) + recv_displs[0],
                 static_cast<const char*>(send) + send_displs[0], send_counts[0]);
  }
  return absl::OkStatus();
}

absl::Status LocalCommunicator::DoAllReduce(void*, int64_t, DataType, ReduceOp) {
  return absl::OkStatus();
}

absl::Status LocalCommunicator::DoAllGather(const void* send, int64_t bytes_per_rank, void* recv) {
  if (bytes_per_rank > 0 && send != recv) std::memmove(recv, send, bytes_per_rank);
  return absl::OkStatus();
}

absl::Status LocalCommunicator::DoBroadcast(void*, int64_t, int) { return absl::OkStatus(); }

absl::Status LocalCommunicator::DoBarrier() { return absl::OkStatus(); }

}  // namespace tritmoe
