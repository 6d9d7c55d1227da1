// Builds the tokenizer of a model from its GGUF `tokenizer.ggml.*` keys.
#pragma once

#include "absl/status/statusor.h"
#include "runtime/gguf/gguf.h"
#include "runtime/text/tokenizer.h"
#include "runtime/text/vocab_data.h"

namespace tritmoe {

// The vocabulary as stored in the file (tokens, types, merges, special ids, add_bos). Errors name
// the missing or mistyped key.
absl::StatusOr<VocabData> ReadVocabData(const gguf::GgufModel& file);

// ReadVocabData + Tokenizer::Create.
absl::StatusOr<Tokenizer> LoadTokenizer(const gguf::GgufModel& file);

}  // namespace tritmoe
