// The gRPC front-end: service tritmoe.v1.Generation (proto/tritmoe.proto), the standard
// grpc.health.v1.Health service (serving status of "" and "tritmoe.v1.Generation") and server
// reflection, on its own port.
//
// Generate is a synchronous server-streaming handler: it submits the request to the scheduler and
// writes what the scheduler produces. A client that cancels (or whose connection drops, or whose
// deadline passes) is noticed within `poll` and its request is cancelled, which frees the
// sequence at the next step. A deadline is honoured while queued and while generating
// (DEADLINE_EXCEEDED). Errors are status codes (see the .proto).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/serve/scheduler.h"
#include "runtime/serve/served_model.h"

namespace grpc {
class Server;
}

namespace tritmoe {

struct GrpcServerOptions {
  std::string host = "0.0.0.0";
  int port = 50051;  // 0: any free port (GrpcServer::port says which)
  int max_message_bytes = 64 << 20;
  absl::Duration poll = absl::Milliseconds(50);

  absl::Status Validate() const;
};

class GrpcServer {
 public:
  // model and scheduler must outlive the server. Unavailable when the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(const GrpcServerOptions& options,
                                                           const ServedModel* model,
                                                           Scheduler* scheduler);
  ~GrpcServer();  // Shutdown(0)

  int port() const { return port_; }
  // Health status of both services.
  void SetServing(bool serving);
  // Stops accepting calls; calls still running after `grace` are cancelled. Idempotent.
  void Shutdown(absl::Duration grace);

 private:
  class Service;
  GrpcServer() = default;

  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace tritmoe
