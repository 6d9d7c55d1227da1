// The MoE router of DeepSeek-V3/R1 (formats.md §4.4): gating scores, a per-expert bias used for
// selection only, optional group-limited selection, top-k, then weight normalization and scaling.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "runtime/model/model_config.h"

namespace tritmoe {

// llama.cpp clamps the sum of the chosen weights from below before dividing by it.
inline constexpr float kMoeWeightSumClamp = 6.103515625e-5f;

struct RouterConfig {
  int n_expert = 0;
  int n_used = 0;  // k
  GatingFunc gating = GatingFunc::kSigmoid;
  bool group_limited = false;
  int n_group = 0;       // groups of n_expert / n_group consecutive experts
  int n_group_used = 0;  // groups kept
  bool weights_norm = false;
  float weights_scale = 1.0f;

  static RouterConfig FromModel(const ModelConfig& config);
  absl::Status Validate() const;
};

// The choice for n_tokens tokens: slot j of token t is experts[t * k + j] with weight
// weights[t * k + j]; slots are in selection order (highest biased score first).
struct Routing {
  int64_t n_tokens = 0;
  int k = 0;
  std::vector<int32_t> experts;
  std::vector<float> weights;
};

// logits: [n_tokens][n_expert] router outputs; bias: [n_expert] or nullptr.
//  p = gating(logits)             (sigmoid, softmax over experts, or sqrt(softplus))
//  s = p + bias                   (selection only)
//  group-limited: group score = sum of the two largest s in the group; experts outside the
//                 n_group_used best groups are excluded
//  slots = the k largest s        (ties: lower expert / group index first)
//  w = p[slots]; w /= max(sum w, kMoeWeightSumClamp) if weights_norm; w *= weights_scale
void Route(const RouterConfig& config, const float* logits, const float* bias, int64_t n_tokens,
           Routing* out);

}  // namespace tritmoe
