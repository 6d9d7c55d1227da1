#include "runtime/serve/grpc_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <chrono>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "proto/tritmoe.grpc.pb.h"
#include "runtime/serve/field_error.h"
#include "runtime/serve/request_builder.h"

namespace tritmoe {
namespace {

namespace v1 = ::tritmoe::v1;

constexpr const char* kServiceName = "tritmoe.v1.Generation";

// absl and gRPC share the canonical status codes, number for number.
grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

v1::FinishReason ToProto(ServeFinish f) {
  switch (f) {
    case ServeFinish::kEos:
      return v1::FINISH_REASON_EOS;
    case ServeFinish::kStopToken:
      return v1::FINISH_REASON_STOP_TOKEN;
    case ServeFinish::kStopString:
      return v1::FINISH_REASON_STOP_STRING;
    case ServeFinish::kLength:
      return v1::FINISH_REASON_LENGTH;
    case ServeFinish::kAbort:
      return v1::FINISH_REASON_ABORT;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

std::vector<ChatMessage> ToMessages(const v1::ChatInput& chat) {
  std::vector<ChatMessage> out;
  for (const v1::ChatMessage& m : chat.messages()) out.push_back({m.role(), m.content()});
  return out;
}

GenerationInput ToInput(const v1::GenerateRequest& req, const grpc::ServerContext& ctx) {
  GenerationInput in;
  in.request_id = req.request_id();
  if (in.request_id.empty()) {
    auto it = ctx.client_metadata().find("x-request-id");
    if (it != ctx.client_metadata().end())
      in.request_id.assign(it->second.data(), it->second.size());
  }
  in.model = req.model();
  switch (req.input_case()) {
    case v1::GenerateRequest::kText:
      in.text = req.text();
      break;
    case v1::GenerateRequest::kTokenIds:
      in.token_ids.emplace(req.token_ids().ids().begin(), req.token_ids().ids().end());
      break;
    case v1::GenerateRequest::kChat:
      in.messages = ToMessages(req.chat());
      in.add_generation_prompt =
          !req.chat().has_add_generation_prompt() || req.chat().add_generation_prompt();
      break;
    case v1::GenerateRequest::INPUT_NOT_SET:
      break;
  }
  const v1::SamplingParams& s = req.sampling();
  if (s.has_temperature()) in.temperature = s.temperature();
  if (s.has_top_p()) in.top_p = s.top_p();
  if (s.has_top_k()) in.top_k = s.top_k();
  if (s.has_min_p()) in.min_p = s.min_p();
  if (s.has_seed()) in.seed = s.seed();
  const v1::StoppingCriteria& st = req.stopping();
  if (st.has_max_tokens()) in.max_tokens = st.max_tokens();
  if (st.min_tokens() != 0) in.min_tokens = st.min_tokens();
  in.stop.assign(st.stop().begin(), st.stop().end());
  in.stop_token_ids.assign(st.stop_token_ids().begin(), st.stop_token_ids().end());
  in.ignore_eos = st.ignore_eos();
  if (req.output().has_skip_special_tokens()) {
    in.skip_special_tokens = req.output().skip_special_tokens();
  }
  if (req.output().has_separate_reasoning()) {
    in.separate_reasoning = req.output().separate_reasoning();
  }
  // The call's deadline, moved onto the scheduler's monotonic clock.
  const auto deadline = ctx.deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    const auto left = deadline - std::chrono::system_clock::now();
    in.deadline = ServeClock::now() + std::chrono::duration_cast<ServeClock::duration>(left);
  }
  return in;
}

void FillUsage(const StreamCompletion& c, v1::Complete* out) {
  out->set_finish_reason(ToProto(c.finish));
  if (c.finish == ServeFinish::kStopString) out->set_matched_stop_str(c.matched_stop);
  if ((c.finish == ServeFinish::kEos || c.finish == ServeFinish::kStopToken) &&
      c.matched_token >= 0) {
    out->set_matched_token_id(c.matched_token);
  }
  v1::Usage* u = out->mutable_usage();
  u->set_prompt_tokens(c.prompt_tokens);
  u->set_completion_tokens(c.completion_tokens);
  u->set_reasoning_tokens(c.reasoning_tokens);
  v1::Timing* t = out->mutable_timing();
  t->set_arrival_time(absl::ToDoubleSeconds(c.arrival - absl::UnixEpoch()));
  t->set_queue_time(static_cast<float>(c.queue_seconds));
  t->set_time_to_first_token(static_cast<float>(c.ttft_seconds));
  t->set_e2e_latency(static_cast<float>(c.e2e_seconds));
}

}  // namespace

absl::Status GrpcServerOptions::Validate() const {
  if (port < 0 || port > 65535) {
    return FieldError("grpc_port", absl::StrCat("must be in 0..65535, got ", port));
  }
  if (max_message_bytes < 1024) return FieldError("max_message_bytes", "must be >= 1024");
  if (poll <= absl::ZeroDuration()) return FieldError("poll", "must be positive");
  return absl::OkStatus();
}

class GrpcServer::Service final : public v1::Generation::Service {
 public:
  Service(const GrpcServerOptions& options, const ServedModel* model, Scheduler* scheduler)
      : options_(options),
        model_(model),
        scheduler_(scheduler),
        builder_(model, FieldNaming::kProto),
        start_(absl::Now()) {}

  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    absl::StatusOr<ServeRequest> request = builder_.Build(ToInput(*req, *ctx), "gen-");
    if (!request.ok()) return ToGrpc(request.status());
    const std::string id = request->request_id;
    absl::StatusOr<std::shared_ptr<RequestStream>> submitted =
        scheduler_->Submit(*std::move(request));
    if (!submitted.ok()) return ToGrpc(submitted.status());
    RequestStream& stream = **submitted;
    ctx->AddInitialMetadata("x-request-id", id);

    v1::GenerateResponse whole;  // stream=false: everything goes into one Complete
    whole.set_request_id(id);
    std::vector<StreamEvent> events;
    while (true) {
      events.clear();
      if (!stream.Next(&events, options_.poll)) {
        if (ctx->IsCancelled()) {
          stream.Cancel();
          return grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled");
        }
        continue;
      }
      for (StreamEvent& e : events) {
        if (auto* chunk = std::get_if<StreamChunk>(&e)) {
          if (req->stream()) {
            v1::GenerateResponse r;
            r.set_request_id(id);
            v1::Chunk* c = r.mutable_chunk();
            c->mutable_token_ids()->Add(chunk->token_ids.begin(), chunk->token_ids.end());
            c->set_text(chunk->text);
            c->set_reasoning_text(chunk->reasoning);
            c->set_prompt_tokens(chunk->prompt_tokens);
            c->set_completion_tokens(chunk->completion_tokens);
            if (!writer->Write(r)) {
              stream.Cancel();  // the client is gone: free its sequence
              return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
            }
          } else {
            v1::Complete* c = whole.mutable_complete();
            c->mutable_output_token_ids()->Add(chunk->token_ids.begin(), chunk->token_ids.end());
            c->mutable_text()->append(chunk->text);
            c->mutable_reasoning_text()->append(chunk->reasoning);
          }
        } else if (auto* done = std::get_if<StreamCompletion>(&e)) {
          if (req->stream()) whole.mutable_complete()->Clear();
          FillUsage(*done, whole.mutable_complete());
          writer->Write(whole);
          return grpc::Status::OK;
        } else {
          return ToGrpc(std::get<absl::Status>(e));
        }
      }
    }
  }

  grpc::Status Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* req,
                        v1::TokenizeResponse* resp) override {
    if (absl::Status s = builder_.CheckModel(req->model()); !s.ok()) return ToGrpc(s);
    absl::StatusOr<std::vector<int32_t>> tokens;
    if (req->has_chat()) {
      tokens =
          builder_.TokenizeChat(ToMessages(req->chat()), !req->chat().has_add_generation_prompt() ||
                                                             req->chat().add_generation_prompt());
    } else {
      tokens = builder_.TokenizeText(req->text(),
                                     !req->has_add_special_tokens() || req->add_special_tokens());
    }
    if (!tokens.ok()) return ToGrpc(tokens.status());
    resp->mutable_token_ids()->Add(tokens->begin(), tokens->end());
    resp->set_count(static_cast<uint32_t>(tokens->size()));
    resp->set_max_model_len(static_cast<uint32_t>(model_->max_model_len));
    return grpc::Status::OK;
  }

  grpc::Status Detokenize(grpc::ServerContext*, const v1::DetokenizeRequest* req,
                          v1::DetokenizeResponse* resp) override {
    if (absl::Status s = builder_.CheckModel(req->model()); !s.ok()) return ToGrpc(s);
    absl::StatusOr<std::string> text =
        builder_.Detokenize(std::vector<int64_t>(req->token_ids().begin(), req->token_ids().end()));
    if (!text.ok()) return ToGrpc(text.status());
    resp->set_text(*text);
    return grpc::Status::OK;
  }

  grpc::Status GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest*,
                            v1::GetModelInfoResponse* resp) override {
    resp->set_served_model_name(model_->name);
    resp->set_model_path(model_->path);
    resp->set_architecture(model_->architecture);
    resp->set_max_model_len(static_cast<uint32_t>(model_->max_model_len));
    resp->set_vocab_size(static_cast<uint32_t>(model_->tokenizer->n_vocab()));
    if (model_->tokenizer->eos_id() >= 0) resp->add_eos_token_ids(model_->tokenizer->eos_id());
    if (model_->config != nullptr) {
      resp->set_num_experts(model_->config->n_expert);
      resp->set_num_experts_per_tok(model_->config->n_expert_used);
      resp->set_num_layers(model_->config->n_layer);
    }
    resp->set_reasoning_parser(
        model_->reasoning_parser == ReasoningParserKind::kDeepSeekR1 ? "deepseek_r1" : "");
    return grpc::Status::OK;
  }

  grpc::Status GetServerInfo(grpc::ServerContext*, const v1::GetServerInfoRequest*,
                             v1::GetServerInfoResponse* resp) override {
    const SchedulerStats st = scheduler_->stats();
    resp->set_version(TRITMOE_VERSION);
    resp->set_world_size(model_->world_size);
    resp->set_max_num_seqs(scheduler_->options().max_num_seqs);
    resp->set_max_num_batched_tokens(scheduler_->options().max_num_batched_tokens);
    resp->set_num_requests_running(st.running);
    resp->set_num_requests_waiting(st.waiting);
    resp->set_kv_cache_usage(static_cast<float>(st.kv_usage));
    resp->set_uptime_seconds(absl::ToDoubleSeconds(absl::Now() - start_));
    resp->set_draining(st.draining);
    return grpc::Status::OK;
  }

  grpc::Status Abort(grpc::ServerContext*, const v1::AbortRequest* req,
                     v1::AbortResponse* resp) override {
    resp->set_aborted(scheduler_->Abort(
        std::vector<std::string>(req->request_ids().begin(), req->request_ids().end())));
    return grpc::Status::OK;
  }

 private:
  const GrpcServerOptions options_;
  const ServedModel* const model_;
  Scheduler* const scheduler_;
  RequestBuilder builder_;
  const absl::Time start_;
};

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(const GrpcServerOptions& options,
                                                              const ServedModel* model,
                                                              Scheduler* scheduler) {
  RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<GrpcServer> s(new GrpcServer());
  s->service_ = std::make_unique<Service>(options, model, scheduler);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = absl::StrCat(options.host, ":", options.port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &s->port_);
  builder.RegisterService(s->service_.get());
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("gRPC: cannot listen on ", address, " (in use?)"));
  }
  s->SetServing(true);
  return s;
}

GrpcServer::~GrpcServer() { Shutdown(absl::ZeroDuration()); }

void GrpcServer::SetServing(bool serving) {
  if (server_ == nullptr || shut_down_) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus("", serving);
  health->SetServingStatus(kServiceName, serving);
}

void GrpcServer::Shutdown(absl::Duration grace) {
  if (server_ == nullptr || shut_down_) return;
  SetServing(false);
  shut_down_ = true;
  server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(grace));
  server_->Wait();
}

}  // namespace tritmoe
