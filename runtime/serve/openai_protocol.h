// The OpenAI-compatible wire format: request bodies of /v1/chat/completions and /v1/completions
// parsed into GenerationInput (with type checks on every known field), and the response bodies:
// whole responses, SSE chunks ("data: <json>\n\n", ended by "data: [DONE]\n\n") and OpenAI's
// error body {"error": {"message", "type", "param", "code"}}.
//
// Accepted fields (others are ignored, as OpenAI servers do):
//   both:  model, stream, stream_options.include_usage, max_tokens, temperature, top_p, seed,
//          stop (string or array), n (1), presence_penalty/frequency_penalty (0),
//          repetition_penalty (1), logprobs (false/null), user, request_id, and vLLM's extras
//          top_k, min_p, min_tokens, ignore_eos, stop_token_ids, skip_special_tokens;
//   chat:  messages [{role, content: string | [{type: "text", text}] }], max_completion_tokens,
//          add_generation_prompt, separate_reasoning, top_logprobs (0/null);
//   completions: prompt (string, token ids, or a one-element array of either), echo (false),
//          best_of (1).
// Features the engine does not have (penalties, logprobs, n > 1) fail with 400 naming the field.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/serve/request_builder.h"
#include "runtime/serve/request_stream.h"

namespace tritmoe {

enum class OpenAiEndpoint { kChat, kCompletions };

struct OpenAiRequest {
  GenerationInput input;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

// InvalidArgument (field named) for malformed JSON, a body that is not an object, a known field
// of the wrong type or value range that can be checked without the model, unsupported features.
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, std::string_view body);

// An error as OpenAI's body and the HTTP status for its code: InvalidArgument/AlreadyExists
// 400, NotFound 404, ResourceExhausted 429, Cancelled 499, Unavailable 503, DeadlineExceeded
// 504, anything else 500.
struct HttpError {
  int status = 500;
  nlohmann::json body;
};
HttpError ToHttpError(const absl::Status& status);

// Builds the responses of one request, streamed or whole.
class OpenAiResponseBuilder {
 public:
  OpenAiResponseBuilder(OpenAiEndpoint endpoint, std::string id, std::string model, int64_t created,
                        bool include_usage);

  // Streaming: the first event (chat: the assistant role), one per chunk ("" when the chunk
  // carries no text), the end (finish chunk, usage chunk when asked, [DONE]), or an error
  // mid-stream (error event, [DONE]).
  std::string StreamStart() const;
  std::string StreamChunk(const tritmoe::StreamChunk& chunk) const;
  std::string StreamEnd(const StreamCompletion& completion) const;
  static std::string StreamError(const absl::Status& status);

  // Whole response: collect the chunks, then build.
  void Collect(const tritmoe::StreamChunk& chunk);
  nlohmann::json Response(const StreamCompletion& completion) const;

  const std::string& id() const { return id_; }

 private:
  nlohmann::json Envelope() const;
  nlohmann::json Usage(const StreamCompletion& c) const;

  OpenAiEndpoint endpoint_;
  std::string id_;
  std::string model_;
  int64_t created_;
  bool include_usage_;
  std::string text_;
  std::string reasoning_;
};

// "data: <json>\n\n".
std::string SseEvent(const nlohmann::json& data);
// Compact JSON text; bytes that are not UTF-8 (echoed from a request) become U+FFFD instead of
// throwing.
std::string DumpJson(const nlohmann::json& j);

}  // namespace tritmoe
