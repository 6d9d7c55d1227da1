#include "runtime/text/tokenizer.h"

#include <algorithm>
#include <queue>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "runtime/text/byte_unicode.h"
#include "runtime/text/utf8.h"

namespace tritmoe {
namespace {

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

bool IsSpecialType(TokenType t) {
  return t == TokenType::kControl || t == TokenType::kUnknown || t == TokenType::kUserDefined;
}

// "<0xAB>" -> 0xAB.
std::optional<char> ParseByteToken(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return std::nullopt;
  int v = 0;
  for (char c : text.substr(3, 2)) {
    v <<= 4;
    if (c >= '0' && c <= '9') {
      v |= c - '0';
    } else if (c >= 'A' && c <= 'F') {
      v |= c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      v |= c - 'a' + 10;
    } else {
      return std::nullopt;
    }
  }
  return static_cast<char>(v);
}

// Bytes of a normal token: its characters mapped back through the byte alphabet; a character
// outside the alphabet (not expected in a gpt2 vocabulary) is kept as its own UTF-8.
std::string NormalTokenBytes(std::string_view text) {
  if (std::optional<std::string> bytes = VisibleToBytes(text)) return *std::move(bytes);
  std::string out;
  for (size_t i = 0; i < text.size();) {
    const Utf8Unit u = ScanUtf8(text, i);
    const int b = u.kind == Utf8Unit::kValid ? CodepointToByte(u.codepoint) : -1;
    if (b >= 0) {
      out.push_back(static_cast<char>(b));
    } else {
      out.append(text.substr(i, u.length));
    }
    i += u.length;
  }
  return out;
}

}  // namespace

absl::StatusOr<Tokenizer> Tokenizer::Create(VocabData vocab) {
  if (vocab.model != "gpt2") {
    return absl::UnimplementedError(absl::StrCat("tokenizer.ggml.model \"", vocab.model,
                                                 "\" is not supported (only \"gpt2\")"));
  }
  if (vocab.pre != "deepseek-v3") {
    return absl::UnimplementedError(absl::StrCat("tokenizer.ggml.pre \"", vocab.pre,
                                                 "\" is not supported (only \"deepseek-v3\")"));
  }
  const size_t n = vocab.tokens.size();
  if (n == 0) return absl::InvalidArgumentError("tokenizer.ggml.tokens is empty");
  if (n > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError("tokenizer.ggml.tokens has too many entries");
  }
  if (!vocab.token_types.empty() && vocab.token_types.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.token_type has ",
                                                   vocab.token_types.size(), " entries, expected ",
                                                   n, " (one per token)"));
  }
  const auto check_special = [&](int32_t id, const char* key) -> absl::Status {
    if (id < -1 || id >= static_cast<int64_t>(n)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.ggml.", key, " = ", id, " is outside [0, ", n, ")"));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(check_special(vocab.bos_id, "bos_token_id"));
  RETURN_IF_ERROR(check_special(vocab.eos_id, "eos_token_id"));
  RETURN_IF_ERROR(check_special(vocab.pad_id, "padding_token_id"));

  ASSIGN_OR_RETURN(PreTokenizer pre, PreTokenizer::CreateDeepSeekV3());
  Tokenizer t(std::move(pre));
  t.bos_id_ = vocab.bos_id;
  t.eos_id_ = vocab.eos_id;
  t.pad_id_ = vocab.pad_id;
  t.add_bos_ = vocab.add_bos;

  t.types_.resize(n, TokenType::kNormal);
  for (size_t i = 0; i < vocab.token_types.size(); ++i) {
    const int32_t v = vocab.token_types[i];
    if (v < 0 || v > 6) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.ggml.token_type[", i, "] = ", v, " is not a token type (0..6)"));
    }
    t.types_[i] = static_cast<TokenType>(v);
  }

  t.token_ids_.reserve(n);
  t.pieces_.resize(n);
  t.trie_.emplace_back();
  t.special_first_byte_.assign(256, false);
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = vocab.tokens[i];
    const auto id = static_cast<int32_t>(i);
    t.token_ids_.try_emplace(text, id);  // on duplicates the lowest id wins
    const TokenType type = t.types_[i];
    if (type == TokenType::kByte) {
      std::optional<char> b = ParseByteToken(text);
      t.pieces_[i] = b ? std::string(1, *b) : NormalTokenBytes(text);
    } else if (type == TokenType::kNormal || type == TokenType::kUndefined) {
      t.pieces_[i] = NormalTokenBytes(text);
    } else {
      t.pieces_[i] = text;  // special tokens are stored as raw UTF-8
    }
    if (IsSpecialType(type) && !text.empty()) {
      int32_t node = 0;
      for (char c : text) {
        const auto byte = static_cast<uint8_t>(c);
        auto& kids = t.trie_[node].children;
        auto it = std::lower_bound(kids.begin(), kids.end(), std::make_pair(byte, INT32_MIN));
        if (it != kids.end() && it->first == byte) {
          node = it->second;
        } else {
          const auto child = static_cast<int32_t>(t.trie_.size());
          kids.insert(it, {byte, child});
          t.trie_.emplace_back();  // invalidates `kids`; not used again below
          node = child;
        }
      }
      if (t.trie_[node].token < 0) t.trie_[node].token = id;
      t.special_first_byte_[static_cast<uint8_t>(text[0])] = true;
    }
  }

  for (int b = 0; b < 256; ++b) {
    const std::string visible = BytesToVisible(std::string(1, static_cast<char>(b)));
    // A missing byte token only matters for inputs containing that byte (Encode reports it).
    t.byte_tokens_[b] = t.FindToken(visible).value_or(-1);
    if (t.byte_tokens_[b] < 0) ++t.missing_byte_tokens_;
  }

  t.merges_.reserve(vocab.merges.size());
  for (size_t rank = 0; rank < vocab.merges.size(); ++rank) {
    const std::string& m = vocab.merges[rank];
    const size_t space = m.find(' ', 1);
    if (space == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.merges[", rank, "] = \"", m,
                                                     "\" is not of the form \"left right\""));
    }
    const std::string_view left = std::string_view(m).substr(0, space);
    const std::string_view right = std::string_view(m).substr(space + 1);
    std::optional<int32_t> l = t.FindToken(left), r = t.FindToken(right);
    std::optional<int32_t> result = t.FindToken(std::string(left).append(right));
    if (!l || !r || !result) {
      ++t.skipped_merges_;
      continue;
    }
    t.merges_.try_emplace(PairKey(*l, *r), MergeResult{static_cast<int32_t>(rank), *result});
  }
  t.tokens_ = std::move(vocab.tokens);
  return t;
}

std::optional<int32_t> Tokenizer::FindToken(std::string_view text) const {
  auto it = token_ids_.find(absl::string_view(text.data(), text.size()));
  if (it == token_ids_.end()) return std::nullopt;
  return it->second;
}

absl::Status Tokenizer::CheckId(int32_t id) const {
  if (id < 0 || id >= n_vocab()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token id ", id, " is outside the vocabulary [0, ", n_vocab(), ")"));
  }
  return absl::OkStatus();
}

std::optional<std::pair<size_t, int32_t>> Tokenizer::MatchSpecial(std::string_view text, size_t pos,
                                                                  bool parse_special) const {
  std::optional<std::pair<size_t, int32_t>> best;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto byte = static_cast<uint8_t>(text[i]);
    const auto& kids = trie_[node].children;
    auto it = std::lower_bound(kids.begin(), kids.end(), std::make_pair(byte, INT32_MIN));
    if (it == kids.end() || it->first != byte) break;
    node = it->second;
    const int32_t tok = trie_[node].token;
    if (tok >= 0 && (parse_special || types_[tok] == TokenType::kUserDefined)) {
      best = std::make_pair(i + 1 - pos, tok);
    }
  }
  return best;
}

absl::Status Tokenizer::EncodePiece(std::string_view piece, std::vector<int32_t>* out) const {
  if (missing_byte_tokens_ > 0) {
    for (char c : piece) {
      if (byte_tokens_[static_cast<uint8_t>(c)] < 0) {
        return absl::InvalidArgumentError(
            absl::StrFormat("the vocabulary has no byte-level token for byte 0x%02X of the input",
                            static_cast<uint8_t>(c)));
      }
    }
  }
  if (piece.size() == 1) {
    out->push_back(byte_tokens_[static_cast<uint8_t>(piece[0])]);
    return absl::OkStatus();
  }
  // Symbols form a linked list over the piece's bytes; merging keeps the left symbol and unlinks
  // the right one. Candidate pairs sit in a heap ordered by (rank, position); stale entries (a
  // side already merged into something else) are detected and dropped when popped.
  struct Symbol {
    int32_t token;
    int32_t prev, next;  // -1 at the ends
  };
  struct Candidate {
    int32_t rank, left, left_token, right_token, result;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  const auto n = static_cast<int32_t>(piece.size());
  std::vector<Symbol> sym(n);
  for (int32_t i = 0; i < n; ++i) {
    sym[i] = {byte_tokens_[static_cast<uint8_t>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1};
  }
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  const auto push = [&](int32_t left) {
    if (left < 0 || sym[left].next < 0) return;
    const int32_t right = sym[left].next;
    auto it = merges_.find(PairKey(sym[left].token, sym[right].token));
    if (it != merges_.end()) {
      heap.push({it->second.rank, left, sym[left].token, sym[right].token, it->second.token});
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& l = sym[c.left];
    if (l.token != c.left_token || l.next < 0 || sym[l.next].token != c.right_token) continue;
    const int32_t right = l.next;
    l.token = c.result;
    l.next = sym[right].next;
    if (l.next >= 0) sym[l.next].prev = c.left;
    sym[right].token = -1;
    push(l.prev);
    push(c.left);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out->push_back(sym[i].token);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text, bool add_bos,
                                                       bool parse_special) const {
  std::vector<int32_t> ids;
  std::vector<std::string_view> pieces;
  const auto encode_raw = [&](std::string_view raw) -> absl::Status {
    if (raw.empty()) return absl::OkStatus();
    pieces.clear();
    RETURN_IF_ERROR(pre_tokenizer_.Split(raw, &pieces));
    for (std::string_view piece : pieces) RETURN_IF_ERROR(EncodePiece(piece, &ids));
    return absl::OkStatus();
  };
  size_t raw_begin = 0;
  for (size_t pos = 0; pos < text.size();) {
    if (special_first_byte_[static_cast<uint8_t>(text[pos])]) {
      if (auto match = MatchSpecial(text, pos, parse_special)) {
        RETURN_IF_ERROR(encode_raw(text.substr(raw_begin, pos - raw_begin)));
        ids.push_back(match->second);
        pos += match->first;
        raw_begin = pos;
        continue;
      }
    }
    ++pos;
  }
  RETURN_IF_ERROR(encode_raw(text.substr(raw_begin)));
  if (add_bos && bos_id_ >= 0 && (ids.empty() || ids.front() != bos_id_)) {
    ids.insert(ids.begin(), bos_id_);
  }
  return ids;
}

absl::StatusOr<std::string_view> Tokenizer::TokenToPiece(int32_t id, bool render_special) const {
  RETURN_IF_ERROR(CheckId(id));
  const TokenType type = types_[id];
  const bool hidden =
      type == TokenType::kControl || type == TokenType::kUnknown || type == TokenType::kUnused;
  if (hidden && !render_special) return std::string_view();
  return std::string_view(pieces_[id]);
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              bool render_special) const {
  std::string out;
  for (int32_t id : ids) {
    ASSIGN_OR_RETURN(std::string_view piece, TokenToPiece(id, render_special));
    out.append(piece);
  }
  return out;
}

}  // namespace tritmoe
