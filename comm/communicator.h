// The collective-communication interface every rank-parallel part of TritMoE talks to.
//
// One Communicator is one group of ranks (an MPI communicator today, an NCCL communicator later).
// Contracts, for every backend:
//   * Lockstep: every rank of the group calls every collective, in the same order, with matching
//     arguments (the same root, count and type; AllToAllV's counts must agree pairwise: what rank a
//     sends to b is what b expects from a). A rank with nothing to contribute still calls, with
//     zero counts: zero-size contributions are always allowed, and a buffer pointer may then be
//     null.
//   * Errors come back as absl::Status and name the call, rank and host. A collective that failed
//     on one rank may leave the others blocked in it, so a caller that gets an error must end the
//     job (MpiSession::Abort) instead of carrying on: that is how a failure becomes a clean stop
//     everywhere instead of a hang.
//   * Buffers live in host memory for the MPI and local backends; a device backend documents its
//     own rule. Send and receive buffers of one call must not overlap.
//   * Thread use: one thread per process calls collectives (the MPI backend runs under
//     MPI_THREAD_FUNNELED). Calls block until this rank's part is complete.
//
// Byte counts and displacements are int64 so no caller has to think about MPI's int limits; a
// backend that cannot carry a size says so with OutOfRangeError.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tritmoe {

enum class ReduceOp { kSum, kMax };
enum class DataType { kFloat32, kFloat64, kInt64 };

// Bytes of one element of `type`.
int64_t DataTypeSize(DataType type);
const char* DataTypeName(DataType type);
const char* ReduceOpName(ReduceOp op);

template <typename T>
constexpr DataType DataTypeOf() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, int64_t>,
                "collectives reduce float, double or int64_t");
  if constexpr (std::is_same_v<T, float>) return DataType::kFloat32;
  if constexpr (std::is_same_v<T, double>) return DataType::kFloat64;
  return DataType::kInt64;
}

class Communicator {
 public:
  virtual ~Communicator() = default;

  // This rank in the group, in [0, size()).
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // This rank among the group's ranks on the same host (shared memory), and how many there are.
  // The GPU backend picks its device by local_rank().
  virtual int local_rank() const = 0;
  virtual int local_size() const = 0;
  // "mpi", "local", ...: for logs and benchmark headers.
  virtual std::string backend_name() const = 0;

  // Personalized all-to-all on bytes. send_counts[p] bytes starting at send + send_displs[p] go
  // to rank p; recv_counts[p] bytes from rank p land at recv + recv_displs[p]. All four spans
  // have size() entries, all values >= 0. recv_counts[p] must equal what p passes as its
  // send_counts[rank()] (exchange counts first when they are data-dependent).
  absl::Status AllToAllV(const void* send, std::span<const int64_t> send_counts,
                         std::span<const int64_t> send_displs, void* recv,
                         std::span<const int64_t> recv_counts,
                         std::span<const int64_t> recv_displs);

  // Fixed-size all-to-all: block p of `bytes_per_rank` bytes (at send + p * bytes_per_rank) goes
  // to rank p; block from rank p lands at recv + p * bytes_per_rank.
  absl::Status AllToAll(const void* send, void* recv, int64_t bytes_per_rank);

  // In-place reduction of `count` elements of `type` at `data` across all ranks; every rank ends
  // with the result. Sums of floating-point values may differ in the last bit from a sequential
  // sum (backend reduction order), but every rank receives the same bits.
  absl::Status AllReduce(void* data, int64_t count, DataType type, ReduceOp op);
  template <typename T>
  absl::Status AllReduce(std::span<T> data, ReduceOp op) {
    return AllReduce(data.data(), static_cast<int64_t>(data.size()), DataTypeOf<T>(), op);
  }

  // Every rank contributes `bytes_per_rank` bytes; recv (size() * bytes_per_rank bytes) holds
  // rank p's contribution at offset p * bytes_per_rank, on every rank.
  absl::Status AllGather(const void* send, int64_t bytes_per_rank, void* recv);
  template <typename T>
  absl::Status AllGather(std::span<const T> send, std::span<T> recv) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (recv.size() != send.size() * static_cast<size_t>(size())) {
      return absl::InvalidArgumentError(absl::StrCat("AllGather: recv has ", recv.size(),
                                                     " elements, expected ", send.size(), " x ",
                                                     size(), " ranks"));
    }
    return AllGather(send.data(), static_cast<int64_t>(send.size_bytes()), recv.data());
  }

  // `bytes` bytes at `data` on rank `root` are copied to `data` on every rank.
  absl::Status Broadcast(void* data, int64_t bytes, int root);

  // Returns once every rank has entered it.
  absl::Status Barrier();

 protected:
  // Backends implement these; the public wrappers above have already validated the arguments
  // (sizes, signs, root in range) so a backend only moves bytes.
  virtual absl::Status DoAllToAllV(const void* send, std::span<const int64_t> send_counts,
                                   std::span<const int64_t> send_displs, void* recv,
                                   std::span<const int64_t> recv_counts,
                                   std::span<const int64_t> recv_displs) = 0;
  virtual absl::Status DoAllReduce(void* data, int64_t count, DataType type, ReduceOp op) = 0;
  virtual absl::Status DoAllGather(const void* send, int64_t bytes_per_rank, void* recv) = 0;
  virtual absl::Status DoBroadcast(void* data, int64_t bytes, int root) = 0;
  virtual absl::Status DoBarrier() = 0;
};

// The group of one: the engine's communicator when no launcher started it. Every collective is a
// local copy (or nothing); rank 0, size 1, local_rank 0, local_size 1.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  std::string backend_name() const override { return "local"; }

 protected:
  absl::Status DoAllToAllV(const void* send, std::span<const int64_t> send_counts,
                           std::span<const int64_t> send_displs, void* recv,
                           std::span<const int64_t> recv_counts,
                           std::span<const int64_t> recv_displs) override;
  absl::Status DoAllReduce(void* data, int64_t count, DataType type, ReduceOp op) override;
  absl::Status DoAllGather(const void* send, int64_t bytes_per_rank, void* recv) override;
  absl::Status DoBroadcast(void* data, int64_t bytes, int root) override;
  absl::Status DoBarrier() override;
};

}  // namespace tritmoe
