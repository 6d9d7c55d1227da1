// Decides when a sequence stops and what text the client receives, given the sampled tokens and
// their detokenized text (from StreamingDetokenizer, so always whole UTF-8 characters).
//
// Stops, checked in this order for each token:
//   * EOS (unless ignore_eos) or one of stop_token_ids: the token's own text is not emitted;
//   * a stop string: the text is cut right before it, and the stop string itself is dropped.
//     A stop string may span several tokens: output that could be the beginning of one is held
//     back until it is either completed (stop) or ruled out (released);
//   * max_tokens reached: everything held back is released.
// EOS, stop tokens and stop strings only count once min_tokens tokens have been generated.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/text/sampler.h"

namespace tritmoe {

enum class FinishReason {
  kNone,        // still running
  kEos,         // the model's end-of-sequence token
  kStopToken,   // one of stop_token_ids
  kStopString,  // one of the stop strings
  kLength,      // max_tokens
};

const char* FinishReasonName(FinishReason r);  // "eos", "stop_token", "stop", "length"

class StopChecker {
 public:
  // params must be valid (SamplingParams::Validate); eos_id -1 if none.
  StopChecker(const SamplingParams& params, int32_t eos_id);

  struct Step {
    std::string text;  // output text that is final now (possibly empty)
    FinishReason finish = FinishReason::kNone;
  };

  // Records one generated token and its text. After a finishing step, further calls are errors
  // of the caller and return an empty, finished step.
  Step Push(int32_t token, std::string_view text);

  // For a sequence ended from outside (cancel, context full): releases the held-back text.
  std::string Flush();

  bool finished() const { return finish_ != FinishReason::kNone; }
  FinishReason finish_reason() const { return finish_; }
  int32_t num_generated() const { return num_generated_; }
  // The stop string or token that ended the sequence, when it was one.
  const std::string& matched_stop() const { return matched_stop_; }
  int32_t matched_token() const { return matched_token_; }

 private:
  SamplingParams params_;
  int32_t eos_id_;
  int32_t num_generated_ = 0;
  FinishReason finish_ = FinishReason::kNone;
  std::string held_;  // text that may be the start of a stop string
  std::string matched_stop_;
  int32_t matched_token_ = -1;
};

}  // namespace tritmoe
