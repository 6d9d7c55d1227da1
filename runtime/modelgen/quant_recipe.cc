#include "runtime/modelgen/quant_recipe.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace tritmoe {
namespace {

bool EndsWith(const std::string& s, const char* suffix) {
  return absl::EndsWith(s, suffix);
}

// llama_ftype of a "mostly <type>" file.
uint32_t FileTypeOf(GgmlType t) {
  switch (t) {
    case GgmlType::kF32: return 0;
    case GgmlType::kF16: return 1;
    case GgmlType::kQ4_0: return 2;
    case GgmlType::kQ8_0: return 7;
    case GgmlType::kQ2_K: return 10;
    case GgmlType::kQ4_K: return 15;
    case GgmlType::kQ6_K: return 18;
    case GgmlType::kIQ2_XXS: return 19;
    case GgmlType::kIQ1_S: return 24;
    case GgmlType::kIQ1_M: return 31;
    case GgmlType::kBF16: return 32;
    case GgmlType::kTQ1_0: return 36;
    case GgmlType::kTQ2_0: return 37;
    default: return 0;
  }
}

GgmlType WithFallback(GgmlType t, int64_t ne0) {
  if (ne0 % GetTypeTraits(t).block_elems == 0) return t;
  if (ne0 % 32 == 0) return GgmlType::kQ8_0;
  return GgmlType::kF16;
}

}  // namespace

absl::StatusOr<QuantRecipe> QuantRecipe::Parse(const std::string& name) {
  QuantRecipe r;
  r.name_ = name;
  if (name == "f16") {
    r.kind_ = Kind::kF16;
    r.file_type_ = 1;
  } else if (absl::StartsWith(name, "pure-")) {
    auto t = ParseGgmlType(name.substr(5));
    if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat("recipe '", name, "': ",
                                                                std::string(t.status().message())));
    if (*t == GgmlType::kQ8_K)
      return absl::InvalidArgumentError("recipe 'pure-q8_k': Q8_K is an activation-only format");
    r.kind_ = Kind::kPure;
    r.pure_type_ = *t;
    r.file_type_ = FileTypeOf(*t);
  } else if (name == "ud-1.58" || name == "ud-1.58-tq1") {
    r.kind_ = Kind::kDynamic;
    r.expert_type_ = name == "ud-1.58" ? GgmlType::kIQ1_S : GgmlType::kTQ1_0;
    r.file_type_ = FileTypeOf(r.expert_type_);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown recipe '", name, "'; known: f16, pure-<type> (e.g. pure-q8_0), ud-1.58, ud-1.58-tq1"));
  }
  return r;
}

GgmlType QuantRecipe::TypeFor(const std::string& name, int64_t ne0, int layer,
                              int first_moe_layer) const {
  // Never quantized, in any recipe: norms, router, selection bias.
  if (EndsWith(name, "_norm.weight") || EndsWith(name, "ffn_gate_inp.weight") ||
      EndsWith(name, ".bias")) {
    return GgmlType::kF32;
  }
  switch (kind_) {
    case Kind::kF16:
      return GgmlType::kF16;
    case Kind::kPure:
      return WithFallback(pure_type_, ne0);
    case Kind::kDynamic:
      break;
  }
  const bool routed = absl::StrContains(name, "_exps.");
  if (routed) {
    const bool early_down = absl::StrContains(name, "ffn_down_exps") && layer >= 0 &&
                            layer < first_moe_layer + kHighPrecisionDownLayers;
    if (early_down) {
      return WithFallback(expert_type_ == GgmlType::kIQ1_S ? GgmlType::kIQ2_XXS : GgmlType::kTQ2_0,
                          ne0);
    }
    return WithFallback(expert_type_, ne0);
  }
  if (name == "token_embd.weight") return WithFallback(GgmlType::kQ4_K, ne0);
  if (name == "output.weight") return WithFallback(GgmlType::kQ6_K, ne0);
  if (absl::StrContains(name, ".attn_")) return WithFallback(GgmlType::kQ4_K, ne0);
  // Dense FFN layers and shared experts.
  return WithFallback(GgmlType::kQ6_K, ne0);
}

}  // namespace tritmoe
