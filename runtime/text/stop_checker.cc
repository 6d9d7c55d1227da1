#include "runtime/text/stop_checker.h"

#include <algorithm>

namespace tritmoe {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kStopToken:
      return "stop_token";
    case FinishReason::kStopString:
      return "stop";
    case FinishReason::kLength:
      return "length";
  }
  return "?";
}

StopChecker::StopChecker(const SamplingParams& params, int32_t eos_id)
    : params_(params), eos_id_(eos_id) {}

StopChecker::Step StopChecker::Push(int32_t token, std::string_view text) {
  Step step;
  if (finished()) {
    step.finish = finish_;
    return step;
  }
  ++num_generated_;
  // min_tokens counts the tokens before this one: the sampler masks ending tokens while
  // num_generated < min_tokens, so an ending token is honoured from that step on.
  const bool may_stop = num_generated_ > params_.min_tokens;
  if (may_stop && token == eos_id_ && !params_.ignore_eos) {
    finish_ = FinishReason::kEos;
  } else if (may_stop && std::find(params_.stop_token_ids.begin(), params_.stop_token_ids.end(),
                                   token) != params_.stop_token_ids.end()) {
    finish_ = FinishReason::kStopToken;
  }
  if (finished()) {
    matched_token_ = token;
    step.text = std::move(held_);
    held_.clear();
    step.finish = finish_;
    return step;
  }

  held_.append(text);
  if (may_stop && !params_.stop.empty()) {
    // The earliest stop string in the held text wins (the longest one among equal starts).
    size_t best = std::string::npos;
    for (const std::string& s : params_.stop) {
      const size_t pos = held_.find(s);
      if (pos == std::string::npos) continue;
      if (best == std::string::npos || pos < best ||
          (pos == best && s.size() > matched_stop_.size())) {
        best = pos;
        matched_stop_ = s;
      }
    }
    if (best != std::string::npos) {
      step.text = held_.substr(0, best);
      held_.clear();
      finish_ = step.finish = FinishReason::kStopString;
      return step;
    }
  }
  // Keep back the longest suffix that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const std::string& s : params_.stop) {
    for (size_t n = std::min(held_.size(), s.size() - 1); n > keep; --n) {
      if (std::string_view(held_).substr(held_.size() - n) == std::string_view(s).substr(0, n)) {
        keep = n;
        break;
      }
    }
  }
  if (num_generated_ >= params_.max_tokens) keep = 0;
  step.text = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  if (num_generated_ >= params_.max_tokens) finish_ = step.finish = FinishReason::kLength;
  return step;
}

std::string StopChecker::Flush() {
  std::string out = std::move(held_);
  held_.clear();
  return out;
}

}  // namespace tritmoe
