#include "runtime/serve/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/serve/field_error.h"
#include "runtime/serve/openai_protocol.h"

namespace tritmoe {
namespace {

using json = nlohmann::json;

void SendJson(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(DumpJson(body), "application/json");
}

void SendError(httplib::Response& res, const absl::Status& status) {
  HttpError e = ToHttpError(status);
  SendJson(res, e.status, e.body);
}

// The failure label of tritmoe_request_failure_total for a request refused before it ran.
const char* FailureReason(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
      return "not_found";
    case absl::StatusCode::kResourceExhausted:
      return "queue_full";
    case absl::StatusCode::kUnavailable:
      return "unavailable";
    default:
      return "invalid";
  }
}

// The state of one SSE response, shared by cpp-httplib's content provider calls.
struct SseState {
  std::shared_ptr<RequestStream> stream;
  OpenAiResponseBuilder builder;
  bool started = false;
  bool done = false;
};

// Parses a JSON object body for the small endpoints (/tokenize, /detokenize).
absl::StatusOr<json> ParseObject(const std::string& body) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request body is not valid JSON: ", e.what()));
  }
  if (!j.is_object()) return absl::InvalidArgumentError("the request body must be a JSON object");
  return j;
}

}  // namespace

absl::Status HttpServerOptions::Validate() const {
  if (port < 0 || port > 65535)
    return FieldError("port", absl::StrCat("must be in 0..65535, got ", port));
  if (threads < 1) return FieldError("http_threads", absl::StrCat("must be >= 1, got ", threads));
  if (max_body_bytes < 1) return FieldError("max_body_bytes", "must be >= 1");
  if (poll <= absl::ZeroDuration()) return FieldError("poll", "must be positive");
  return absl::OkStatus();
}

HttpServer::HttpServer(const HttpServerOptions& options, const ServedModel* model,
                       Scheduler* scheduler, ServerMetrics* metrics)
    : options_(options),
      model_(model),
      scheduler_(scheduler),
      metrics_(metrics),
      builder_(model, FieldNaming::kOpenAi),
      started_unix_(absl::ToUnixSeconds(absl::Now())),
      server_(std::make_unique<httplib::Server>()) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpServerOptions& options,
                                                              const ServedModel* model,
                                                              Scheduler* scheduler,
                                                              ServerMetrics* metrics) {
  RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<HttpServer> s(new HttpServer(options, model, scheduler, metrics));
  const int threads = options.threads;
  s->server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  s->server_->set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
  s->server_->set_keep_alive_timeout(std::max<time_t>(1, absl::ToInt64Seconds(options.keep_alive)));
  s->server_->set_keep_alive_max_count(1000);
  s->Route();
  // cpp-httplib 0.11 listens with a backlog of 5: a burst of clients connecting at once (64
  // streams on a loaded machine) overflowed the accept queue and some connections were reset.
  // Listening again on the bound socket raises the backlog (Linux allows it).
  auto listen_sock = std::make_shared<socket_t>(INVALID_SOCKET);
  s->server_->set_socket_options([listen_sock](socket_t sock) {
    httplib::default_socket_options(sock);
    *listen_sock = sock;  // the last socket offered is the one that bound
  });
  if (options.port == 0) {
    s->port_ = s->server_->bind_to_any_port(options.host);
    if (s->port_ <= 0) {
      return absl::UnavailableError(absl::StrCat("HTTP: cannot bind ", options.host, ":0"));
    }
  } else {
    if (!s->server_->bind_to_port(options.host, options.port)) {
      return absl::UnavailableError(
          absl::StrCat("HTTP: cannot bind ", options.host, ":", options.port, " (in use?)"));
    }
    s->port_ = options.port;
  }
  if (*listen_sock != INVALID_SOCKET) ::listen(*listen_sock, SOMAXCONN);
  httplib::Server* server = s->server_.get();
  s->thread_ = std::thread([server] { server->listen_after_bind(); });
  return s;
}

void HttpServer::Route() {
  httplib::Server& srv = *server_;
  // Streams write one small SSE event per token: without TCP_NODELAY, Nagle holds each event until
  // the client's delayed ACK (~40 ms), which shows up as inter-token latency.
  srv.set_tcp_nodelay(true);

  auto generate = [this](OpenAiEndpoint endpoint, const httplib::Request& req,
                         httplib::Response& res) {
    absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(endpoint, req.body);
    if (!parsed.ok()) {
      if (metrics_) metrics_->OnFailed("invalid");
      return SendError(res, parsed.status());
    }
    GenerationInput& in = parsed->input;
    if (in.request_id.empty() && req.has_header("X-Request-Id")) {
      in.request_id = req.get_header_value("X-Request-Id");
    }
    const std::string prefix = endpoint == OpenAiEndpoint::kChat ? "chatcmpl-" : "cmpl-";
    absl::StatusOr<ServeRequest> request = builder_.Build(in, prefix);
    if (!request.ok()) {
      if (metrics_) metrics_->OnFailed(FailureReason(request.status()));
      return SendError(res, request.status());
    }
    const std::string request_id = request->request_id;
    absl::StatusOr<std::shared_ptr<RequestStream>> stream = scheduler_->Submit(*std::move(request));
    if (!stream.ok()) {
      if (metrics_) metrics_->OnFailed(FailureReason(stream.status()));
      return SendError(res, stream.status());
    }
    res.set_header("X-Request-Id", request_id);
    const std::string id = absl::StartsWith(request_id, prefix) ? request_id : prefix + request_id;
    OpenAiResponseBuilder builder(endpoint, id, model_->name, absl::ToUnixSeconds(absl::Now()),
                                  parsed->include_usage);
    const absl::Duration poll = options_.poll;
    if (!parsed->stream) {
      // Whole response: wait for the end. (A client that leaves is noticed only when we write.)
      std::vector<StreamEvent> events;
      while (true) {
        events.clear();
        (*stream)->Next(&events, poll);
        for (StreamEvent& e : events) {
          if (auto* chunk = std::get_if<StreamChunk>(&e)) {
            builder.Collect(*chunk);
          } else if (auto* done = std::get_if<StreamCompletion>(&e)) {
            return SendJson(res, 200, builder.Response(*done));
          } else {
            return SendError(res, std::get<absl::Status>(e));
          }
        }
      }
    }
    auto state = std::make_shared<SseState>(SseState{*stream, std::move(builder)});
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [state, poll](size_t, httplib::DataSink& sink) {
          std::string out;
          if (!state->started) {
            state->started = true;
            out = state->builder.StreamStart();
          }
          std::vector<StreamEvent> events;
          state->stream->Next(&events, out.empty() ? poll : absl::ZeroDuration());
          for (StreamEvent& e : events) {
            if (auto* chunk = std::get_if<StreamChunk>(&e)) {
              out += state->builder.StreamChunk(*chunk);
            } else if (auto* done = std::get_if<StreamCompletion>(&e)) {
              out += state->builder.StreamEnd(*done);
              state->done = true;
            } else {
              out += OpenAiResponseBuilder::StreamError(std::get<absl::Status>(e));
              state->done = true;
            }
          }
          // Never write an empty chunk: cpp-httplib takes it for the end of the body.
          if (!out.empty() && !sink.write(out.data(), out.size())) {
            state->stream->Cancel();  // the client is gone: free its sequence
            return false;
          }
          if (state->done) sink.done();
          return true;
        },
        [state](bool) {
          if (!state->done) state->stream->Cancel();
        });
  };
  srv.Post("/v1/chat/completions", [generate](const httplib::Request& req, httplib::Response& res) {
    generate(OpenAiEndpoint::kChat, req, res);
  });
  srv.Post("/v1/completions", [generate](const httplib::Request& req, httplib::Response& res) {
    generate(OpenAiEndpoint::kCompletions, req, res);
  });

  srv.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    SendJson(res, 200,
             {{"object", "list"},
              {"data", json::array({{{"id", model_->name},
                                     {"object", "model"},
                                     {"created", started_unix_},
                                     {"owned_by", "tritmoe"},
                                     {"root", model_->path},
                                     {"max_model_len", model_->max_model_len},
                                     {"vocab_size", model_->tokenizer->n_vocab()}}})}});
  });
  srv.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (scheduler_->stats().draining) {
      return SendError(res, absl::UnavailableError("the server is shutting down"));
    }
    SendJson(res, 200, json::object());
  });
  srv.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_ ? metrics_->Render() : std::string(),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  srv.Get("/version", [](const httplib::Request&, httplib::Response& res) {
    SendJson(res, 200, {{"version", TRITMOE_VERSION}});
  });
  srv.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
    absl::StatusOr<json> j = ParseObject(req.body);
    if (!j.ok()) return SendError(res, j.status());
    const json model = j->value("model", json(""));
    if (!model.is_string()) return SendError(res, FieldError("model", "must be a string"));
    if (absl::Status s = builder_.CheckModel(model.get<std::string>()); !s.ok()) {
      return SendError(res, s);
    }
    const json add_special = j->value("add_special_tokens", json(true));
    if (!add_special.is_boolean()) {
      return SendError(res, FieldError("add_special_tokens", "must be a boolean"));
    }
    absl::StatusOr<std::vector<int32_t>> tokens;
    if (j->contains("messages")) {
      absl::StatusOr<OpenAiRequest> chat = ParseOpenAiRequest(OpenAiEndpoint::kChat, req.body);
      if (!chat.ok()) return SendError(res, chat.status());
      tokens = builder_.TokenizeChat(*chat->input.messages, chat->input.add_generation_prompt);
    } else {
      const json prompt = j->value("prompt", json());
      if (!prompt.is_string()) return SendError(res, FieldError("prompt", "must be a string"));
      tokens = builder_.TokenizeText(prompt.get<std::string>(), add_special.get<bool>());
    }
    if (!tokens.ok()) return SendError(res, tokens.status());
    SendJson(
        res, 200,
        {{"count", tokens->size()}, {"max_model_len", model_->max_model_len}, {"tokens", *tokens}});
  });
  srv.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    absl::StatusOr<json> j = ParseObject(req.body);
    if (!j.ok()) return SendError(res, j.status());
    const json tokens = j->value("tokens", json());
    if (!tokens.is_array())
      return SendError(res, FieldError("tokens", "must be an array of token ids"));
    std::vector<int64_t> ids;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (!tokens[i].is_number_integer()) {
        return SendError(res, FieldError("tokens", absl::StrCat("[", i, "] is not an integer")));
      }
      ids.push_back(tokens[i].get<int64_t>());
    }
    absl::StatusOr<std::string> text = builder_.Detokenize(ids);
    if (!text.ok()) return SendError(res, text.status());
    SendJson(res, 200, {{"prompt", *text}});
  });

  // Unknown routes and httplib's own errors (e.g. 413) in OpenAI's error shape.
  srv.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    json body = {{"error",
                  {{"message", absl::StrCat(req.method, " ", req.path, ": HTTP ", res.status)},
                   {"type", res.status == 404 ? "not_found_error" : "invalid_request_error"},
                   {"param", nullptr},
                   {"code", nullptr}}}};
    res.set_content(DumpJson(body), "application/json");
  });
  srv.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        SendError(res, absl::InternalError(absl::StrCat("internal error: ", what)));
      });
}

}  // namespace tritmoe
