// Turns one request's sampled tokens into the text its client receives: streaming detokenizer
// (whole UTF-8 characters) -> stop checker (EOS, stop tokens, stop strings, max_tokens) ->
// reasoning parser (<think>...</think> split off as reasoning text, when asked for).
// One per request, driven by the scheduler thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/serve/request_stream.h"
#include "runtime/serve/serve_request.h"
#include "runtime/text/reasoning_parser.h"
#include "runtime/text/stop_checker.h"
#include "runtime/text/streaming_detokenizer.h"
#include "runtime/text/tokenizer.h"

namespace tritmoe {

class OutputProcessor {
 public:
  // `tokenizer` must outlive this object; request.sampling must be valid.
  OutputProcessor(const Tokenizer& tokenizer, const ServeRequest& request, int32_t eos_id);

  struct Delta {
    std::string text;
    std::string reasoning;
    std::optional<ServeFinish> finish;  // set when this token ended the request
  };

  // Adds one sampled token. Fails only on an id outside the vocabulary.
  absl::StatusOr<Delta> Push(int32_t token);
  // Ends a request from outside (abort, deadline): releases all held-back text.
  Delta Finish();

  int32_t num_generated() const { return stops_.num_generated(); }
  int32_t reasoning_tokens() const { return reasoning_tokens_; }
  const std::string& matched_stop() const { return stops_.matched_stop(); }
  int32_t matched_token() const { return stops_.matched_token(); }

 private:
  // Runs finished text through the reasoning parser (or straight to text), into *out.
  void Route(const std::string& text, bool final, Delta* out);

  StreamingDetokenizer detok_;
  StopChecker stops_;
  std::optional<ReasoningParser> reasoning_;
  int32_t reasoning_tokens_ = 0;
  bool done_ = false;
};

}  // namespace tritmoe
