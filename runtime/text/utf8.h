// Small UTF-8 helpers shared by the tokenizer, the streaming detokenizer and the stop checker.
// Validity follows Unicode's well-formed byte sequences table (no overlongs, no surrogates,
// nothing above U+10FFFF); ill-formed input is replaced one "maximal subpart" at a time with
// U+FFFD, the substitution practice Unicode recommends (and that Python and browsers use).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tritmoe {

inline constexpr std::string_view kUtf8Replacement = "\xEF\xBF\xBD";  // U+FFFD

struct Utf8Unit {
  enum Kind {
    kValid,       // a complete, well-formed character of `length` bytes
    kInvalid,     // `length` bytes (>= 1) that can never start a character: replace them
    kIncomplete,  // the remaining `length` bytes are a well-formed prefix cut by the end of input
  };
  Kind kind;
  int length;
  uint32_t codepoint;  // only for kValid
};

// Classifies the bytes starting at s[pos] (pos < s.size()).
Utf8Unit ScanUtf8(std::string_view s, size_t pos);

bool IsValidUtf8(std::string_view s);

// s with every ill-formed subpart (including an incomplete tail) replaced by U+FFFD.
std::string SanitizeUtf8(std::string_view s);

// Appends the UTF-8 encoding of a codepoint (cp <= 0x10FFFF).
void AppendUtf8(uint32_t cp, std::string* out);

}  // namespace tritmoe
