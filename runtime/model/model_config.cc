#include "runtime/model/model_config.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"

namespace tritmoe {
namespace {

constexpr char kArch[] = "deepseek2";

std::string Key(const char* suffix) { return absl::StrCat(kArch, ".", suffix); }

// Reads deepseek2.<suffix> as an integer that must fit an int and be >= 0.
absl::StatusOr<int64_t> GetCount(const gguf::GgufModel& m, const std::string& key) {
  ASSIGN_OR_RETURN(int64_t v, m.GetInt(key));
  if (v < 0 || v > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(
        absl::StrCat(m.path(), ": key '", key, "' = ", v, " is out of range"));
  }
  return v;
}

absl::StatusOr<int64_t> RequiredCount(const gguf::GgufModel& m, const char* suffix) {
  const std::string key = Key(suffix);
  if (m.FindKey(key) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(m.path(), ": missing required key '", key, "'"));
  }
  return GetCount(m, key);
}

absl::StatusOr<int64_t> OptionalCount(const gguf::GgufModel& m, const char* suffix, int64_t dflt) {
  const std::string key = Key(suffix);
  if (m.FindKey(key) == nullptr) return dflt;
  return GetCount(m, key);
}

absl::StatusOr<double> OptionalFloat(const gguf::GgufModel& m, const char* suffix, double dflt) {
  const std::string key = Key(suffix);
  if (m.FindKey(key) == nullptr) return dflt;
  return m.GetFloat(key);
}

absl::Status Inconsistent(const gguf::GgufModel& m, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(m.path(), ": ", what));
}

// ggml's YaRN correction dimension: the rotary dim at which the wavelength spans n_rot_b turns
// of the original context.
double CorrDim(int n_rot, int64_t n_ctx_orig, double n_rot_b, double base) {
  return n_rot * std::log(static_cast<double>(n_ctx_orig) / (n_rot_b * 2.0 * std::numbers::pi)) /
         (2.0 * std::log(base));
}

}  // namespace

double RopeConfig::Theta(int64_t pos, int i) const {
  const double theta_extrap =
      static_cast<double>(pos) * std::pow(freq_base, -2.0 * i / static_cast<double>(n_rot));
  const double theta_interp = freq_scale * theta_extrap;
  if (ext_factor == 0.0) return theta_interp;
  const double y = (i - corr_low) / std::max(0.001, corr_high - corr_low);
  const double ramp = 1.0 - std::clamp(y, 0.0, 1.0);
  const double mix = ramp * ext_factor;
  return theta_interp * (1.0 - mix) + theta_extrap * mix;
}

absl::StatusOr<ModelConfig> ModelConfig::FromGguf(const gguf::GgufModel& m) {
  if (m.FindKey("general.architecture") == nullptr) {
    return Inconsistent(m, "missing required key 'general.architecture'");
  }
  ASSIGN_OR_RETURN(std::string arch, m.GetString("general.architecture"));
  if (arch != kArch) {
    return Inconsistent(m, absl::StrCat("general.architecture is '", arch,
                                        "', expected 'deepseek2' (DeepSeek-V3/R1)"));
  }
  ModelConfig c;
  ASSIGN_OR_RETURN(int64_t block_count, RequiredCount(m, "block_count"));
  // MTP layers, when a converter keeps them, come last and are not part of the forward pass.
  ASSIGN_OR_RETURN(int64_t nextn, OptionalCount(m, "nextn_predict_layers", 0));
  if (nextn >= block_count) {
    return Inconsistent(
        m, absl::StrCat(Key("nextn_predict_layers"), " = ", nextn, " leaves no layers of ",
                        Key("block_count"), " = ", block_count));
  }
  c.n_layer = static_cast<int>(block_count - nextn);
  ASSIGN_OR_RETURN(int64_t n_embd, RequiredCount(m, "embedding_length"));
  c.n_embd = static_cast<int>(n_embd);
  ASSIGN_OR_RETURN(int64_t n_head, RequiredCount(m, "attention.head_count"));
  c.n_head = static_cast<int>(n_head);
  ASSIGN_OR_RETURN(int64_t ctx, RequiredCount(m, "context_length"));
  c.context_length = ctx;
  {
    const std::string key = Key("attention.layer_norm_rms_epsilon");
    if (m.FindKey(key) == nullptr) {
      return Inconsistent(m, absl::StrCat("missing required key '", key, "'"));
    }
    ASSIGN_OR_RETURN(double eps, m.GetFloat(key));
    c.rms_eps = static_cast<float>(eps);
  }
  ASSIGN_OR_RETURN(int64_t kv_lora, RequiredCount(m, "attention.kv_lora_rank"));
  c.kv_lora_rank = static_cast<int>(kv_lora);
  ASSIGN_OR_RETURN(int64_t n_rot, RequiredCount(m, "rope.dimension_count"));
  c.qk_rope = static_cast<int>(n_rot);

  // q path: low-rank (attn_q_a/attn_q_b) when layer 0 has attn_q_a, else a full attn_q.
  if (const gguf::TensorInfo* qa = m.FindTensor("blk.0.attn_q_a.weight")) {
    ASSIGN_OR_RETURN(int64_t q_lora, OptionalCount(m, "attention.q_lora_rank", qa->ne[1]));
    c.q_lora_rank = static_cast<int>(q_lora);
  }

  // Head dims and the attention layout (§4.2): the *_mla keys give the per-head q/k/v dims of
  // split files; legacy files give them in key_length/value_length.
  const bool mla_keys = m.FindKey(Key("attention.key_length_mla")) != nullptr &&
                        m.FindKey(Key("attention.value_length_mla")) != nullptr;
  int64_t qk = 0, v = 0;
  if (mla_keys) {
    ASSIGN_OR_RETURN(qk, RequiredCount(m, "attention.key_length_mla"));
    ASSIGN_OR_RETURN(v, RequiredCount(m, "attention.value_length_mla"));
  } else {
    const int64_t dflt = c.n_head > 0 ? c.n_embd / c.n_head : 0;
    ASSIGN_OR_RETURN(qk, OptionalCount(m, "attention.key_length", dflt));
    ASSIGN_OR_RETURN(v, OptionalCount(m, "attention.value_length", dflt));
  }
  c.qk_nope = static_cast<int>(qk - n_rot);
  c.v_head = static_cast<int>(v);
  const bool split = m.FindTensor("blk.0.attn_k_b.weight") != nullptr &&
                     m.FindTensor("blk.0.attn_v_b.weight") != nullptr;
  const bool legacy = m.FindTensor("blk.0.attn_kv_b.weight") != nullptr;
  if (split && !mla_keys) {
    return Inconsistent(m, absl::StrCat("blk.0 has attn_k_b/attn_v_b but the keys ",
                                        Key("attention.key_length_mla"), "/",
                                        Key("attention.value_length_mla"), " are missing"));
  }
  if (mla_keys && !split) {
    return Inconsistent(
        m, absl::StrCat("the file has ", Key("attention.key_length_mla"),
                        " but blk.0 lacks attn_k_b/attn_v_b",
                        legacy ? " (it has attn_kv_b: keys and tensors disagree)" : ""));
  }
  if (!split && !legacy) {
    return Inconsistent(m, "blk.0 has neither attn_k_b/attn_v_b nor attn_kv_b");
  }
  c.kv_layout = split ? KvProjLayout::kSplit : KvProjLayout::kLegacy;

  // FFN and MoE.
  ASSIGN_OR_RETURN(int64_t lead, OptionalCount(m, "leading_dense_block_count", 0));
  if (lead > c.n_layer) {
    return Inconsistent(m, absl::StrCat(Key("leading_dense_block_count"), " = ", lead,
                                        " exceeds the ", c.n_layer, " layers"));
  }
  c.n_dense_lead = static_cast<int>(lead);
  ASSIGN_OR_RETURN(int64_t n_ff, OptionalCount(m, "feed_forward_length", 0));
  c.n_ff = static_cast<int>(n_ff);
  if (c.n_dense_lead > 0 && c.n_ff == 0) {
    return Inconsistent(m, absl::StrCat("dense layers present but ", Key("feed_forward_length"),
                                        " is missing or 0"));
  }
  if (c.n_dense_lead < c.n_layer) {
    ASSIGN_OR_RETURN(int64_t ne, RequiredCount(m, "expert_count"));
    ASSIGN_OR_RETURN(int64_t nu, RequiredCount(m, "expert_used_count"));
    ASSIGN_OR_RETURN(int64_t nf, RequiredCount(m, "expert_feed_forward_length"));
    ASSIGN_OR_RETURN(int64_t ns, OptionalCount(m, "expert_shared_count", 0));
    c.n_expert = static_cast<int>(ne);
    c.n_expert_used = static_cast<int>(nu);
    c.n_ff_exp = static_cast<int>(nf);
    c.n_expert_shared = static_cast<int>(ns);
    ASSIGN_OR_RETURN(int64_t gating, OptionalCount(m, "expert_gating_func", 0));
    switch (gating) {
      case 0:  // unset: old DeepSeek-V2 files, softmax (as llama.cpp)
      case 1:
        c.gating = GatingFunc::kSoftmax;
        break;
      case 2:
        c.gating = GatingFunc::kSigmoid;
        break;
      case 4:
        c.gating = GatingFunc::kSqrtSoftplus;
        break;
      default:
        return Inconsistent(m, absl::StrCat(Key("expert_gating_func"), " = ", gating,
                                            " is not supported (1 softmax, 2 sigmoid, "
                                            "4 sqrt-softplus)"));
    }
    ASSIGN_OR_RETURN(double scale, OptionalFloat(m, "expert_weights_scale", 0.0));
    c.weights_scale = scale == 0.0 ? 1.0f : static_cast<float>(scale);  // absent => no scaling
    if (m.FindKey(Key("expert_weights_norm")) != nullptr) {
      ASSIGN_OR_RETURN(c.weights_norm, m.GetBool(Key("expert_weights_norm")));
    }
    ASSIGN_OR_RETURN(int64_t n_group, OptionalCount(m, "expert_group_count", 0));
    if (n_group > 1) {
      ASSIGN_OR_RETURN(int64_t used, RequiredCount(m, "expert_group_used_count"));
      c.group_limited = true;
      c.n_group = static_cast<int>(n_group);
      c.n_group_used = static_cast<int>(used);
    }
  }

  // RoPE (§4.5, §4.6): beta_fast/slow and ext/attn factors are llama.cpp built-ins.
  RopeConfig& r = c.rope;
  r.n_rot = c.qk_rope;
  ASSIGN_OR_RETURN(r.freq_base, OptionalFloat(m, "rope.freq_base", 10000.0));
  std::string scaling = "none";
  if (m.FindKey(Key("rope.scaling.type")) != nullptr) {
    ASSIGN_OR_RETURN(scaling, m.GetString(Key("rope.scaling.type")));
  }
  if (scaling == "yarn") {
    r.scaling = RopeScalingType::kYarn;
    ASSIGN_OR_RETURN(double factor, OptionalFloat(m, "rope.scaling.factor", 0.0));
    r.freq_scale = factor > 0.0 ? 1.0 / factor : 1.0;
    ASSIGN_OR_RETURN(r.n_ctx_orig,
                     OptionalCount(m, "rope.scaling.original_context_length", c.context_length));
    ASSIGN_OR_RETURN(r.yarn_log_mul, OptionalFloat(m, "rope.scaling.yarn_log_multiplier", 0.0));
    r.ext_factor = 1.0;
    if (r.n_ctx_orig <= 0) {
      return Inconsistent(m, "YaRN needs a positive original context length");
    }
    const double low = std::floor(CorrDim(r.n_rot, r.n_ctx_orig, r.beta_fast, r.freq_base));
    const double high = std::ceil(CorrDim(r.n_rot, r.n_ctx_orig, r.beta_slow, r.freq_base));
    r.corr_low = std::max(0.0, low);
    r.corr_high = std::min(static_cast<double>(r.n_rot - 1), high);
  } else if (scaling != "none") {
    return absl::UnimplementedError(absl::StrCat(m.path(), ": ", Key("rope.scaling.type"), " '",
                                                 scaling, "' is not supported (none or yarn)"));
  }
  r.mscale = 1.0 + r.yarn_log_mul * std::log(1.0 / r.freq_scale);
  if (c.qk_nope > 0) {
    c.kq_scale = static_cast<float>(r.mscale * r.mscale / std::sqrt(static_cast<double>(qk)));
  }

  // Vocabulary: the rows of token_embd, which output.weight and the tokenizer must match.
  const gguf::TensorInfo* embd = m.FindTensor("token_embd.weight");
  if (embd == nullptr) return Inconsistent(m, "missing tensor token_embd.weight");
  c.n_vocab = embd->ne[1];
  const gguf::TensorInfo* out = m.FindTensor("output.weight");
  c.tied_output = out == nullptr;
  if (out != nullptr && out->ne[1] != c.n_vocab) {
    return Inconsistent(m, absl::StrCat("output.weight has ", out->ne[1],
                                        " rows but token_embd.weight has ", c.n_vocab));
  }
  if (const gguf::KeyValue* tokens = m.FindKey("tokenizer.ggml.tokens")) {
    if (tokens->value.is_array() && static_cast<int64_t>(tokens->value.count) != c.n_vocab) {
      return Inconsistent(m,
                          absl::StrCat("tokenizer.ggml.tokens has ", tokens->value.count,
                                       " entries but token_embd.weight has ", c.n_vocab, " rows"));
    }
  }
  if (m.FindKey(Key("vocab_size")) != nullptr) {
    ASSIGN_OR_RETURN(int64_t vs, GetCount(m, Key("vocab_size")));
    if (vs != c.n_vocab) {
      return Inconsistent(m, absl::StrCat(Key("vocab_size"), " = ", vs,
                                          " but token_embd.weight has ", c.n_vocab, " rows"));
    }
  }
  absl::Status valid = c.Validate();
  if (!valid.ok()) return Inconsistent(m, std::string(valid.message()));
  return c;
}

absl::Status ModelConfig::Validate() const {
  auto bad = [](const std::string& s) { return absl::InvalidArgumentError(s); };
  if (n_layer <= 0) return bad("no layers (block_count must be > 0)");
  if (n_embd <= 0) return bad("embedding_length must be > 0");
  if (n_head <= 0) return bad("attention.head_count must be > 0");
  if (!(rms_eps > 0.0f)) return bad("attention.layer_norm_rms_epsilon must be > 0");
  if (kv_lora_rank <= 0) return bad("attention.kv_lora_rank must be > 0");
  if (qk_rope <= 0 || qk_rope % 2 != 0) {
    return bad(absl::StrCat("rope.dimension_count = ", qk_rope, " must be even and > 0"));
  }
  if (qk_nope <= 0) {
    return bad(absl::StrCat("the per-head key length ", qk_head(),
                            " must exceed rope.dimension_count = ", qk_rope));
  }
  if (v_head <= 0) return bad("the per-head value length must be > 0");
  if (q_lora_rank < 0) return bad("attention.q_lora_rank must be >= 0");
  if (n_dense_lead < 0 || n_dense_lead > n_layer) {
    return bad("leading_dense_block_count out of range");
  }
  if (n_dense_lead > 0 && n_ff <= 0) return bad("feed_forward_length must be > 0");
  if (n_dense_lead < n_layer) {
    if (n_expert <= 0) return bad("expert_count must be > 0 for MoE layers");
    if (n_expert_used <= 0 || n_expert_used > n_expert) {
      return bad(
          absl::StrCat("expert_used_count = ", n_expert_used, " must be in [1, ", n_expert, "]"));
    }
    if (n_ff_exp <= 0) return bad("expert_feed_forward_length must be > 0");
    if (n_expert_shared < 0) return bad("expert_shared_count must be >= 0");
    if (group_limited) {
      if (n_group <= 1 || n_expert % n_group != 0 || n_expert / n_group < 2) {
        return bad(absl::StrCat("expert_count ", n_expert, " does not split into ", n_group,
                                " groups of at least 2 experts"));
      }
      if (n_group_used <= 0 || n_group_used > n_group) {
        return bad(absl::StrCat("expert_group_used_count = ", n_group_used, " must be in [1, ",
                                n_group, "]"));
      }
      if (static_cast<int64_t>(n_group_used) * (n_expert / n_group) < n_expert_used) {
        return bad(absl::StrCat("expert_group_used_count = ", n_group_used, " groups of ",
                                n_expert / n_group, " cannot supply ", n_expert_used, " experts"));
      }
    }
    if (!(weights_scale > 0.0f)) return bad("expert_weights_scale must be > 0");
  }
  if (rope.n_rot != qk_rope) return bad("rope.n_rot must equal qk_rope");
  if (!(rope.freq_base > 0.0)) return bad("rope.freq_base must be > 0");
  if (!(rope.freq_scale > 0.0)) return bad("rope.scaling.factor must be > 0");
  if (!(kq_scale > 0.0f)) return bad("attention scale must be > 0");
  if (context_length <= 0) return bad("context_length must be > 0");
  if (n_vocab <= 0) return bad("the vocabulary is empty");
  return absl::OkStatus();
}

std::string ModelConfig::DebugString() const {
  std::string s = absl::StrFormat(
      "layers %d (dense %d), embd %d, heads %d, q_lora %d, kv_lora %d, qk %d+%d, v %d, "
      "layout %s\n",
      n_layer, n_dense_lead, n_embd, n_head, q_lora_rank, kv_lora_rank, qk_nope, qk_rope, v_head,
      kv_layout == KvProjLayout::kSplit ? "split (attn_k_b/attn_v_b)" : "legacy (attn_kv_b)");
  absl::StrAppendFormat(
      &s,
      "ffn %d; experts %d used %d shared %d ffn %d; gating %d, norm %d, "
      "scale %g; groups %s\n",
      n_ff, n_expert, n_expert_used, n_expert_shared, n_ff_exp, static_cast<int>(gating),
      weights_norm ? 1 : 0, weights_scale,
      group_limited ? absl::StrFormat("%d keep %d", n_group, n_group_used) : std::string("off"));
  absl::StrAppendFormat(&s,
                        "rope %d dims, base %g, %s (scale %g, orig ctx %d, corr [%g, %g], "
                        "mscale %.7f); kq_scale %.8f; ctx %d; vocab %d%s",
                        rope.n_rot, rope.freq_base,
                        rope.scaling == RopeScalingType::kYarn ? "yarn" : "none", rope.freq_scale,
                        rope.n_ctx_orig, rope.corr_low, rope.corr_high, rope.mscale, kq_scale,
                        context_length, n_vocab, tied_output ? " (tied output)" : "");
  return s;
}

}  // namespace tritmoe
