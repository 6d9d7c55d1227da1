// tritmoe serve: the model behind an OpenAI-compatible HTTP API and the tritmoe.v1 gRPC API.
//
//   mpirun -np N tritmoe serve --model M [--port 8000] [--grpc-port 50051]
//
// Rank 0 runs both front-ends and the continuous-batching scheduler, which drives the Engine
// from this (the main, MPI) thread; the other ranks follow its steps (Engine::RunWorker).
// SIGINT/SIGTERM shut down gracefully: the health checks turn NOT_SERVING, new requests are
// refused, requests still running after --shutdown-timeout end with finish reason "abort", the
// front-ends close, the engine stops every rank, and the process exits 0. Worker ranks ignore
// the signals and stop when rank 0 tells them to.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/cli/commands.h"
#include "runtime/cli/engine_expert_cache.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/engine_job.h"
#include "runtime/serve/grpc_server.h"
#include "runtime/serve/http_server.h"
#include "runtime/serve/scheduler.h"
#include "runtime/serve/served_model.h"
#include "runtime/serve/server_metrics.h"

namespace tritmoe {
namespace {

struct ServeArgs {
  std::string model;
  std::string served_model_name;
  std::string host = "0.0.0.0";
  int port = 8000;
  int grpc_port = 50051;
  std::string ports_file;
  int threads = 0;
  std::string kv_type = "f16";
  std::string comm = "auto";
  std::string placement = "contiguous";
  std::string device = "cpu";
  std::string gpu_exchange;  // "" = the default (EngineOptions::gpu_exchange)
  ExpertCacheFlags expert_cache;
  int max_num_seqs = 64;
  int max_num_batched_tokens = 2048;
  int64_t max_model_len = 0;
  int max_waiting = 4096;
  int64_t kv_cache_tokens = 0;
  std::string reasoning_parser = "deepseek_r1";
  int http_threads = 512;
  double shutdown_timeout = 0;
};

// Waits for SIGINT/SIGTERM (blocked in every thread, see RunServe) on a thread of its own and
// calls on_signal once; ends when destroyed.
class SignalWatcher {
 public:
  template <typename F>
  explicit SignalWatcher(F on_signal)
      : thread_([this, on_signal] {
          sigset_t set;
          sigemptyset(&set);
          sigaddset(&set, SIGINT);
          sigaddset(&set, SIGTERM);
          const timespec tick = {0, 100 * 1000 * 1000};
          while (!done_.load()) {
            const int sig = sigtimedwait(&set, nullptr, &tick);
            if (sig == SIGINT || sig == SIGTERM) {
              std::fprintf(stderr, "tritmoe serve: %s received, shutting down\n",
                           sig == SIGINT ? "SIGINT" : "SIGTERM");
              on_signal();
              return;
            }
          }
        }) {}
  ~SignalWatcher() {
    done_.store(true);
    thread_.join();
  }

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;
};

absl::Status WritePortsFile(const std::string& path, int http_port, int grpc_port) {
  // Written whole then renamed, so a reader polling for the file never sees half of it.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << "{\"http_port\": " << http_port << ", \"grpc_port\": " << grpc_port
        << ", \"pid\": " << getpid() << "}\n";
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename ", tmp, ": ", ec.message()));
  return absl::OkStatus();
}

// Driver: front-ends and scheduler until a signal (or an engine failure).
absl::Status Serve(const ServeArgs& a, Engine& engine) {
  ServedModel model;
  model.name = a.served_model_name.empty() ? std::filesystem::path(a.model).stem().string()
                                           : a.served_model_name;
  model.path = a.model;
  model.architecture = "deepseek2";
  model.max_model_len = engine.max_context();
  model.reasoning_parser =
      a.reasoning_parser == "none" ? ReasoningParserKind::kNone : ReasoningParserKind::kDeepSeekR1;
  model.world_size = engine.num_ranks();
  model.tokenizer = &engine.tokenizer();
  model.config = &engine.config();

  ServerMetrics metrics(model.name, engine.num_ranks());
  SchedulerOptions so;
  so.max_num_seqs = a.max_num_seqs;
  so.max_num_batched_tokens = a.max_num_batched_tokens;
  so.max_waiting = a.max_waiting;
  so.kv_cache_tokens_per_rank = a.kv_cache_tokens;
  ASSIGN_OR_RETURN(std::unique_ptr<Scheduler> scheduler, Scheduler::Create(&engine, so, &metrics));

  std::unique_ptr<HttpServer> http;
  if (a.port >= 0) {
    HttpServerOptions ho;
    ho.host = a.host;
    ho.port = a.port;
    ho.threads = a.http_threads;
    ASSIGN_OR_RETURN(http, HttpServer::Start(ho, &model, scheduler.get(), &metrics));
  }
  std::unique_ptr<GrpcServer> grpc;
  if (a.grpc_port >= 0) {
    GrpcServerOptions go;
    go.host = a.host;
    go.port = a.grpc_port;
    ASSIGN_OR_RETURN(grpc, GrpcServer::Start(go, &model, scheduler.get()));
  }
  const int http_port = http ? http->port() : -1;
  const int grpc_port = grpc ? grpc->port() : -1;
  std::fprintf(stderr,
               "tritmoe serve: model '%s' (%s, max_model_len %lld) on %d rank(s); OpenAI HTTP "
               "on %s:%d, gRPC on %s:%d\n",
               model.name.c_str(), a.model.c_str(), static_cast<long long>(model.max_model_len),
               engine.num_ranks(), a.host.c_str(), http_port, a.host.c_str(), grpc_port);
  if (!a.ports_file.empty()) RETURN_IF_ERROR(WritePortsFile(a.ports_file, http_port, grpc_port));

  absl::Status run;
  {
    const absl::Duration drain = absl::Seconds(a.shutdown_timeout);
    GrpcServer* g = grpc.get();
    Scheduler* s = scheduler.get();
    SignalWatcher watcher([g, s, drain] {
      if (g != nullptr) g->SetServing(false);
      s->Stop(drain);
    });
    run = scheduler->Run();  // this thread: the only one that calls the engine
  }
  if (http) http->Stop();
  if (grpc) grpc->Shutdown(absl::Seconds(1));
  if (run.ok()) std::fprintf(stderr, "tritmoe serve: stopped\n");
  return run;
}

absl::Status RunServe(const ServeArgs& a) {
  if (a.reasoning_parser != "deepseek_r1" && a.reasoning_parser != "deepseek-r1" &&
      a.reasoning_parser != "none") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--reasoning-parser: expected deepseek_r1 or none, got '", a.reasoning_parser, "'"));
  }
  if (a.shutdown_timeout < 0) {
    return absl::InvalidArgumentError("--shutdown-timeout must be >= 0");
  }
  // Every thread started from here on (MPI, model pool, servers) inherits the blocked signals;
  // only rank 0's watcher takes them. A client that goes away must not kill us with SIGPIPE.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  EngineOptions options;
  options.model_path = a.model;
  options.placement = a.placement;
  options.device = a.device;
  options.gpu_exchange = a.gpu_exchange;
  options.model.threads = a.threads;
  options.model.max_context = a.max_model_len;
  ASSIGN_OR_RETURN(options.model.kv_type, ParseKvCacheType(a.kv_type));
  options.max_sequences = a.max_num_seqs;
  options.max_tokens_per_step = a.max_num_batched_tokens;
  ASSIGN_OR_RETURN(ExpertCacheSetup cache, ApplyExpertCacheFlags(a.expert_cache, &options));
  EngineJobOptions job;
  job.comm = a.comm;
  return RunEngineJob(job, options, [&](Engine& engine) { return Serve(a, engine); });
}

}  // namespace

void RegisterServeCommand(CLI::App& app, absl::Status* result) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "serve", "Serve the model over OpenAI-compatible HTTP and gRPC (rank 0), until SIGINT/TERM");
  cmd->add_option("--model,-m", a->model, "GGUF model (any shard of a split set)")->required();
  cmd->add_option("--served-model-name", a->served_model_name,
                  "Model name clients use (default: the file name without .gguf)");
  cmd->add_option("--host", a->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", a->port, "OpenAI HTTP port (0: any free port, -1: off)")
      ->capture_default_str();
  cmd->add_option("--grpc-port", a->grpc_port, "gRPC port (0: any free port, -1: off)")
      ->capture_default_str();
  cmd->add_option("--ports-file", a->ports_file,
                  "Write {\"http_port\", \"grpc_port\", \"pid\"} as JSON here once serving");
  cmd->add_option("--threads,-t", a->threads,
                  "CPU threads per rank (0: cores / ranks on this host)");
  cmd->add_option("--comm", a->comm, "auto (MPI when started by mpirun), mpi or local")
      ->capture_default_str();
  cmd->add_option("--placement", a->placement,
                  "Expert placement: contiguous, balanced:<routing stats>, or a placement file")
      ->capture_default_str();
  cmd->add_option("--kv-type", a->kv_type, "KV cache type: f16, q8_0, q4_0, f32")
      ->capture_default_str();
  cmd->add_option("--device", a->device, kDeviceHelp)->capture_default_str();
  cmd->add_option("--gpu-exchange", a->gpu_exchange, kGpuExchangeHelp);
  cmd->add_option("--max-num-seqs", a->max_num_seqs, "Sequences in the running batch")
      ->capture_default_str();
  cmd->add_option("--max-num-batched-tokens", a->max_num_batched_tokens,
                  "Tokens per engine step (prefill chunks + one per decoding sequence)")
      ->capture_default_str();
  cmd->add_option("--max-model-len", a->max_model_len,
                  "Prompt + generated tokens per request (0: the model's context length)")
      ->capture_default_str();
  cmd->add_option("--max-waiting", a->max_waiting,
                  "Admission queue length; beyond it requests get 429 / RESOURCE_EXHAUSTED")
      ->capture_default_str();
  cmd->add_option("--kv-cache-tokens", a->kv_cache_tokens,
                  "KV tokens the running requests on one rank may reserve (0: "
                  "ceil(max-num-seqs / ranks) x max-model-len); a request waits until its rank "
                  "has room")
      ->capture_default_str();
  cmd->add_option("--reasoning-parser", a->reasoning_parser,
                  "deepseek_r1: chat output inside <think> goes to reasoning_content; none")
      ->capture_default_str();
  cmd->add_option("--http-threads", a->http_threads,
                  "HTTP connection threads (each open stream holds one)")
      ->capture_default_str();
  cmd->add_option("--shutdown-timeout", a->shutdown_timeout,
                  "Seconds running requests may finish after SIGINT/SIGTERM before they are "
                  "aborted")
      ->capture_default_str();
  AddExpertCacheFlags(cmd, &a->expert_cache);
  cmd->callback([a, result] { *result = RunServe(*a); });
}

}  // namespace tritmoe
