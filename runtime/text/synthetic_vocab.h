// A usable DeepSeek-style byte-level BPE vocabulary of any size, for generated test models.
//
// Layout (n_vocab >= kMinSyntheticVocab):
//   0 <｜begin▁of▁sentence｜> (BOS), 1 <｜end▁of▁sentence｜> (EOS), 2 <｜▁pad▁｜> (pad): control,
//       at the ids DeepSeek's tokenizer uses;
//   3..258            the 256 byte tokens, byte b at id 3 + b;
//   259..n_vocab-5    one token per merge, in rank order: first the merges learned by BPE training
//                     on SyntheticTrainingText() (most frequent pair first, as long as the text
//                     has pairs left), then deterministic filler merges joining two earlier
//                     tokens, chosen by `seed`;
//   n_vocab-4 <think>, n_vocab-3 </think>: user-defined (DeepSeek marks them as non-special added
//       tokens, so they show up in decoded text and can be parsed out of it);
//   n_vocab-2 <｜User｜>, n_vocab-1 <｜Assistant｜>: control.
// bos_id 0, eos_id 1, pad_id 2, add_bos true. The learned part does not depend on the seed.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "runtime/text/vocab_data.h"

namespace tritmoe {

inline constexpr int kMinSyntheticVocab = 3 + 256 + 4;

// InvalidArgument for n_vocab outside [kMinSyntheticVocab, 2^22].
absl::StatusOr<VocabData> MakeSyntheticVocab(int n_vocab, uint64_t seed);

}  // namespace tritmoe
