// A small hand-made byte-level BPE vocabulary shared by the tokenizer tests.
//   ids 0..255   the byte tokens, in byte order (id b = the GPT-2 character of byte b)
//   256..264     merge results, ranks 0..8 in this order:
//                "l l"->ll  "h e"->he  "he ll"->hell  "hell o"->hello  "Ġ w"->Ġw  "o r"->or
//                "Ġw or"->Ġwor  "b c"->bc  "a b"->ab
//   265 "a a"->aa (rank 9)
//   266 BOS <｜begin▁of▁sentence｜> (control)   267 EOS <｜end▁of▁sentence｜> (control)
//   268 <think> (user-defined)                   269 <｜User｜> (control)
//   270 [PAD270] (unused)
#pragma once

#include <string>

#include "runtime/text/byte_unicode.h"
#include "runtime/text/vocab_data.h"

namespace tritmoe::testing {

inline constexpr int kLl = 256, kHe = 257, kHell = 258, kHello = 259, kGw = 260, kOr = 261,
                     kGwor = 262, kBc = 263, kAb = 264, kAa = 265, kBos = 266, kEos = 267,
                     kThink = 268, kUser = 269, kPad = 270;

inline VocabData MakeTestVocab() {
  VocabData v;
  for (int b = 0; b < 256; ++b) {
    v.tokens.push_back(BytesToVisible(std::string(1, static_cast<char>(b))));
    v.token_types.push_back(1);
  }
  const char* merges[][2] = {{"l", "l"}, {"h", "e"},   {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"},
                             {"o", "r"}, {"Ġw", "or"}, {"b", "c"},   {"a", "b"},    {"a", "a"}};
  for (const auto& m : merges) {
    v.merges.push_back(std::string(m[0]) + " " + m[1]);
    v.tokens.push_back(std::string(m[0]) + m[1]);
    v.token_types.push_back(1);
  }
  const std::pair<const char*, int> specials[] = {{"<｜begin▁of▁sentence｜>", 3},
                                                  {"<｜end▁of▁sentence｜>", 3},
                                                  {"<think>", 4},
                                                  {"<｜User｜>", 3},
                                                  {"[PAD270]", 5}};
  for (const auto& [text, type] : specials) {
    v.tokens.push_back(text);
    v.token_types.push_back(type);
  }
  v.bos_id = kBos;
  v.eos_id = kEos;
  return v;
}

}  // namespace tritmoe::testing
