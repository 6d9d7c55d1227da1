#include "runtime/model/step_input_check.h"

#include "absl/strings/str_cat.h"

namespace tritmoe {

absl::Status CheckSequenceTokens(size_t index, const KvCacheConfig& cache,
                                 std::span<const int32_t> tokens, const ModelConfig& config) {
  if (cache.n_layer != config.n_layer || cache.kv_lora_rank != config.kv_lora_rank ||
      cache.n_rot != config.qk_rope) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence ", index, ": the KV cache was not made for this model"));
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("sequence ", index, " has no new tokens"));
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= config.n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", index, ": token id ", tokens[i],
                                                     " at index ", i, " is out of range [0, ",
                                                     config.n_vocab, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace tritmoe
