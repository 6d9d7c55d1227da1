// Collectives over device buffers that are only enqueued on the caller's stream: no host
// synchronization, so that they can sit inside a captured CUDA graph (the device expert exchange,
// device_expert_exchange.h). Implemented by NcclCommunicator (nccl_communicator.h); this header
// has no NCCL types so that GpuModel builds without NCCL.
//
// Contracts: every rank calls the same collectives in the same order with the same `tokens`
// vector (byte counts are derived from it on the host; they are baked into a captured graph).
// Buffers are device pointers on this rank's GPU; a zero count sends or receives nothing (its
// pointers may be null).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <span>

#include "absl/status/status.h"

namespace tritmoe::gpu {

// One array gathered by token: rank r's tokens[r] rows of row_bytes each.
struct GatherPart {
  const void* send = nullptr;  // this rank's [tokens[rank]][row_bytes]
  void* recv = nullptr;        // every rank's rows, in rank order: [sum tokens][row_bytes]
  int64_t row_bytes = 0;
};

class DeviceCollectives {
 public:
  virtual ~DeviceCollectives() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Every rank's rows of every part to every rank (an all-gather with per-rank counts), in one
  // group. tokens: [size()] rows per rank.
  virtual absl::Status EnqueueGatherV(std::span<const GatherPart> parts,
                                      std::span<const int32_t> tokens, cudaStream_t stream) = 0;
  // Block p of `send` (send_bytes[p] bytes at send_displs[p]) to rank p, and rank p's block for
  // this rank into recv at recv_displs[p] (recv_bytes[p] bytes). Spans of size().
  virtual absl::Status EnqueueAllToAllV(const void* send, std::span<const int64_t> send_bytes,
                                        std::span<const int64_t> send_displs, void* recv,
                                        std::span<const int64_t> recv_bytes,
                                        std::span<const int64_t> recv_displs,
                                        cudaStream_t stream) = 0;
};

}  // namespace tritmoe::gpu
