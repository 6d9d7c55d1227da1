// The model store: where a rank reads tensor bytes that it does not keep resident (the routed
// experts, through the expert cache). A store is a GGUF file or split set read with pread
// (FileStore) or a `tritmoe store` server reached over gRPC (GrpcStore); both serve the same
// bytes, verified chunk by chunk against CRC-32C checksums (checksum_manifest.h).
//
//   ASSIGN_OR_RETURN(std::unique_ptr<ExpertStore> store, OpenExpertStore("grpc://host:7070"));
//   std::vector<uint8_t> buf(size);
//   RETURN_IF_ERROR(store->Read({{"blk.3.ffn_up_exps.weight", offset, size, buf.data()}}));
//
// Errors name the store, the tensor and the byte offset: NotFound (no such tensor), OutOfRange
// (a range past the tensor's end), DataLoss (a chunk whose checksum stays wrong after a re-read, a
// truncated shard), Unavailable (a server that stays unreachable after the retries), Internal
// (other I/O failures). A read that fails never leaves unverified bytes behind as if they were
// good: the caller must treat every destination of a failed Read as garbage.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "experts/quant_type.h"
#include "runtime/gguf/gguf.h"

namespace tritmoe {

// One tensor as the store describes it (the GGUF tensor table, without file offsets).
struct StoreTensor {
  std::string name;
  GgmlType type = GgmlType::kF32;
  int n_dims = 1;
  std::array<int64_t, 4> ne = {1, 1, 1, 1};
  uint64_t nbytes = 0;
};

// Bytes [offset, offset + size) of `tensor` into dst (size bytes). `tensor` must stay alive for
// the call.
struct ReadRequest {
  std::string_view tensor;
  uint64_t offset = 0;
  uint64_t size = 0;
  uint8_t* dst = nullptr;
};

class ExpertStore {
 public:
  virtual ~ExpertStore() = default;

  // The path or grpc://host:port, for messages.
  virtual const std::string& name() const = 0;

  // Reads every request; all of them or an error. Requests may be issued in parallel inside.
  // Thread-safe: any number of callers at once.
  virtual absl::Status Read(std::span<const ReadRequest> requests) = 0;
  absl::Status Read(std::initializer_list<ReadRequest> requests) {
    return Read(std::span<const ReadRequest>(requests.begin(), requests.size()));
  }

  const std::vector<StoreTensor>& tensors() const { return tensors_; }
  const StoreTensor* FindTensor(std::string_view name) const;

 protected:
  void SetTensors(std::vector<StoreTensor> tensors);
  // NotFound / OutOfRange / InvalidArgument (null dst) for a request the table rules out.
  absl::Status CheckRequest(const ReadRequest& r) const;

 private:
  std::vector<StoreTensor> tensors_;
  gguf::NameIndex index_;
};

// "grpc://host:port" -> a GrpcStore client (Unimplemented when built without gRPC); anything
// else is a GGUF path (a single file or any shard of a split set) -> a FileStore.
absl::StatusOr<std::unique_ptr<ExpertStore>> OpenExpertStore(const std::string& spec);

}  // namespace tritmoe
