#include "runtime/serve/output_processor.h"

namespace tritmoe {
namespace {

ServeFinish ToServeFinish(FinishReason r) {
  switch (r) {
    case FinishReason::kEos:
      return ServeFinish::kEos;
    case FinishReason::kStopToken:
      return ServeFinish::kStopToken;
    case FinishReason::kStopString:
      return ServeFinish::kStopString;
    case FinishReason::kLength:
    case FinishReason::kNone:
      return ServeFinish::kLength;
  }
  return ServeFinish::kLength;
}

}  // namespace

OutputProcessor::OutputProcessor(const Tokenizer& tokenizer, const ServeRequest& request,
                                 int32_t eos_id)
    : detok_(tokenizer, /*render_special=*/!request.skip_special_tokens),
      stops_(request.sampling, eos_id) {
  if (request.separate_reasoning) reasoning_.emplace(request.starts_in_reasoning);
}

void OutputProcessor::Route(const std::string& text, bool final, Delta* out) {
  if (!reasoning_) {
    out->text += text;
    return;
  }
  ReasoningParser::Delta d = reasoning_->Push(text);
  out->text += d.content;
  out->reasoning += d.reasoning;
  if (final) {
    ReasoningParser::Delta rest = reasoning_->Finish();
    out->text += rest.content;
    out->reasoning += rest.reasoning;
  }
}

absl::StatusOr<OutputProcessor::Delta> OutputProcessor::Push(int32_t token) {
  Delta out;
  if (done_) return out;
  absl::StatusOr<std::string> piece = detok_.Push(token);
  if (!piece.ok()) return piece.status();
  const bool closed_before = reasoning_ && reasoning_->reasoning_ended();
  StopChecker::Step step = stops_.Push(token, *piece);
  std::string text = std::move(step.text);
  if (step.finish != FinishReason::kNone) {
    done_ = true;
    out.finish = ToServeFinish(step.finish);
    // A stop string cuts everything after it; otherwise bytes of an unfinished character are
    // released (as U+FFFD), as `tritmoe generate` does at the end.
    if (step.finish != FinishReason::kStopString) text += detok_.Flush();
  }
  Route(text, done_, &out);
  // A token is a reasoning token when it is inside the block or closes it (approximate while
  // the parser holds back text that may be a tag).
  if (reasoning_ && !closed_before &&
      (reasoning_->in_reasoning() || reasoning_->reasoning_ended())) {
    ++reasoning_tokens_;
  }
  return out;
}

OutputProcessor::Delta OutputProcessor::Finish() {
  Delta out;
  if (done_) return out;
  done_ = true;
  std::string text = stops_.Flush();
  text += detok_.Flush();
  Route(text, true, &out);
  return out;
}

}  // namespace tritmoe
