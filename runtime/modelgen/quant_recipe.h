// Which element type each tensor of a generated model gets. Recipes:
//   f16           every matrix F16
//   pure-<type>   every matrix <type> (e.g. pure-q8_0, pure-iq1_s)
//   ud-1.58       the dynamic 1.58-bit recipe (docs/FORMATS.md, after Unsloth's DeepSeek-R1-UD-IQ1_S):
//                 routed gate/up experts IQ1_S, routed down experts IQ2_XXS in the first MoE layers
//                 and IQ1_S after, attention Q4_K, dense FFN / shared experts / lm_head Q6_K,
//                 token embedding Q4_K
//   ud-1.58-tq1   the same with TQ1_0 routed experts (ternary, no importance matrix)
// In every recipe norms, the router and exp_probs_b stay F32. A matrix whose row length is not a
// multiple of the chosen type's block falls back to Q8_0 (32-blocks), then F16, as llama-quantize
// does for attn_k_b.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "experts/quant_type.h"

namespace tritmoe {

class QuantRecipe {
 public:
  static absl::StatusOr<QuantRecipe> Parse(const std::string& name);

  // The type of tensor `name` (GGUF naming) with row length ne0 in layer `layer` (-1 for global
  // tensors); first_moe_layer is the index of the first MoE layer.
  GgmlType TypeFor(const std::string& name, int64_t ne0, int layer, int first_moe_layer) const;

  const std::string& name() const { return name_; }
  // The llama_ftype recorded as general.file_type.
  uint32_t file_type() const { return file_type_; }

  // How many of the first MoE layers keep their down projections at IQ2_XXS in ud-* recipes.
  static constexpr int kHighPrecisionDownLayers = 3;

 private:
  enum class Kind { kF16, kPure, kDynamic };
  Kind kind_ = Kind::kF16;
  GgmlType pure_type_ = GgmlType::kF16;
  GgmlType expert_type_ = GgmlType::kIQ1_S;
  std::string name_;
  uint32_t file_type_ = 1;
};

}  // namespace tritmoe
