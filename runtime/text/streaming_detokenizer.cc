#include "runtime/text/streaming_detokenizer.h"

#include "base/status_macros.h"
#include "runtime/text/utf8.h"

namespace tritmoe {

absl::StatusOr<std::string> StreamingDetokenizer::Push(int32_t id) {
  ASSIGN_OR_RETURN(std::string_view piece, tokenizer_->TokenToPiece(id, render_special_));
  pending_.append(piece);
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const Utf8Unit u = ScanUtf8(pending_, i);
    if (u.kind == Utf8Unit::kIncomplete) break;  // wait for the rest of the character
    if (u.kind == Utf8Unit::kValid) {
      out.append(pending_, i, u.length);
    } else {
      out.append(kUtf8Replacement);
    }
    i += u.length;
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamingDetokenizer::Flush() {
  std::string out = SanitizeUtf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace tritmoe
