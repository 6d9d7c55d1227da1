// Every tensor of a deepseek2 model bound as a typed view into the (memory-mapped) GGUF data, with
// its shape checked against the ModelConfig. Nothing is converted at load except the small norm
// and bias vectors, which are decoded to float once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "experts/matmul.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/model_config.h"

namespace tritmoe {

// `count` matrices of rows x cols in one tensor, matrix i starting stride_bytes * i after `data`.
// Used for the experts of a 3-D tensor (matrix e = expert e, a contiguous byte range) and for the
// per-head blocks of the kv up-projection.
struct MatrixStack {
  GgmlType type = GgmlType::kF32;
  const uint8_t* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t count = 0;
  int64_t stride_bytes = 0;

  int64_t matrix_bytes() const { return rows * RowBytes(type, cols); }
  // Matrix i (0 <= i < count) as a WeightView.
  WeightView At(int64_t i) const;
  // Byte range of matrix i relative to `data`: [offset, offset + matrix_bytes()).
  int64_t Offset(int64_t i) const { return i * stride_bytes; }
};

// A SwiGLU FFN's three matrices: gate/up [n_ff rows][n_embd], down [n_embd rows][n_ff].
struct FfnWeights {
  WeightView gate;
  WeightView up;
  WeightView down;
  bool present() const { return gate.data != nullptr; }
};

struct LayerWeights {
  std::vector<float> attn_norm;  // [n_embd]
  // q path: attn_q_a [q_lora rows][n_embd], attn_q_a_norm [q_lora],
  // attn_q_b [H * qk_head rows][q_lora]; or attn_q [H * qk_head rows][n_embd] when q_lora_rank = 0.
  WeightView attn_q_a;
  std::vector<float> attn_q_a_norm;
  WeightView attn_q_b;
  WeightView attn_q;
  WeightView attn_kv_a_mqa;           // [kv_lora + qk_rope rows][n_embd]
  std::vector<float> attn_kv_a_norm;  // [kv_lora]
  // Per-head k block of the kv up-projection, in the orientation the file stores it:
  //   kSplit  (attn_k_b):  head h = [kv_lora rows][qk_nope]  (q_abs = k_b[h] * q_nope)
  //   kLegacy (attn_kv_b): head h = [qk_nope rows][kv_lora]  (k_nope = kv_b_k[h] * latent)
  MatrixStack attn_k;
  // Per-head v block, head h = [v_head rows][kv_lora] in both layouts (v = v_b[h] * latent).
  MatrixStack attn_v;
  WeightView attn_output;       // [n_embd rows][H * v_head]
  std::vector<float> ffn_norm;  // [n_embd]

  FfnWeights dense;  // dense layers only

  // MoE layers only.
  WeightView ffn_gate_inp;         // router [n_expert rows][n_embd]
  std::vector<float> exp_probs_b;  // [n_expert] selection bias, empty when the file has none
  MatrixStack gate_exps;           // expert e: [n_ff_exp rows][n_embd]
  MatrixStack up_exps;             // expert e: [n_ff_exp rows][n_embd]
  MatrixStack down_exps;           // expert e: [n_embd rows][n_ff_exp]
  FfnWeights shared;               // shared expert(s), absent when expert_shared_count = 0

  FfnWeights Expert(int e) const { return {gate_exps.At(e), up_exps.At(e), down_exps.At(e)}; }
};

class Weights {
 public:
  // Binds every tensor the forward pass needs. local_experts: which routed experts this process
  // computes (one flag per expert; empty = all). Only local experts are ever read, so a rank
  // pages in only their byte ranges. Errors name the tensor, its shape/type and what was expected.
  static absl::StatusOr<Weights> Bind(const gguf::GgufModel& model, const ModelConfig& config,
                                      std::vector<bool> local_experts = {});

  const LayerWeights& layer(int il) const { return layers_[il]; }
  WeightView token_embd() const { return token_embd_; }  // [n_vocab rows][n_embd]
  const std::vector<float>& output_norm() const { return output_norm_; }
  WeightView output() const { return output_; }  // lm_head [n_vocab rows][n_embd]
  bool IsLocalExpert(int e) const { return local_experts_[e]; }
  const std::vector<bool>& local_experts() const { return local_experts_; }

 private:
  WeightView token_embd_;
  std::vector<float> output_norm_;
  WeightView output_;
  std::vector<LayerWeights> layers_;
  std::vector<bool> local_experts_;
};

}  // namespace tritmoe
