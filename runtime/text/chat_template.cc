#include "runtime/text/chat_template.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace tritmoe {

void ChatPrompt::AddText(std::string_view text) {
  if (text.empty()) return;
  if (!segments_.empty() && !segments_.back().special) {
    segments_.back().text.append(text);
  } else {
    segments_.push_back({false, std::string(text)});
  }
}

std::string ChatPrompt::ToString() const {
  std::string out;
  for (const Segment& s : segments_) out += s.text;
  return out;
}

absl::StatusOr<ChatPrompt> RenderR1ChatPrompt(absl::Span<const ChatMessage> messages,
                                              const ChatTemplateOptions& options) {
  ChatPrompt prompt;
  std::string system;
  bool have_system = false;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant") {
      return absl::InvalidArgumentError(
          absl::StrCat("messages[", i, "].role \"", role,
                       "\" is not supported (expected system, user or assistant)"));
    }
    if (role == "system") {
      if (have_system) system += "\n\n";
      system += messages[i].content;
      have_system = true;
    }
  }
  prompt.AddSpecial(kR1Bos);
  prompt.AddText(system);
  for (const ChatMessage& m : messages) {
    if (m.role == "user") {
      prompt.AddSpecial(kR1User);
      prompt.AddText(m.content);
    } else if (m.role == "assistant") {
      std::string_view content = m.content;
      const size_t close = content.rfind(kThinkClose);
      if (close != std::string_view::npos) content.remove_prefix(close + kThinkClose.size());
      prompt.AddSpecial(kR1Assistant);
      prompt.AddText(content);
      prompt.AddSpecial(kR1Eos);
    }
  }
  if (options.add_generation_prompt) {
    prompt.AddSpecial(kR1Assistant);
    if (options.think_prefix) {
      prompt.AddSpecial(kThinkOpen);
      prompt.AddText("\n");
      prompt.starts_in_reasoning_ = true;
    }
  }
  return prompt;
}

absl::StatusOr<std::vector<int32_t>> EncodeChatPrompt(const Tokenizer& tokenizer,
                                                      const ChatPrompt& prompt) {
  std::vector<int32_t> ids;
  for (const ChatPrompt::Segment& s : prompt.segments()) {
    if (s.special) {
      std::optional<int32_t> id = tokenizer.FindToken(s.text);
      if (!id) {
        return absl::FailedPreconditionError(
            absl::StrCat("the vocabulary has no token \"", s.text, "\" needed by the R1 template"));
      }
      ids.push_back(*id);
    } else {
      ASSIGN_OR_RETURN(std::vector<int32_t> part,
                       tokenizer.Encode(s.text, /*add_bos=*/false, /*parse_special=*/false));
      ids.insert(ids.end(), part.begin(), part.end());
    }
  }
  return ids;
}

}  // namespace tritmoe
