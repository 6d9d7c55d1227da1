// Byte-level BPE tokenizer for DeepSeek-V3/R1 vocabularies (formats.md §6): GGUF
// tokenizer.ggml.model = "gpt2", tokenizer.ggml.pre = "deepseek-v3".
//
// Encoding: (1) special tokens are cut out of the raw text first, leftmost-longest match:
// user-defined tokens (type 4) always, control tokens (type 3, e.g. <｜User｜>) only when
// parse_special is true; they are never split or merged with neighbouring text. (2) Each
// stretch between them goes through the DeepSeek-V3 pre-tokenizer. (3) Each piece is mapped to the
// GPT-2 byte alphabet and merged pair by pair, always the pair of lowest merge rank next (leftmost
// among equal ranks), until no mergeable pair is left. Unused tokens (type 5) are never produced.
//
// Decoding maps normal tokens back from the byte alphabet to raw bytes. Control/unknown/unused
// tokens are rendered (as their text) only when render_special is true; user-defined tokens such
// as R1's <think> and </think> (which DeepSeek marks as non-special added tokens) are always
// rendered. Decoded bytes need not be valid UTF-8: one character may span several tokens; see
// StreamingDetokenizer for emitting text token by token.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/text/pretokenizer.h"
#include "runtime/text/vocab_data.h"

namespace tritmoe {

class Tokenizer {
 public:
  // Validates the vocabulary (model/pre names, array sizes, token types, special ids, merge
  // syntax) and builds the lookup tables. A gpt2 vocabulary holds a token for each of the 256
  // bytes; should one be missing, only inputs containing that byte fail to encode.
  static absl::StatusOr<Tokenizer> Create(VocabData vocab);

  // Token ids for `text` (arbitrary bytes; need not be valid UTF-8). Fails only on a PCRE2
  // matching error or a byte without a byte-level token (see Create).
  // add_bos: prepend the BOS token, unless the result already starts with it (text that begins
  //   with the BOS string under parse_special), so a prompt never gets two BOS tokens.
  //   Pass add_bos() to follow the model's tokenizer.ggml.add_bos_token for plain prompts; chat
  //   prompts come from EncodeChatPrompt (chat_template.h), which places BOS itself.
  // parse_special: match control tokens in the text. Use false for untrusted text.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_bos,
                                              bool parse_special) const;

  // Concatenated bytes of the tokens (see the rendering rules above). Fails on an id outside
  // [0, n_vocab()), naming it.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool render_special = false) const;

  // The bytes one token decodes to ("" for a hidden special token). Fails on an invalid id.
  absl::StatusOr<std::string_view> TokenToPiece(int32_t id, bool render_special = false) const;

  // OK for ids in [0, n_vocab()), else InvalidArgument naming the id and the range.
  absl::Status CheckId(int32_t id) const;

  int32_t n_vocab() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos_id() const { return bos_id_; }  // -1 when the vocabulary has none
  int32_t eos_id() const { return eos_id_; }
  int32_t pad_id() const { return pad_id_; }
  bool add_bos() const { return add_bos_; }  // the model's default for plain prompts

  // Stored text of a token (byte-alphabet form for normal tokens, raw UTF-8 for special ones)
  // and its type. The id must be valid.
  const std::string& token_text(int32_t id) const { return tokens_[id]; }
  TokenType token_type(int32_t id) const { return types_[id]; }

  // The id whose stored text is exactly `text`, if any (e.g. FindToken("<｜User｜>")).
  std::optional<int32_t> FindToken(std::string_view text) const;

  // Merges that were skipped because a part or the result is not in the vocabulary.
  int64_t skipped_merges() const { return skipped_merges_; }

  const PreTokenizer& pre_tokenizer() const { return pre_tokenizer_; }

 private:
  struct MergeResult {
    int32_t rank;
    int32_t token;
  };
  // Byte trie over the texts of special (control, unknown, user-defined) tokens.
  struct TrieNode {
    std::vector<std::pair<uint8_t, int32_t>> children;  // (byte, node index), sorted by byte
    int32_t token = -1;
  };

  explicit Tokenizer(PreTokenizer pre) : pre_tokenizer_(std::move(pre)) {}

  // Length and id of the longest special token starting at text[pos] that parse_special allows.
  std::optional<std::pair<size_t, int32_t>> MatchSpecial(std::string_view text, size_t pos,
                                                         bool parse_special) const;
  // Appends the BPE tokens of one pre-tokenized piece. Fails only if the piece holds a byte whose
  // byte-level token the vocabulary lacks.
  absl::Status EncodePiece(std::string_view piece, std::vector<int32_t>* out) const;

  std::vector<std::string> tokens_;
  std::vector<TokenType> types_;
  std::vector<std::string> pieces_;  // decoded bytes of each token
  absl::flat_hash_map<std::string, int32_t> token_ids_;
  absl::flat_hash_map<uint64_t, MergeResult> merges_;  // key: left << 32 | right
  std::vector<TrieNode> trie_;                         // node 0 is the root
  std::vector<bool> special_first_byte_;               // 256 flags: a special token starts so
  int32_t byte_tokens_[256] = {};  // -1 where the vocabulary lacks the byte's token
  int missing_byte_tokens_ = 0;
  int32_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1;
  bool add_bos_ = true;
  int64_t skipped_merges_ = 0;
  PreTokenizer pre_tokenizer_;
};

}  // namespace tritmoe
