// Multi-head latent attention on the GPU, absorbed form (twin: runtime/model/attention.cc with
// AttentionForm::kAbsorbed), over a latent KV cache in device memory.
//
// Per layer and step (T new tokens, H heads, R = kv_lora, L = R + n_rot cached values per token):
//   1. LaunchLatentWrite: latent = RMSNorm(kv[t][0, R)) * kv_a_norm, k_pe = kv[t][R, L) (already
//      roped) -> stored (f32 / f16 / q8_0 / q4_0, as runtime/model/kv_cache.cc) at the token's
//      position of its sequence's cache.
//   2. (outside) q_abs[t][h] = K_h^T q_nope[t][h] -> qa[t][h][0, R); rope(q_pe) -> qa[t][h][R, L).
//   3. LaunchMlaScores: scores[t][h][j] = qa[t][h] . cache_row(t, j) for keys j <= pos(t).
//   4. LaunchMlaSoftmax: p = softmax(kq_scale * scores) over j <= pos(t) (the causal mask).
//   5. LaunchMlaWeightedSum: o_lat[t][h][c] = sum_j p[t][h][j] * cache_row(t, j)[c], c < R.
//   6. (outside) o[t][h] = V_h o_lat[t][h], then attn_output.
// Steps 3-5 read every cached row back through the cache type, as the CPU does.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tritmoe::gpu {

// Where step row t's sequence keeps its cache, and the row's position. Layer il of the cache is
// at cache + il * layer_stride; position j at + j * row_bytes.
struct AttnRow {
  const uint8_t* cache = nullptr;
  int64_t layer_stride = 0;
  int32_t pos = 0;
  int32_t unused = 0;
};

// Cache storage types (ggml ids): F32 0, F16 1, Q4_0 2, Q8_0 8.
bool LatentCacheSupports(uint32_t type_id);

struct LatentWriteParams {
  const float* kv = nullptr;  // [T][kv_stride]: latent (R) then roped k_pe (n_rot)
  int64_t kv_stride = 0;
  const AttnRow* rows = nullptr;  // device [T]
  int layer = 0;
  int n_tokens = 0;
  int R = 0, n_rot = 0;
  int padded = 0;  // stored elements per row (R + n_rot rounded up to the type's block)
  int64_t row_bytes = 0;
  uint32_t type_id = 1;
  const float* gain = nullptr;  // kv_a_norm [R]
  float eps = 0.0f;
};
cudaError_t LaunchLatentWrite(const LatentWriteParams& p, cudaStream_t stream);

struct MlaParams {
  const float* qa = nullptr;      // [T][H][L]
  const AttnRow* rows = nullptr;  // device [T]
  int layer = 0;
  int n_tokens = 0, n_heads = 0;
  int R = 0, L = 0;
  int64_t row_bytes = 0;
  uint32_t type_id = 1;
  float* scores = nullptr;  // [T][H][max_keys]
  int max_keys = 0;         // >= pos(t) + 1 for every row
  float kq_scale = 0.0f;
  float* o_lat = nullptr;  // [T][H][R]
};
cudaError_t LaunchMlaScores(const MlaParams& p, cudaStream_t stream);
cudaError_t LaunchMlaSoftmax(const MlaParams& p, cudaStream_t stream);
cudaError_t LaunchMlaWeightedSum(const MlaParams& p, cudaStream_t stream);

// Pairs for running a per-head weight stack as "experts" (quant_gemv.h / float_gemv.h): pair
// p = h * T + t of head h reads and writes row t * H + h. offsets [H + 1], rows [H * T].
cudaError_t LaunchHeadPairs(int n_tokens, int n_heads, int32_t* offsets, int32_t* rows,
                            cudaStream_t stream);

}  // namespace tritmoe::gpu
