#include "runtime/text/reasoning_parser.h"

#include <algorithm>

#include "runtime/text/chat_template.h"

namespace tritmoe {
namespace {

// Length of the longest suffix of `s` that is a proper prefix of `tag`.
size_t PartialTagSuffix(std::string_view s, std::string_view tag) {
  for (size_t n = std::min(s.size(), tag.size() - 1); n > 0; --n) {
    if (s.substr(s.size() - n) == tag.substr(0, n)) return n;
  }
  return 0;
}

}  // namespace

void ReasoningParser::Drain(Delta* out, bool final) {
  if (state_ == State::kStart) {
    const size_t ws = pending_.find_first_not_of(" \t\r\n");
    const std::string_view rest =
        ws == std::string::npos ? std::string_view() : std::string_view(pending_).substr(ws);
    if (rest.substr(0, kThinkOpen.size()) == kThinkOpen) {
      pending_.erase(0, ws + kThinkOpen.size());
      state_ = State::kReasoning;
    } else if (!final && rest.size() < kThinkOpen.size() &&
               kThinkOpen.substr(0, rest.size()) == rest) {
      return;  // could still become "<think>"
    } else {
      state_ = starts_in_reasoning_ ? State::kReasoning : State::kContent;
    }
  }
  if (state_ == State::kReasoning) {
    const size_t close = pending_.find(kThinkClose);
    if (close != std::string::npos) {
      out->reasoning.append(pending_, 0, close);
      pending_.erase(0, close + kThinkClose.size());
      state_ = State::kContent;
      saw_close_ = true;
    } else {
      const size_t keep = final ? 0 : PartialTagSuffix(pending_, kThinkClose);
      out->reasoning.append(pending_, 0, pending_.size() - keep);
      pending_.erase(0, pending_.size() - keep);
      return;
    }
  }
  out->content.append(pending_);
  pending_.clear();
}

ReasoningParser::Delta ReasoningParser::Push(std::string_view text) {
  pending_.append(text);
  Delta out;
  Drain(&out, /*final=*/false);
  return out;
}

ReasoningParser::Delta ReasoningParser::Finish() {
  Delta out;
  Drain(&out, /*final=*/true);
  return out;
}

}  // namespace tritmoe
