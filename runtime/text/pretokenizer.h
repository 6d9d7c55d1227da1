// The "deepseek-v3" pre-tokenizer (formats.md §6.3): three regexes applied in sequence, each over
// every piece produced so far, keeping both the matches and the unmatched stretches between them
// as pieces (HF `Split(behavior="Isolated")`). BPE then runs on each piece separately.
//
// Matching uses PCRE2 with UTF + UCP (Unicode properties for \p{..}, \s, \S), JIT-compiled when
// the library supports it. Input need not be valid UTF-8: ill-formed bytes never match any
// pattern, so they end up in unmatched stretches and still reach BPE byte for byte (the tokenizer
// round-trips arbitrary bytes).
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tritmoe {

class PreTokenizer {
 public:
  // Compiles the three DeepSeek-V3 patterns.
  static absl::StatusOr<PreTokenizer> CreateDeepSeekV3();

  // Appends to *pieces the non-empty pieces of `text`, in order; their concatenation is `text`.
  // Thread-safe. Fails only if PCRE2 reports a matching error (e.g. a resource limit).
  absl::Status Split(std::string_view text, std::vector<std::string_view>* pieces) const;

  // Whether the patterns were JIT-compiled (informational).
  bool jit() const;

 private:
  struct Impl;
  explicit PreTokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;  // immutable; shared by copies
};

}  // namespace tritmoe
