// The gRPC model store server behind `tritmoe store` (proto/expert_store.proto): serves the
// tensor bytes of a backing store (a FileStore: verified preads of a GGUF file or split set) in
// chunks, each with its CRC-32C. Any number of clients and streams at once (gRPC's thread pool).
//
//   ASSIGN_OR_RETURN(auto server, StoreServer::Start(file_store.get(), {.port = 7070}));
//   ... server->port() ...; server->Shutdown();   // in-flight streams end with UNAVAILABLE
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/store/expert_store.h"

namespace grpc {
class Server;
}

namespace tritmoe {

struct StoreServerOptions {
  std::string host = "0.0.0.0";
  int port = 0;                              // 0: a free port, see StoreServer::port()
  uint64_t chunk_bytes = uint64_t{1} << 20;  // per streamed message; at most 3 MiB (gRPC's 4 MiB)
  bool verified_by_manifest = false;         // reported by Describe

  // Fault injection, for tests of the client's recovery: end every Read stream with UNAVAILABLE
  // after this many chunks (-1: never); flip a byte of every n-th chunk sent, after its checksum
  // was taken, each chunk (tensor, offset) at most once, as a transient fault on the wire would
  // (0: never); or flip a byte of every chunk, every time.
  int64_t fault_abort_after_chunks = -1;
  int64_t fault_corrupt_every = 0;
  bool fault_corrupt_always = false;

  absl::Status Validate() const;
};

class StoreServer {
 public:
  // Serves `backend` (not owned; must outlive the server). Errors: a port that cannot be bound.
  static absl::StatusOr<std::unique_ptr<StoreServer>> Start(ExpertStore* backend,
                                                            const StoreServerOptions& options);
  ~StoreServer();  // Shutdown()
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;

  int port() const { return port_; }
  // Stops accepting calls and cancels the streams in flight (their clients see UNAVAILABLE or
  // CANCELLED and retry elsewhere or later). Idempotent.
  void Shutdown();

 private:
  class Service;
  StoreServer();

  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::atomic<bool> shut_down_{false};
};

}  // namespace tritmoe
