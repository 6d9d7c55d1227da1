// Splits R1 output text into reasoning_content (inside <think>...</think>) and content, chunk by
// chunk while streaming: a tag split across chunks is recognized because the text that could
// still turn out to be the start of a tag is held back until it can be decided.
//
// * Output that starts (after optional whitespace) with "<think>" opens reasoning; the tag and
//   that whitespace are dropped. Otherwise the output starts in reasoning only if the prompt
//   already opened it (ChatPrompt::starts_in_reasoning()).
// * The first "</think>" ends reasoning; the tag is dropped and everything after it, including
//   later tags, is content (byte for byte, whitespace included).
// * Output that ends without "</think>" leaves everything after the opening in reasoning.
#pragma once

#include <string>
#include <string_view>

namespace tritmoe {

class ReasoningParser {
 public:
  struct Delta {
    std::string reasoning;
    std::string content;
    bool operator==(const Delta&) const = default;
  };

  explicit ReasoningParser(bool starts_in_reasoning) : starts_in_reasoning_(starts_in_reasoning) {}

  // Feeds the next chunk of generated text; returns what can be attributed now.
  Delta Push(std::string_view text);
  // End of output: returns whatever was held back.
  Delta Finish();

  bool in_reasoning() const { return state_ == State::kReasoning; }
  bool reasoning_ended() const { return state_ == State::kContent && saw_close_; }

 private:
  enum class State { kStart, kReasoning, kContent };
  void Drain(Delta* out, bool final);

  bool starts_in_reasoning_;
  bool saw_close_ = false;
  State state_ = State::kStart;
  std::string pending_;
};

}  // namespace tritmoe
