// The client of a `tritmoe store` server (proto/expert_store.proto): an ExpertStore named
// grpc://host:port. Every chunk is checked against its CRC-32C before a byte of it is used.
//
// Recovery: a stream that breaks (server restarting, network drop: UNAVAILABLE, CANCELLED,
// DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED) or delivers a chunk with a wrong checksum is
// retried, asking only for the bytes not yet received (resumable): at once when the attempt
// received something, else after an exponential backoff with jitter. The attempt count resets
// whenever an attempt makes progress; after max_attempts attempts in a row without progress the
// read fails with UNAVAILABLE naming the store, the attempts, the time spent and the last error. A
// chunk that arrives corrupt twice in a row fails at once with DATA_LOSS. Errors that retrying
// cannot fix (NOT_FOUND, OUT_OF_RANGE, DATA_LOSS from the server's own checks, INVALID_ARGUMENT)
// fail at once.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/store/expert_store.h"

namespace tritmoe {

struct GrpcStoreOptions {
  int max_attempts = 8;  // in a row without progress
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(2);
  absl::Duration call_timeout = absl::Seconds(120);  // one Read or Describe attempt

  absl::Status Validate() const;
};

class GrpcStore final : public ExpertStore {
 public:
  // spec: "grpc://host:port". Fetches the tensor table (Describe, retried like a read).
  static absl::StatusOr<std::unique_ptr<GrpcStore>> Connect(const std::string& spec,
                                                            const GrpcStoreOptions& options = {});
  ~GrpcStore() override;

  const std::string& name() const override { return spec_; }
  absl::Status Read(std::span<const ReadRequest> requests) override;
  using ExpertStore::Read;

  // What the server reported.
  const std::string& served_model() const { return served_model_; }
  bool server_verified_by_manifest() const { return verified_by_manifest_; }
  // Retries so far (all reads), for tests and stats.
  int64_t retries() const;

 private:
  struct Impl;
  GrpcStore() = default;

  std::string spec_;
  std::string served_model_;
  bool verified_by_manifest_ = false;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tritmoe
