// Turns generated token ids, one at a time, into text that is always valid UTF-8. A character may
// be split across tokens (byte-level BPE), so the bytes of an unfinished multi-byte character are
// held back until the token that completes it arrives. Byte sequences that can never become a
// character are replaced by U+FFFD (one per maximal ill-formed subpart), so clients (JSON, gRPC
// strings) never receive broken UTF-8.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/text/tokenizer.h"

namespace tritmoe {

class StreamingDetokenizer {
 public:
  // `tokenizer` must outlive this object. render_special as in Tokenizer::Decode.
  explicit StreamingDetokenizer(const Tokenizer& tokenizer, bool render_special = false)
      : tokenizer_(&tokenizer), render_special_(render_special) {}

  // Adds one token; returns the text completed by it (possibly empty). Invalid ids fail and
  // leave the state unchanged.
  absl::StatusOr<std::string> Push(int32_t id);

  // Ends the stream: returns the held-back bytes (an unfinished character becomes U+FFFD).
  std::string Flush();

  // Bytes currently held back (0..3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  bool render_special_;
  std::string pending_;
};

}  // namespace tritmoe
