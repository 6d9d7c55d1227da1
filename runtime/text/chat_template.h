// The DeepSeek-R1 chat format (formats.md §6.4), rendered in code rather than by a Jinja engine:
//
//   <｜begin▁of▁sentence｜>{system}<｜User｜>{user}<｜Assistant｜>{answer}<｜end▁of▁sentence｜>
//   <｜User｜>{user}<｜Assistant｜><think>\n          (all on one line; no separators)
//
// * Exactly one BOS, placed by the template. EncodeChatPrompt turns the markup into single
//   special tokens and the message text into ordinary tokens (parse_special = false, so text that
//   merely looks like markup cannot inject turns), and never lets the tokenizer add another BOS.
// * System messages go right after BOS; several are joined with "\n\n".
// * For assistant turns in the history only the text after the last "</think>" is kept
//   (R1's template: content.split('</think>')[-1]), so earlier reasoning is not re-sent.
// * The generation prompt is "<｜Assistant｜>" followed, by default, by "<think>\n" (DeepSeek's
//   updated R1 template, which makes the model always start by reasoning). Then the output begins
//   inside the reasoning block: start the ReasoningParser with starts_in_reasoning().
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/text/tokenizer.h"

namespace tritmoe {

inline constexpr std::string_view kR1Bos = "<｜begin▁of▁sentence｜>";
inline constexpr std::string_view kR1Eos = "<｜end▁of▁sentence｜>";
inline constexpr std::string_view kR1User = "<｜User｜>";
inline constexpr std::string_view kR1Assistant = "<｜Assistant｜>";
inline constexpr std::string_view kThinkOpen = "<think>";
inline constexpr std::string_view kThinkClose = "</think>";

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

struct ChatTemplateOptions {
  // End with the assistant prefix so that the model writes the next answer.
  bool add_generation_prompt = true;
  // Follow the prefix with "<think>\n" (updated R1 template). false gives the January-2025
  // template's bare "<｜Assistant｜>".
  bool think_prefix = true;
};

// A rendered prompt as a sequence of segments: special-token markup or message text.
class ChatPrompt {
 public:
  struct Segment {
    bool special;  // markup that must encode to exactly one token
    std::string text;
  };

  const std::vector<Segment>& segments() const { return segments_; }
  // The whole prompt as one string (what the Jinja template renders).
  std::string ToString() const;
  // Whether the prompt ends inside an opened <think> block (the generation prompt's prefix).
  bool starts_in_reasoning() const { return starts_in_reasoning_; }

 private:
  friend absl::StatusOr<ChatPrompt> RenderR1ChatPrompt(absl::Span<const ChatMessage>,
                                                       const ChatTemplateOptions&);
  void AddSpecial(std::string_view text) { segments_.push_back({true, std::string(text)}); }
  void AddText(std::string_view text);

  std::vector<Segment> segments_;
  bool starts_in_reasoning_ = false;
};

// Renders the conversation. Fails (InvalidArgument, naming messages[i].role) on roles other
// than system/user/assistant.
absl::StatusOr<ChatPrompt> RenderR1ChatPrompt(absl::Span<const ChatMessage> messages,
                                              const ChatTemplateOptions& options = {});

// Token ids of a rendered prompt: one token per markup segment (FailedPrecondition when the
// vocabulary lacks it), the text segments encoded without special-token parsing. The result
// starts with exactly one BOS.
absl::StatusOr<std::vector<int32_t>> EncodeChatPrompt(const Tokenizer& tokenizer,
                                                      const ChatPrompt& prompt);

}  // namespace tritmoe
