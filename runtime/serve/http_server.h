// The OpenAI-compatible HTTP front-end (cpp-httplib), on its own port:
//
//   POST /v1/chat/completions, /v1/completions   stream=false: one JSON body; stream=true: SSE
//                                                (text/event-stream), ended by "data: [DONE]"
//   GET  /v1/models          the served model
//   GET  /health             200 while serving, 503 while shutting down
//   GET  /metrics            Prometheus text format
//   POST /tokenize, /detokenize (vLLM's shapes), GET /version
//
// Errors use OpenAI's body (openai_protocol.h); a mid-stream error is an SSE error event followed
// by [DONE]. Every generation request echoes an X-Request-Id header (the incoming one, when the
// body has no request_id, else a new id). A streaming client that disconnects is noticed at the
// next write, and its request is cancelled so the scheduler frees the sequence.
//
// Threads: each open connection holds one thread of a pool of `threads` (cpp-httplib's model),
// so size it above the number of concurrent streams.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/serve/request_builder.h"
#include "runtime/serve/scheduler.h"
#include "runtime/serve/served_model.h"
#include "runtime/serve/server_metrics.h"

namespace httplib {
class Server;
}

namespace tritmoe {

struct HttpServerOptions {
  std::string host = "0.0.0.0";
  int port = 8000;  // 0: any free port (HttpServer::port says which)
  int threads = 512;
  int64_t max_body_bytes = int64_t{64} << 20;
  // How often a handler waiting for output wakes up (to notice shutdown).
  absl::Duration poll = absl::Milliseconds(100);
  // Idle keep-alive connections are closed after this.
  absl::Duration keep_alive = absl::Seconds(5);

  absl::Status Validate() const;
};

class HttpServer {
 public:
  // Binds and starts serving on a thread of its own. model, scheduler and metrics must outlive
  // the server. Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options,
                                                           const ServedModel* model,
                                                           Scheduler* scheduler,
                                                           ServerMetrics* metrics);
  ~HttpServer();  // Stop()

  int port() const { return port_; }
  // Stops accepting and closes the listener; open streams end once the scheduler ends their
  // requests (stop the scheduler first). Idempotent.
  void Stop();

 private:
  HttpServer(const HttpServerOptions& options, const ServedModel* model, Scheduler* scheduler,
             ServerMetrics* metrics);
  void Route();

  const HttpServerOptions options_;
  const ServedModel* const model_;
  Scheduler* const scheduler_;
  ServerMetrics* const metrics_;
  RequestBuilder builder_;
  const int64_t started_unix_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace tritmoe
