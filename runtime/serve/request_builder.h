// Turns a front-end's request (OpenAI JSON or the gRPC message, both parsed into
// GenerationInput) into a ServeRequest: applies the defaults, tokenizes the prompt (plain text,
// token ids, or chat messages through the R1 chat template) and validates every field, so that
// bad input fails here with a clear error and never reaches the scheduler.
//
// Errors (FieldError, naming the field in the front-end's own spelling):
//   NotFound         `model` is set and is not the served model name;
//   InvalidArgument  everything else: a missing or empty prompt, a token id outside the
//                    vocabulary, temperature < 0 or not finite, top_p outside (0, 1], top_k < -1,
//                    min_p outside [0, 1], max_tokens < 1, min_tokens outside [0, max_tokens], an
//                    empty stop string, a bad chat role, a prompt that leaves no room in the
//                    context (prompt >= max_model_len) or prompt + max_tokens > max_model_len.
// Thread-safe.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "runtime/serve/serve_request.h"
#include "runtime/serve/served_model.h"
#include "runtime/text/chat_template.h"

namespace tritmoe {

// Field spellings in error messages: OpenAI JSON ("max_tokens") or the proto
// ("stopping.max_tokens").
enum class FieldNaming { kOpenAi, kProto };

struct GenerationInput {
  std::string request_id;  // "" = assign one
  std::string model;       // "" = the served model
  // Exactly one prompt form.
  std::optional<std::string> text;
  std::optional<std::vector<int64_t>> token_ids;
  std::optional<std::vector<ChatMessage>> messages;
  bool add_generation_prompt = true;  // chat

  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> top_k;
  std::optional<double> min_p;
  std::optional<uint64_t> seed;
  std::optional<int64_t> max_tokens;
  std::optional<int64_t> min_tokens;
  std::vector<std::string> stop;
  std::vector<int64_t> stop_token_ids;
  bool ignore_eos = false;
  std::optional<bool> skip_special_tokens;
  std::optional<bool> separate_reasoning;
  std::optional<ServeClock::time_point> deadline;
};

class RequestBuilder {
 public:
  // `model` must outlive the builder.
  RequestBuilder(const ServedModel* model, FieldNaming naming) : model_(model), naming_(naming) {}

  // id_prefix: for assigned request ids ("chatcmpl-", "cmpl-", "gen-").
  absl::StatusOr<ServeRequest> Build(const GenerationInput& input,
                                     const std::string& id_prefix) const;

  // Token ids of a text (add_special: BOS per the model) or of a chat conversation.
  absl::StatusOr<std::vector<int32_t>> TokenizeText(const std::string& text,
                                                    bool add_special) const;
  absl::StatusOr<std::vector<int32_t>> TokenizeChat(const std::vector<ChatMessage>& messages,
                                                    bool add_generation_prompt) const;
  // Text of token ids (special tokens not rendered). InvalidArgument on an id outside the vocab.
  absl::StatusOr<std::string> Detokenize(const std::vector<int64_t>& ids) const;

  // NotFound (field "model") unless name is "" or the served name.
  absl::Status CheckModel(const std::string& name) const;

  // A fresh random id: prefix + 32 hex digits.
  std::string NewId(const std::string& prefix) const;

 private:
  const char* Name(const char* openai_name) const;

  const ServedModel* model_;
  FieldNaming naming_;
  mutable std::mutex rng_mu_;
  mutable absl::BitGen rng_;
};

}  // namespace tritmoe
