// Named shapes of the deepseek2 architecture for generated models: `tiny` (unit tests, runs in
// milliseconds), `small` (CPU benchmarks, a few hundred MB at ud-1.58) and `v3` (DeepSeek-V3/R1's
// real shapes, 671B parameters at 61 layers; cut depth with n_layers).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace tritmoe {

enum class AttentionLayout {
  kMla,     // attn_k_b + attn_v_b (llama.cpp converters since 2025-04), absorbed decode
  kLegacy,  // attn_kv_b (e.g. the January-2025 R1 quants)
};

struct ModelShape {
  std::string name;
  int n_layers = 0;
  int n_leading_dense = 0;  // first layers with a dense FFN
  int n_embd = 0;
  int n_ff = 0;             // dense FFN width
  int n_ff_exp = 0;         // routed / shared expert FFN width
  int n_expert = 0;
  int n_expert_used = 0;
  int n_expert_shared = 0;
  int n_group = 0;          // 0: no group-limited routing keys are written
  int n_group_used = 0;
  int n_head = 0;
  int q_lora_rank = 0;
  int kv_lora_rank = 0;
  int qk_nope = 0;
  int qk_rope = 0;
  int v_head = 0;
  int n_vocab = 0;
  int context_length = 0;
  AttentionLayout layout = AttentionLayout::kMla;

  // Checks the invariants the architecture needs (e.g. used <= experts, groups divide experts).
  absl::Status Validate() const;
  int64_t ParameterCount() const;
};

// "tiny", "small" or "v3". n_layers > 0 overrides the depth (keeping the dense-layer count at
// min(preset, n_layers - 1) so that at least one MoE layer remains when n_layers > 1).
absl::StatusOr<ModelShape> GetModelShape(const std::string& name, int n_layers = 0);

}  // namespace tritmoe
