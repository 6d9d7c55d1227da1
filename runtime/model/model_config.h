// The hyperparameters of a DeepSeek-V3/R1 ("deepseek2") model, read from GGUF metadata with
// llama.cpp's loader defaults (formats.md §4.1, §4.5, §4.6) and validated when built.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/gguf/gguf.h"

namespace tritmoe {

// Which tensors hold the per-head kv up-projection (formats.md §4.2).
enum class KvProjLayout {
  // attn_k_b ne [qk_nope, kv_lora, H] + attn_v_b ne [kv_lora, v_head, H], with the *_mla keys
  // (llama.cpp converters since 2025-04).
  kSplit,
  // attn_kv_b ne [kv_lora, H * (qk_nope + v_head)], head-major (e.g. the Jan-2025 R1 quants).
  kLegacy,
};

// GGUF expert_gating_func values (0 = unset, treated as softmax like llama.cpp).
enum class GatingFunc {
  kSoftmax = 1,
  kSigmoid = 2,
  kSqrtSoftplus = 4,
};

enum class RopeScalingType { kNone, kYarn };

// RoPE on the last n_rot dims of each q head and on the shared k_pe ("NORM" style: adjacent pairs
// (2i, 2i+1) rotate together). With YaRN the angle of pair i mixes the interpolated and the
// original frequency by a ramp over [corr_low, corr_high]; cos/sin keep magnitude 1 (§4.5:
// llama.cpp's attn_factor cancels the kernel's factor exactly).
struct RopeConfig {
  int n_rot = 0;
  double freq_base = 10000.0;
  RopeScalingType scaling = RopeScalingType::kNone;
  double freq_scale = 1.0;  // 1 / rope.scaling.factor (1 without scaling)
  int64_t n_ctx_orig = 0;   // rope.scaling.original_context_length (else context_length)
  double ext_factor = 0.0;  // 1 with YaRN, 0 otherwise (llama.cpp default, not in the file)
  double beta_fast = 32.0;  // built-in; the file's yarn_beta_* keys are ignored (§4.6)
  double beta_slow = 1.0;
  double yarn_log_mul = 0.0;  // rope.scaling.yarn_log_multiplier as stored (0.1 for R1)
  double corr_low = 0.0;      // YaRN ramp bounds over the pair index
  double corr_high = 0.0;
  // Attention-scale correction: 1 + yarn_log_mul * ln(1 / freq_scale) (1.3688879 for R1).
  double mscale = 1.0;

  // The rotation angle of pair i (0 <= i < n_rot / 2) at position pos.
  double Theta(int64_t pos, int i) const;
};

struct ModelConfig {
  // Layers run by the forward pass (block_count minus any trailing MTP layers).
  int n_layer = 0;
  int n_embd = 0;
  int n_head = 0;
  float rms_eps = 1e-6f;
  int q_lora_rank = 0;  // 0: no q low-rank path, attn_q.weight instead
  int kv_lora_rank = 0;
  int qk_nope = 0;  // per-head q/k dims without rope
  int qk_rope = 0;  // = rope.n_rot
  int v_head = 0;
  KvProjLayout kv_layout = KvProjLayout::kSplit;
  // Softmax scale of q.k: mscale^2 / sqrt(qk_nope + qk_rope) (0.13523378 for R1).
  float kq_scale = 0.0f;
  RopeConfig rope;

  int n_dense_lead = 0;  // layers [0, n_dense_lead) have a dense FFN, the rest MoE
  int n_ff = 0;          // dense FFN width
  int n_expert = 0;
  int n_expert_used = 0;
  int n_expert_shared = 0;
  int n_ff_exp = 0;  // routed expert FFN width
  // Group-limited routing (only when the file has expert_group_count > 1): keep the
  // n_group_used groups whose two best biased scores sum highest, then top-k within them.
  bool group_limited = false;
  int n_group = 0;
  int n_group_used = 0;
  GatingFunc gating = GatingFunc::kSoftmax;
  bool weights_norm = false;   // normalize the chosen weights to sum 1 (sum clamped, see moe.h)
  float weights_scale = 1.0f;  // routed scaling factor (2.5 for R1)

  int64_t context_length = 0;  // n_ctx_train
  int64_t n_vocab = 0;         // rows of token_embd (= output rows = tokenizer entries)
  bool tied_output = false;    // no output.weight: lm_head reuses token_embd

  int qk_head() const { return qk_nope + qk_rope; }
  bool IsMoeLayer(int il) const { return il >= n_dense_lead; }
  // Elements of one cached latent row: normalized kv latent followed by the roped k_pe.
  int latent_row() const { return kv_lora_rank + qk_rope; }

  // Reads general.architecture (must be "deepseek2") and the deepseek2.* keys; looks at
  // token_embd/output/tokenizer.ggml.tokens for the vocabulary and at layer 0's attention tensors
  // for the layout. Errors name the file and the key (missing, wrong type, inconsistent).
  static absl::StatusOr<ModelConfig> FromGguf(const gguf::GgufModel& model);

  // Checks the invariants the forward pass relies on; FromGguf calls it.
  absl::Status Validate() const;

  // One line per group of fields, for logs and `tritmoe logits --verbose`.
  std::string DebugString() const;
};

}  // namespace tritmoe
