// Token embedding on the GPU: x[t] = decoded row tokens[t] of the embedding table, for the types
// gen-model and published DeepSeek GGUFs use for token_embd (F32, F16, BF16, Q8_0, Q4_K, Q6_K).
// Decoding repeats experts/dequantize.cc's float operations one by one, so the rows are bit-equal
// to the CPU's EmbedTokens (runtime/model/embedding.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tritmoe::gpu {

// Whether EmbedTokens decodes rows of this ggml type.
bool EmbeddingSupports(uint32_t type_id);

struct EmbedParams {
  uint32_t type_id = 0;
  const uint8_t* table = nullptr;  // device [n_vocab][row_bytes], GGUF rows
  int64_t row_bytes = 0;
  int cols = 0;                     // elements per row
  const int32_t* tokens = nullptr;  // device [n_tokens], each in [0, n_vocab) (checked by callers)
  int n_tokens = 0;
  float* x = nullptr;  // device [n_tokens][cols]
};
cudaError_t LaunchEmbed(const EmbedParams& p, cudaStream_t stream);

}  // namespace tritmoe::gpu
