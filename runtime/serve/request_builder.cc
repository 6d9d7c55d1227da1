#include "runtime/serve/request_builder.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "runtime/serve/field_error.h"

namespace tritmoe {
namespace {

constexpr size_t kMaxStopStrings = 64;
constexpr size_t kMaxRequestIdLength = 256;

}  // namespace

const char* RequestBuilder::Name(const char* openai_name) const {
  if (naming_ == FieldNaming::kOpenAi) return openai_name;
  static constexpr const char* kProto[][2] = {
      {"temperature", "sampling.temperature"},
      {"top_p", "sampling.top_p"},
      {"top_k", "sampling.top_k"},
      {"min_p", "sampling.min_p"},
      {"seed", "sampling.seed"},
      {"max_tokens", "stopping.max_tokens"},
      {"min_tokens", "stopping.min_tokens"},
      {"stop", "stopping.stop"},
      {"stop_token_ids", "stopping.stop_token_ids"},
      {"messages", "chat.messages"},
  };
  for (const auto& [openai, proto] : kProto) {
    if (std::strcmp(openai, openai_name) == 0) return proto;
  }
  return openai_name;
}

std::string RequestBuilder::NewId(const std::string& prefix) const {
  uint64_t hi, lo;
  {
    std::lock_guard<std::mutex> lock(rng_mu_);
    hi = absl::Uniform<uint64_t>(rng_);
    lo = absl::Uniform<uint64_t>(rng_);
  }
  return absl::StrFormat("%s%016x%016x", prefix, hi, lo);
}

absl::Status RequestBuilder::CheckModel(const std::string& name) const {
  if (name.empty() || name == model_->name) return absl::OkStatus();
  return FieldError(absl::StatusCode::kNotFound, "model",
                    absl::StrCat("the model '", name, "' does not exist; this server serves '",
                                 model_->name, "'"),
                    "model_not_found");
}

absl::StatusOr<std::vector<int32_t>> RequestBuilder::TokenizeText(const std::string& text,
                                                                  bool add_special) const {
  const Tokenizer& tok = *model_->tokenizer;
  return tok.Encode(text, add_special && tok.add_bos(), /*parse_special=*/false);
}

absl::StatusOr<std::vector<int32_t>> RequestBuilder::TokenizeChat(
    const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  const char* field = Name("messages");
  if (messages.empty()) return FieldError(field, "must hold at least one message");
  ChatTemplateOptions options;
  options.add_generation_prompt = add_generation_prompt;
  absl::StatusOr<ChatPrompt> prompt = RenderR1ChatPrompt(messages, options);
  if (!prompt.ok()) return FieldError(field, prompt.status().message());
  return EncodeChatPrompt(*model_->tokenizer, *prompt);
}

absl::StatusOr<std::string> RequestBuilder::Detokenize(const std::vector<int64_t>& ids) const {
  const Tokenizer& tok = *model_->tokenizer;
  std::vector<int32_t> v;
  v.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= tok.n_vocab()) {
      return FieldError("tokens",
                        absl::StrCat("[", i, "] = ", ids[i], " is outside the vocabulary [0, ",
                                     tok.n_vocab(), ")"));
    }
    v.push_back(static_cast<int32_t>(ids[i]));
  }
  return tok.Decode(v);
}

absl::StatusOr<ServeRequest> RequestBuilder::Build(const GenerationInput& in,
                                                   const std::string& id_prefix) const {
  const Tokenizer& tok = *model_->tokenizer;
  RETURN_IF_ERROR(CheckModel(in.model));
  ServeRequest r;
  if (in.request_id.empty()) {
    r.request_id = NewId(id_prefix);
  } else {
    if (in.request_id.size() > kMaxRequestIdLength) {
      return FieldError("request_id", absl::StrCat("longer than ", kMaxRequestIdLength, " bytes"));
    }
    r.request_id = in.request_id;
  }

  // Sampling fields (OpenAI/vLLM meanings; unset fields keep SamplingParams' defaults).
  SamplingParams& p = r.sampling;
  if (in.temperature) {
    if (!std::isfinite(*in.temperature) || *in.temperature < 0) {
      return FieldError(Name("temperature"),
                        absl::StrCat("must be a finite number >= 0, got ", *in.temperature));
    }
    p.temperature = static_cast<float>(*in.temperature);
  }
  if (in.top_p) {
    if (!(*in.top_p > 0 && *in.top_p <= 1)) {
      return FieldError(Name("top_p"), absl::StrCat("must be in (0, 1], got ", *in.top_p));
    }
    p.top_p = static_cast<float>(*in.top_p);
  }
  if (in.top_k) {
    if (*in.top_k < -1 || *in.top_k > tok.n_vocab()) {
      return FieldError(Name("top_k"), absl::StrCat("must be -1 (off), 0 (off) or in 1..",
                                                    tok.n_vocab(), ", got ", *in.top_k));
    }
    p.top_k = *in.top_k < 0 ? 0 : static_cast<int32_t>(*in.top_k);
  }
  if (in.min_p) {
    if (!(*in.min_p >= 0 && *in.min_p <= 1)) {
      return FieldError(Name("min_p"), absl::StrCat("must be in [0, 1], got ", *in.min_p));
    }
    p.min_p = static_cast<float>(*in.min_p);
  }
  if (in.seed) {
    p.seed = *in.seed;
  } else {
    std::lock_guard<std::mutex> lock(rng_mu_);
    p.seed = absl::Uniform<uint64_t>(rng_);
  }
  if (in.max_tokens && *in.max_tokens < 1) {
    return FieldError(Name("max_tokens"), absl::StrCat("must be >= 1, got ", *in.max_tokens));
  }
  if (in.min_tokens) {
    if (*in.min_tokens < 0) {
      return FieldError(Name("min_tokens"), absl::StrCat("must be >= 0, got ", *in.min_tokens));
    }
    if (in.max_tokens && *in.min_tokens > *in.max_tokens) {
      return FieldError(Name("min_tokens"), absl::StrCat("must be <= max_tokens (", *in.max_tokens,
                                                         "), got ", *in.min_tokens));
    }
  }
  if (in.stop.size() > kMaxStopStrings) {
    return FieldError(Name("stop"), absl::StrCat("at most ", kMaxStopStrings, " stop strings, got ",
                                                 in.stop.size()));
  }
  for (size_t i = 0; i < in.stop.size(); ++i) {
    if (in.stop[i].empty()) return FieldError(Name("stop"), absl::StrCat("[", i, "] is empty"));
  }
  p.stop = in.stop;
  for (size_t i = 0; i < in.stop_token_ids.size(); ++i) {
    const int64_t id = in.stop_token_ids[i];
    if (id < 0 || id >= tok.n_vocab()) {
      return FieldError(
          Name("stop_token_ids"),
          absl::StrCat("[", i, "] = ", id, " is outside the vocabulary [0, ", tok.n_vocab(), ")"));
    }
    p.stop_token_ids.push_back(static_cast<int32_t>(id));
  }
  p.ignore_eos = in.ignore_eos;

  // The prompt.
  const int forms = in.text.has_value() + in.token_ids.has_value() + in.messages.has_value();
  const bool chat = in.messages.has_value();
  const char* prompt_field = chat                              ? Name("messages")
                             : naming_ == FieldNaming::kOpenAi ? "prompt"
                             : in.token_ids                    ? "token_ids"
                                                               : "text";
  if (forms != 1) {
    if (forms == 0 && naming_ == FieldNaming::kProto) prompt_field = "input";
    return FieldError(prompt_field, forms == 0 ? "a prompt is required"
                                               : "give exactly one of text, token ids, messages");
  }
  if (in.text) {
    ASSIGN_OR_RETURN(r.prompt, TokenizeText(*in.text, /*add_special=*/true));
  } else if (in.token_ids) {
    r.prompt.reserve(in.token_ids->size());
    for (size_t i = 0; i < in.token_ids->size(); ++i) {
      const int64_t id = (*in.token_ids)[i];
      if (id < 0 || id >= tok.n_vocab()) {
        return FieldError(prompt_field,
                          absl::StrCat("token [", i, "] = ", id, " is outside the vocabulary [0, ",
                                       tok.n_vocab(), ")"));
      }
      r.prompt.push_back(static_cast<int32_t>(id));
    }
  } else {
    if (in.messages->empty()) return FieldError(prompt_field, "must hold at least one message");
    ChatTemplateOptions options;
    options.add_generation_prompt = in.add_generation_prompt;
    absl::StatusOr<ChatPrompt> rendered = RenderR1ChatPrompt(*in.messages, options);
    if (!rendered.ok()) return FieldError(prompt_field, rendered.status().message());
    r.starts_in_reasoning = rendered->starts_in_reasoning();
    ASSIGN_OR_RETURN(r.prompt, EncodeChatPrompt(tok, *rendered));
  }
  if (r.prompt.empty()) return FieldError(prompt_field, "encodes to no tokens");
  const int64_t n_prompt = static_cast<int64_t>(r.prompt.size());
  if (n_prompt >= model_->max_model_len) {
    return FieldError(absl::StatusCode::kInvalidArgument, prompt_field,
                      absl::StrCat("this model's maximum context length is ", model_->max_model_len,
                                   " tokens, but the prompt has ", n_prompt,
                                   " tokens, which leaves no room to generate"),
                      "context_length_exceeded");
  }
  if (in.max_tokens) {
    if (n_prompt + *in.max_tokens > model_->max_model_len) {
      return FieldError(
          absl::StatusCode::kInvalidArgument, Name("max_tokens"),
          absl::StrCat("the prompt (", n_prompt, " tokens) plus max_tokens (", *in.max_tokens,
                       ") exceeds this model's maximum context "
                       "length of ",
                       model_->max_model_len, " tokens"),
          "context_length_exceeded");
    }
    p.max_tokens = static_cast<int32_t>(*in.max_tokens);
  } else {
    p.max_tokens = static_cast<int32_t>(model_->max_model_len - n_prompt);
  }
  if (in.min_tokens) {
    if (*in.min_tokens > p.max_tokens) {
      return FieldError(Name("min_tokens"), absl::StrCat("must be <= max_tokens (", p.max_tokens,
                                                         "), got ", *in.min_tokens));
    }
    p.min_tokens = static_cast<int32_t>(*in.min_tokens);
  }
  // The last net: whatever SamplingParams itself rejects (its message names the field).
  if (absl::Status s = p.Validate(); !s.ok()) return absl::InvalidArgumentError(s.message());

  r.skip_special_tokens = in.skip_special_tokens.value_or(true);
  r.separate_reasoning = in.separate_reasoning.value_or(
      chat && model_->reasoning_parser == ReasoningParserKind::kDeepSeekR1);
  if (!chat) r.starts_in_reasoning = false;
  r.deadline = in.deadline;
  return r;
}

}  // namespace tritmoe
