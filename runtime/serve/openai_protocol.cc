#include "runtime/serve/openai_protocol.h"

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/serve/field_error.h"

namespace tritmoe {
namespace {

using json = nlohmann::json;

absl::Status WrongType(const std::string& field, const char* want, const json& got) {
  return FieldError(field, absl::StrCat("must be ", want, ", got ", got.type_name()));
}

// Readers of optional fields: an absent or null field leaves *out unset.
const json* Find(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

absl::Status ReadNumber(const json& obj, const char* key, std::optional<double>* out) {
  const json* v = Find(obj, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_number()) return WrongType(key, "a number", *v);
  *out = v->get<double>();
  return absl::OkStatus();
}

absl::StatusOr<int64_t> AsInteger(const std::string& field, const json& v) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return FieldError(field, absl::StrCat("is too large: ", u));
    }
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e18) {
      return static_cast<int64_t>(d);
    }
    return FieldError(field, absl::StrCat("must be an integer, got ", d));
  }
  return WrongType(field, "an integer", v);
}

absl::Status ReadInteger(const json& obj, const char* key, std::optional<int64_t>* out) {
  const json* v = Find(obj, key);
  if (v == nullptr) return absl::OkStatus();
  ASSIGN_OR_RETURN(*out, AsInteger(key, *v));
  return absl::OkStatus();
}

absl::Status ReadBool(const json& obj, const char* key, std::optional<bool>* out) {
  const json* v = Find(obj, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_boolean()) return WrongType(key, "a boolean", *v);
  *out = v->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadString(const json& obj, const char* key, std::optional<std::string>* out) {
  const json* v = Find(obj, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_string()) return WrongType(key, "a string", *v);
  *out = v->get<std::string>();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> ReadIntArray(const std::string& field, const json& v) {
  if (!v.is_array()) return WrongType(field, "an array of integers", v);
  std::vector<int64_t> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    ASSIGN_OR_RETURN(int64_t x, AsInteger(absl::StrCat(field, "[", i, "]"), v[i]));
    out.push_back(x);
  }
  return out;
}

// A feature the engine lacks: allowed only at its neutral value.
absl::Status RequireNeutral(const json& obj, const char* key, double neutral, const char* what) {
  std::optional<double> v;
  RETURN_IF_ERROR(ReadNumber(obj, key, &v));
  if (v && *v != neutral) {
    return FieldError(key, absl::StrCat(what, " is not supported (only ", neutral, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ChatMessage>> ReadMessages(const json& body) {
  auto it = body.find("messages");
  if (it == body.end() || it->is_null()) return FieldError("messages", "is required");
  if (!it->is_array()) return WrongType("messages", "an array of messages", *it);
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string field = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return WrongType(field, "an object", m);
    ChatMessage msg;
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return FieldError(field + ".role", "is required and must be a string");
    }
    msg.role = role->get<std::string>();
    if (msg.role == "developer") msg.role = "system";  // OpenAI's newer name for it
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      if (msg.role != "assistant") return FieldError(field + ".content", "is required");
    } else if (content->is_string()) {
      msg.content = content->get<std::string>();
    } else if (content->is_array()) {
      for (size_t j = 0; j < content->size(); ++j) {
        const json& part = (*content)[j];
        const std::string pf = absl::StrCat(field, ".content[", j, "]");
        if (!part.is_object()) return WrongType(pf, "an object", part);
        auto type = part.find("type");
        if (type == part.end() || !type->is_string() || *type != "text") {
          return FieldError(pf + ".type", "only \"text\" content parts are supported");
        }
        auto text = part.find("text");
        if (text == part.end() || !text->is_string()) {
          return FieldError(pf + ".text", "is required and must be a string");
        }
        msg.content += text->get<std::string>();
      }
    } else {
      return WrongType(field + ".content", "a string or an array of content parts", *content);
    }
    messages.push_back(std::move(msg));
  }
  return messages;
}

absl::Status ReadPrompt(const json& body, GenerationInput* in) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) return FieldError("prompt", "is required");
  const json& p = *it;
  if (p.is_string()) {
    in->text = p.get<std::string>();
    return absl::OkStatus();
  }
  if (!p.is_array()) return WrongType("prompt", "a string or an array of token ids", p);
  if (p.empty()) return FieldError("prompt", "is empty");
  if (p[0].is_number()) {
    ASSIGN_OR_RETURN(in->token_ids, ReadIntArray("prompt", p));
    return absl::OkStatus();
  }
  if (p.size() > 1) {
    return FieldError("prompt", "batches of prompts are not supported; send one per request");
  }
  if (p[0].is_string()) {
    in->text = p[0].get<std::string>();
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(in->token_ids, ReadIntArray("prompt[0]", p[0]));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, std::string_view body) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request body is not valid JSON: ", e.what()));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request body must be a JSON object, got ", j.type_name()));
  }
  const bool chat = endpoint == OpenAiEndpoint::kChat;
  OpenAiRequest r;
  GenerationInput& in = r.input;
  std::optional<std::string> model, request_id;
  RETURN_IF_ERROR(ReadString(j, "model", &model));
  RETURN_IF_ERROR(ReadString(j, "request_id", &request_id));
  in.model = model.value_or("");
  in.request_id = request_id.value_or("");

  std::optional<bool> stream, ignore_eos;
  RETURN_IF_ERROR(ReadBool(j, "stream", &stream));
  r.stream = stream.value_or(false);
  if (const json* so = Find(j, "stream_options")) {
    if (!so->is_object()) return WrongType("stream_options", "an object", *so);
    std::optional<bool> include_usage;
    if (Find(*so, "include_usage") && !(*so)["include_usage"].is_boolean()) {
      return WrongType("stream_options.include_usage", "a boolean", (*so)["include_usage"]);
    }
    RETURN_IF_ERROR(ReadBool(*so, "include_usage", &include_usage));
    r.include_usage = include_usage.value_or(false);
  }

  std::optional<int64_t> max_tokens, max_completion_tokens, n, seed;
  RETURN_IF_ERROR(ReadInteger(j, "max_tokens", &max_tokens));
  if (chat) RETURN_IF_ERROR(ReadInteger(j, "max_completion_tokens", &max_completion_tokens));
  in.max_tokens = max_completion_tokens ? max_completion_tokens : max_tokens;
  RETURN_IF_ERROR(ReadNumber(j, "temperature", &in.temperature));
  RETURN_IF_ERROR(ReadNumber(j, "top_p", &in.top_p));
  RETURN_IF_ERROR(ReadInteger(j, "top_k", &in.top_k));
  RETURN_IF_ERROR(ReadNumber(j, "min_p", &in.min_p));
  RETURN_IF_ERROR(ReadInteger(j, "seed", &seed));
  if (seed) in.seed = static_cast<uint64_t>(*seed);
  RETURN_IF_ERROR(ReadInteger(j, "min_tokens", &in.min_tokens));
  RETURN_IF_ERROR(ReadBool(j, "ignore_eos", &ignore_eos));
  in.ignore_eos = ignore_eos.value_or(false);
  RETURN_IF_ERROR(ReadBool(j, "skip_special_tokens", &in.skip_special_tokens));
  if (const json* stop = Find(j, "stop")) {
    if (stop->is_string()) {
      in.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (size_t i = 0; i < stop->size(); ++i) {
        if (!(*stop)[i].is_string()) {
          return WrongType(absl::StrCat("stop[", i, "]"), "a string", (*stop)[i]);
        }
        in.stop.push_back((*stop)[i].get<std::string>());
      }
    } else {
      return WrongType("stop", "a string or an array of strings", *stop);
    }
  }
  if (const json* ids = Find(j, "stop_token_ids")) {
    ASSIGN_OR_RETURN(in.stop_token_ids, ReadIntArray("stop_token_ids", *ids));
  }

  // Features the engine does not have.
  RETURN_IF_ERROR(ReadInteger(j, "n", &n));
  if (n && *n != 1) return FieldError("n", "only n = 1 is supported");
  RETURN_IF_ERROR(RequireNeutral(j, "presence_penalty", 0, "presence_penalty"));
  RETURN_IF_ERROR(RequireNeutral(j, "frequency_penalty", 0, "frequency_penalty"));
  RETURN_IF_ERROR(RequireNeutral(j, "repetition_penalty", 1, "repetition_penalty"));
  if (const json* lp = Find(j, "logprobs")) {
    const bool on = lp->is_boolean()  ? lp->get<bool>()
                    : lp->is_number() ? lp->get<double>() > 0
                                      : true;
    if (on) return FieldError("logprobs", "log probabilities are not supported");
  }
  if (const json* tlp = Find(j, "top_logprobs");
      tlp && !(tlp->is_number() && tlp->get<double>() == 0)) {
    return FieldError("top_logprobs", "log probabilities are not supported");
  }
  if (const json* tools = Find(j, "tools"); tools && !(tools->is_array() && tools->empty())) {
    return FieldError("tools", "tool calls are not supported");
  }
  if (const json* rf = Find(j, "response_format")) {
    if (!rf->is_object() || rf->value("type", std::string("text")) != "text") {
      return FieldError("response_format", "only {\"type\": \"text\"} is supported");
    }
  }

  if (chat) {
    ASSIGN_OR_RETURN(in.messages, ReadMessages(j));
    std::optional<bool> add_generation_prompt;
    RETURN_IF_ERROR(ReadBool(j, "add_generation_prompt", &add_generation_prompt));
    in.add_generation_prompt = add_generation_prompt.value_or(true);
    RETURN_IF_ERROR(ReadBool(j, "separate_reasoning", &in.separate_reasoning));
  } else {
    RETURN_IF_ERROR(ReadPrompt(j, &in));
    std::optional<bool> echo;
    std::optional<int64_t> best_of;
    RETURN_IF_ERROR(ReadBool(j, "echo", &echo));
    if (echo.value_or(false)) return FieldError("echo", "echo is not supported");
    RETURN_IF_ERROR(ReadInteger(j, "best_of", &best_of));
    if (best_of && *best_of != 1) return FieldError("best_of", "only best_of = 1 is supported");
  }
  return r;
}

HttpError ToHttpError(const absl::Status& status) {
  HttpError e;
  std::string type;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      e.status = 400, type = "invalid_request_error";
      break;
    case absl::StatusCode::kNotFound:
      e.status = 404, type = "invalid_request_error";
      break;
    case absl::StatusCode::kResourceExhausted:
      e.status = 429, type = "rate_limit_error";
      break;
    case absl::StatusCode::kCancelled:
      e.status = 499, type = "cancelled";
      break;
    case absl::StatusCode::kUnavailable:
      e.status = 503, type = "service_unavailable";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      e.status = 504, type = "timeout";
      break;
    default:
      e.status = 500, type = "server_error";
  }
  const std::string param = ErrorField(status);
  const std::string code = ErrorCode(status);
  e.body = {{"error",
             {{"message", std::string(status.message())},
              {"type", type},
              {"param", param.empty() ? json(nullptr) : json(param)},
              {"code", code.empty() ? json(nullptr) : json(code)}}}};
  return e;
}

std::string DumpJson(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string SseEvent(const json& data) { return absl::StrCat("data: ", DumpJson(data), "\n\n"); }

OpenAiResponseBuilder::OpenAiResponseBuilder(OpenAiEndpoint endpoint, std::string id,
                                             std::string model, int64_t created, bool include_usage)
    : endpoint_(endpoint),
      id_(std::move(id)),
      model_(std::move(model)),
      created_(created),
      include_usage_(include_usage) {}

json OpenAiResponseBuilder::Envelope() const {
  const bool chat = endpoint_ == OpenAiEndpoint::kChat;
  return {{"id", id_},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created_},
          {"model", model_}};
}

json OpenAiResponseBuilder::Usage(const StreamCompletion& c) const {
  json usage = {{"prompt_tokens", c.prompt_tokens},
                {"completion_tokens", c.completion_tokens},
                {"total_tokens", c.prompt_tokens + c.completion_tokens}};
  if (endpoint_ == OpenAiEndpoint::kChat) {
    usage["completion_tokens_details"] = {{"reasoning_tokens", c.reasoning_tokens}};
  }
  return usage;
}

std::string OpenAiResponseBuilder::StreamStart() const {
  if (endpoint_ != OpenAiEndpoint::kChat) return "";
  json j = Envelope();
  j["choices"] = json::array({{{"index", 0},
                               {"delta", {{"role", "assistant"}, {"content", ""}}},
                               {"logprobs", nullptr},
                               {"finish_reason", nullptr}}});
  if (include_usage_) j["usage"] = nullptr;
  return SseEvent(j);
}

std::string OpenAiResponseBuilder::StreamChunk(const tritmoe::StreamChunk& chunk) const {
  if (chunk.text.empty() && chunk.reasoning.empty()) return "";
  json j = Envelope();
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  if (endpoint_ == OpenAiEndpoint::kChat) {
    json delta = json::object();
    if (!chunk.reasoning.empty()) delta["reasoning_content"] = chunk.reasoning;
    if (!chunk.text.empty()) delta["content"] = chunk.text;
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = chunk.text + chunk.reasoning;
  }
  j["choices"] = json::array({std::move(choice)});
  if (include_usage_) j["usage"] = nullptr;
  return SseEvent(j);
}

std::string OpenAiResponseBuilder::StreamEnd(const StreamCompletion& c) const {
  json j = Envelope();
  json choice = {
      {"index", 0}, {"logprobs", nullptr}, {"finish_reason", OpenAiFinishReason(c.finish)}};
  if (endpoint_ == OpenAiEndpoint::kChat) {
    choice["delta"] = json::object();
  } else {
    choice["text"] = "";
  }
  j["choices"] = json::array({std::move(choice)});
  if (include_usage_) j["usage"] = nullptr;
  std::string out = SseEvent(j);
  if (include_usage_) {
    json u = Envelope();
    u["choices"] = json::array();
    u["usage"] = Usage(c);
    out += SseEvent(u);
  }
  out += "data: [DONE]\n\n";
  return out;
}

std::string OpenAiResponseBuilder::StreamError(const absl::Status& status) {
  return SseEvent(ToHttpError(status).body) + "data: [DONE]\n\n";
}

void OpenAiResponseBuilder::Collect(const tritmoe::StreamChunk& chunk) {
  text_ += chunk.text;
  reasoning_ += chunk.reasoning;
}

json OpenAiResponseBuilder::Response(const StreamCompletion& c) const {
  const bool chat = endpoint_ == OpenAiEndpoint::kChat;
  json choice = {
      {"index", 0}, {"logprobs", nullptr}, {"finish_reason", OpenAiFinishReason(c.finish)}};
  if (c.finish == ServeFinish::kStopString) {
    choice["stop_reason"] = c.matched_stop;
  } else if (c.finish == ServeFinish::kStopToken) {
    choice["stop_reason"] = c.matched_token;
  } else {
    choice["stop_reason"] = nullptr;
  }
  if (chat) {
    choice["message"] = {
        {"role", "assistant"},
        {"content", text_},
        {"reasoning_content", reasoning_.empty() ? json(nullptr) : json(reasoning_)}};
  } else {
    choice["text"] = text_ + reasoning_;
  }
  return {{"id", id_},
          {"object", chat ? "chat.completion" : "text_completion"},
          {"created", created_},
          {"model", model_},
          {"choices", json::array({std::move(choice)})},
          {"usage", Usage(c)}};
}

}  // namespace tritmoe
