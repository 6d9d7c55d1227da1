#include "runtime/model/vocab_loader.h"

#include "base/status_macros.h"

namespace tritmoe {
namespace {

// An optional integer key as a token id; -1 when absent.
absl::StatusOr<int32_t> OptionalId(const gguf::GgufModel& file, const char* key) {
  if (file.FindKey(key) == nullptr) return -1;
  ASSIGN_OR_RETURN(int64_t v, file.GetInt(key));
  return static_cast<int32_t>(v);
}

}  // namespace

absl::StatusOr<VocabData> ReadVocabData(const gguf::GgufModel& file) {
  VocabData v;
  ASSIGN_OR_RETURN(v.model, file.GetString("tokenizer.ggml.model"));
  if (file.FindKey("tokenizer.ggml.pre") != nullptr) {
    ASSIGN_OR_RETURN(v.pre, file.GetString("tokenizer.ggml.pre"));
  }
  ASSIGN_OR_RETURN(v.tokens, file.GetStringArray("tokenizer.ggml.tokens"));
  if (file.FindKey("tokenizer.ggml.token_type") != nullptr) {
    ASSIGN_OR_RETURN(std::vector<int64_t> types, file.GetIntArray("tokenizer.ggml.token_type"));
    v.token_types.assign(types.begin(), types.end());
  }
  if (file.FindKey("tokenizer.ggml.merges") != nullptr) {
    ASSIGN_OR_RETURN(v.merges, file.GetStringArray("tokenizer.ggml.merges"));
  }
  ASSIGN_OR_RETURN(v.bos_id, OptionalId(file, "tokenizer.ggml.bos_token_id"));
  ASSIGN_OR_RETURN(v.eos_id, OptionalId(file, "tokenizer.ggml.eos_token_id"));
  ASSIGN_OR_RETURN(v.pad_id, OptionalId(file, "tokenizer.ggml.padding_token_id"));
  if (file.FindKey("tokenizer.ggml.add_bos_token") != nullptr) {
    ASSIGN_OR_RETURN(v.add_bos, file.GetBool("tokenizer.ggml.add_bos_token"));
  }
  if (file.FindKey("tokenizer.ggml.add_eos_token") != nullptr) {
    ASSIGN_OR_RETURN(v.add_eos, file.GetBool("tokenizer.ggml.add_eos_token"));
  }
  return v;
}

absl::StatusOr<Tokenizer> LoadTokenizer(const gguf::GgufModel& file) {
  ASSIGN_OR_RETURN(VocabData v, ReadVocabData(file));
  return Tokenizer::Create(std::move(v));
}

}  // namespace tritmoe
