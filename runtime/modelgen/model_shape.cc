#include "runtime/modelgen/model_shape.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tritmoe {

absl::Status ModelShape::Validate() const {
  auto fail = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("model shape '", name, "': ", what));
  };
  if (n_layers < 1) return fail("needs at least one layer");
  if (n_leading_dense < 0 || n_leading_dense > n_layers) return fail("bad dense-layer count");
  if (n_expert < 1 || n_expert_used < 1 || n_expert_used > n_expert)
    return fail("expert_used_count must be in 1..expert_count");
  if (n_group > 0) {
    if (n_expert % n_group != 0) return fail("expert groups must divide the experts");
    if (n_group_used < 1 || n_group_used > n_group) return fail("bad expert_group_used_count");
    if (n_group_used * (n_expert / n_group) < n_expert_used)
      return fail("the kept groups hold fewer experts than expert_used_count");
  }
  if (qk_rope % 2 != 0) return fail("rope dimension must be even");
  if (n_embd < 1 || n_head < 1 || kv_lora_rank < 1 || q_lora_rank < 1 || n_vocab < 263)
    return fail("all widths must be positive (vocabulary >= 263, the synthetic tokenizer's minimum)");
  return absl::OkStatus();
}

int64_t ModelShape::ParameterCount() const {
  const int64_t e = n_embd, qk = qk_nope + qk_rope;
  int64_t attn = e * q_lora_rank + q_lora_rank + int64_t{q_lora_rank} * n_head * qk +
                 e * (kv_lora_rank + qk_rope) + kv_lora_rank +
                 int64_t{kv_lora_rank} * n_head * (qk_nope + v_head) + int64_t{n_head} * v_head * e +
                 2 * e;
  int64_t dense = 3 * e * n_ff;
  int64_t moe = e * n_expert + n_expert + 3 * e * n_ff_exp * (n_expert + n_expert_shared);
  return int64_t{n_layers} * attn + int64_t{n_leading_dense} * dense +
         int64_t{n_layers - n_leading_dense} * moe + 2 * e * n_vocab + e;
}

absl::StatusOr<ModelShape> GetModelShape(const std::string& name, int n_layers) {
  ModelShape s;
  s.name = name;
  if (name == "tiny") {
    // Every matrix width a multiple of 256 where the real model has one, so that every quant
    // type of the real recipe applies; qk_nope stays below 256 as in the real model (attn_k_b).
    s.n_layers = 3, s.n_leading_dense = 1, s.n_embd = 256, s.n_ff = 512, s.n_ff_exp = 256;
    s.n_expert = 16, s.n_expert_used = 4, s.n_expert_shared = 1, s.n_group = 4,
    s.n_group_used = 2;
    s.n_head = 4, s.q_lora_rank = 256, s.kv_lora_rank = 256, s.qk_nope = 32, s.qk_rope = 32,
    s.v_head = 64;
    s.n_vocab = 1024, s.context_length = 4096;
  } else if (name == "small") {
    s.n_layers = 6, s.n_leading_dense = 1, s.n_embd = 2048, s.n_ff = 5632, s.n_ff_exp = 512;
    s.n_expert = 64, s.n_expert_used = 6, s.n_expert_shared = 1, s.n_group = 8,
    s.n_group_used = 4;
    s.n_head = 16, s.q_lora_rank = 512, s.kv_lora_rank = 256, s.qk_nope = 64, s.qk_rope = 32,
    s.v_head = 64;
    s.n_vocab = 32000, s.context_length = 16384;
  } else if (name == "v3") {
    s.n_layers = 61, s.n_leading_dense = 3, s.n_embd = 7168, s.n_ff = 18432, s.n_ff_exp = 2048;
    s.n_expert = 256, s.n_expert_used = 8, s.n_expert_shared = 1, s.n_group = 8,
    s.n_group_used = 4;
    s.n_head = 128, s.q_lora_rank = 1536, s.kv_lora_rank = 512, s.qk_nope = 128, s.qk_rope = 64,
    s.v_head = 128;
    s.n_vocab = 129280, s.context_length = 163840;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown model config '", name, "'; known: tiny, small, v3"));
  }
  if (n_layers > 0) {
    s.n_layers = n_layers;
    s.n_leading_dense = std::min(s.n_leading_dense, std::max(0, n_layers - 1));
  }
  if (absl::Status st = s.Validate(); !st.ok()) return st;
  return s;
}

}  // namespace tritmoe
