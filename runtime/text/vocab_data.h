// The tokenizer description a GGUF file carries (formats.md §6.1), as plain vectors, so that the
// tokenizer does not depend on the GGUF reader: the model loader fills a VocabData from the file's
// tokenizer.ggml.* keys, and the synthetic-model generator writes one into a new file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tritmoe {

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,  // a BPE token, stored in the GPT-2 byte-to-unicode alphabet
  kUnknown = 2,
  kControl = 3,      // BOS/EOS/turn markers: matched only with parse_special, hidden when decoding
  kUserDefined = 4,  // added tokens stored as raw UTF-8; always matched, always rendered
  kUnused = 5,       // filler ids ([PAD<id>]); never produced by Encode, decode to nothing
  kByte = 6,         // "<0xXX>" byte tokens (SentencePiece style); decode to that byte
};

struct VocabData {
  std::string model = "gpt2";        // tokenizer.ggml.model; only byte-level BPE is supported
  std::string pre = "deepseek-v3";   // tokenizer.ggml.pre
  std::vector<std::string> tokens;   // tokenizer.ggml.tokens; index = token id
  std::vector<int32_t> token_types;  // tokenizer.ggml.token_type; empty means all kNormal
  std::vector<std::string> merges;   // tokenizer.ggml.merges, "left right"; rank = index
  int32_t bos_id = -1;               // -1: absent
  int32_t eos_id = -1;
  int32_t pad_id = -1;
  bool add_bos = true;   // tokenizer.ggml.add_bos_token
  bool add_eos = false;  // tokenizer.ggml.add_eos_token
};

}  // namespace tritmoe
