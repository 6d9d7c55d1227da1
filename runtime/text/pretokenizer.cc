#include "runtime/text/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <string>

#include "absl/strings/str_cat.h"

namespace tritmoe {
namespace {

// The three patterns of runtime/deepseek_v3_pretokenizer_regex.txt (lines 2-4), byte for byte.
// The second one holds literal CJK characters: [U+4E00-U+9FA5 U+3040-U+309F U+30A0-U+30FF]+.
constexpr std::array<std::string_view, 3> kDeepSeekV3Patterns = {
    R"re(\p{N}{1,3})re",
    R"re([一-龥぀-ゟ゠-ヿ]+)re",
    R"re([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re",
};

struct CodeDeleter {
  void operator()(pcre2_code* p) const { pcre2_code_free(p); }
};
struct MatchDataDeleter {
  void operator()(pcre2_match_data* p) const { pcre2_match_data_free(p); }
};
using CodePtr = std::unique_ptr<pcre2_code, CodeDeleter>;
using MatchDataPtr = std::unique_ptr<pcre2_match_data, MatchDataDeleter>;

std::string Pcre2ErrorMessage(int code) {
  std::array<PCRE2_UCHAR, 256> buf{};
  pcre2_get_error_message(code, buf.data(), buf.size());
  return std::string(reinterpret_cast<const char*>(buf.data()));
}

}  // namespace

struct PreTokenizer::Impl {
  std::vector<CodePtr> patterns;
  bool jit = true;
};

absl::StatusOr<PreTokenizer> PreTokenizer::CreateDeepSeekV3() {
  auto impl = std::make_shared<Impl>();
  for (std::string_view pattern : kDeepSeekV3Patterns) {
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    CodePtr code(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                               PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error,
                               &error_offset, nullptr));
    if (code == nullptr) {
      return absl::InternalError(absl::StrCat("PCRE2 cannot compile pre-tokenizer pattern ",
                                              impl->patterns.size() + 1, " at offset ",
                                              error_offset, ": ", Pcre2ErrorMessage(error)));
    }
    // JIT is an optimization only; the interpreter gives the same matches.
    if (pcre2_jit_compile(code.get(), PCRE2_JIT_COMPLETE) != 0) impl->jit = false;
    impl->patterns.push_back(std::move(code));
  }
  return PreTokenizer(std::move(impl));
}

bool PreTokenizer::jit() const { return impl_->jit; }

absl::Status PreTokenizer::Split(std::string_view text,
                                 std::vector<std::string_view>* pieces) const {
  if (text.empty()) return absl::OkStatus();
  std::vector<std::string_view> current = {text};
  std::vector<std::string_view> next;
  for (size_t p = 0; p < impl_->patterns.size(); ++p) {
    const pcre2_code* code = impl_->patterns[p].get();
    MatchDataPtr md(pcre2_match_data_create_from_pattern(code, nullptr));
    if (md == nullptr) return absl::ResourceExhaustedError("PCRE2 match data allocation failed");
    next.clear();
    for (std::string_view piece : current) {
      // Each piece is its own subject, so lookaheads stop at the piece's end, as in HF/llama.cpp.
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
      size_t emitted = 0, offset = 0;
      while (offset < piece.size()) {
        const int rc = pcre2_match(code, subject, piece.size(), offset, 0, md.get(), nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          return absl::InternalError(absl::StrCat("PCRE2 match error in pre-tokenizer pattern ",
                                                  p + 1, ": ", Pcre2ErrorMessage(rc)));
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
        const size_t begin = ov[0], end = ov[1];
        if (end == begin) {  // cannot happen with these patterns; never loop forever
          offset = begin + 1;
          while (offset < piece.size() && (static_cast<uint8_t>(piece[offset]) & 0xC0) == 0x80) {
            ++offset;
          }
          continue;
        }
        if (begin > emitted) next.push_back(piece.substr(emitted, begin - emitted));
        next.push_back(piece.substr(begin, end - begin));
        emitted = offset = end;
      }
      if (emitted < piece.size()) next.push_back(piece.substr(emitted));
    }
    current.swap(next);
  }
  pieces->insert(pieces->end(), current.begin(), current.end());
  return absl::OkStatus();
}

}  // namespace tritmoe
