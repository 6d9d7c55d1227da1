// MoE routing on the GPU (twin: runtime/model/router.h Route, and GroupByExpert of
// runtime/model/expert_exchange.h): top-k selection per token, then the (token, slot) pairs
// grouped by expert as the CSR the grouped GEMVs take.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tritmoe::gpu {

// Gating functions (runtime/model/model_config.h GatingFunc values).
inline constexpr int kGatingSoftmax = 1;
inline constexpr int kGatingSigmoid = 2;
inline constexpr int kGatingSqrtSoftplus = 4;

// Largest expert count the routing kernels take (the CSR scan runs in one CTA).
inline constexpr int kMaxRoutedExperts = 1024;

// Per token t: p = gating(logits[t]); s = p + bias (selection only); with group_limited, experts
// outside the n_group_used groups with the highest (best + second best s) are excluded; slots =
// the k largest s (ties to the lower index); w = p[slots], normalized (sum clamped below at
// 6.103515625e-5) and scaled.
struct RouteParams {
  const float* logits = nullptr;  // [n_tokens][n_expert]
  const float* bias = nullptr;    // [n_expert] or nullptr
  int n_tokens = 0, n_expert = 0, k = 0;
  int gating = kGatingSigmoid;
  bool group_limited = false;
  int n_group = 0, n_group_used = 0;
  bool weights_norm = false;
  float weights_scale = 1.0f;
  int32_t* experts = nullptr;  // [n_tokens][k], selection order
  float* weights = nullptr;    // [n_tokens][k]
};
cudaError_t LaunchRoute(const RouteParams& p, cudaStream_t stream);

// Groups the n_tokens * k choices by expert: offsets [n_expert + 1] (pairs of expert e are
// [offsets[e], offsets[e+1])), pair_token [n_pairs] (the token of each pair: the activation row
// of the gate/up GEMV) and slot_pair [n_tokens * k] (the pair of choice t * k + j: the combine's
// row). The order of pairs within an expert is unspecified (each pair is computed on its own, so
// results do not depend on it).
struct GroupParams {
  const int32_t* experts = nullptr;  // [n_tokens * k]
  int n_tokens = 0, k = 0, n_expert = 0;
  int32_t* offsets = nullptr;
  int32_t* pair_token = nullptr;
  int32_t* slot_pair = nullptr;
};
cudaError_t LaunchGroupByExpert(const GroupParams& p, cudaStream_t stream);

// LaunchRoute then LaunchGroupByExpert in one launch (one CTA: saves a launch in small decode
// steps), the same outputs; gp.experts must be rp.experts. Only where RouteAndGroupFits(rp)
// (a warp per token: n_tokens <= 32, and their scores in 48 KB of shared memory: 21 tokens
// of 256 experts).
bool RouteAndGroupFits(const RouteParams& rp);
cudaError_t LaunchRouteAndGroup(const RouteParams& rp, const GroupParams& gp, cudaStream_t stream);

}  // namespace tritmoe::gpu
