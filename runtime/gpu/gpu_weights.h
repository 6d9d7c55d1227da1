// Every tensor of a deepseek2 model uploaded to the GPU (twin: runtime/model/weights.h, from
// which they are read). Matrices become GpuLinear (tiled or float layout, see gpu_linear.h); pairs
// that read the same input are concatenated row-wise so that one launch computes both:
// q_a ‖ kv_a_mqa, gate ‖ up of the dense FFNs, the shared experts and every routed expert. Norm
// gains and the router bias are float vectors; token_embd stays in its GGUF rows for the
// embedding kernel.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "base/thread_pool.h"
#include "experts/cuda/device_buffer.h"
#include "runtime/gpu/gpu_linear.h"
#include "runtime/model/model_config.h"
#include "runtime/model/weights.h"

namespace tritmoe::gpu {

struct GpuLayerWeights {
  DeviceBuffer attn_norm, attn_q_a_norm, attn_kv_a_norm, ffn_norm;  // float gains
  // q_lora_rank > 0: q_a ‖ kv_a_mqa in `qkv_a` when they concatenate, else `q_a` and `kv_a`;
  // q_lora_rank == 0: `q` (attn_q) and `kv_a`.
  GpuLinear qkv_a, q_a, kv_a, q_b, q;
  GpuLinear attn_k;  // H heads of [kv_lora rows][qk_nope] (split layout only)
  GpuLinear attn_v;  // H heads of [v_head rows][kv_lora]
  GpuLinear attn_output;
  GpuLinear ffn_gate_up, ffn_down;  // dense layers
  // MoE layers.
  GpuLinear router;          // [n_expert rows][n_embd], float path (F32 in every recipe)
  DeviceBuffer exp_probs_b;  // [n_expert] floats, or empty
  GpuLinear exp_gate_up, exp_down;
  GpuLinear shared_gate_up, shared_down;
};

class GpuWeights {
 public:
  // Uploads everything `w` binds (all experts must be local). Unimplemented, naming the tensor,
  // for what the GPU kernels do not take (legacy attn_kv_b layout, types without a GPU kernel).
  // experts_on_host: the routed experts (exp_gate_up, exp_down) are repacked into pinned host
  // memory instead (the expert cache's host tier, gpu_expert_cache.h); they must be tiled.
  static absl::StatusOr<GpuWeights> Upload(const Weights& w, const ModelConfig& config,
                                           ThreadPool& pool, bool experts_on_host = false);

  const GpuLayerWeights& layer(int il) const { return layers_[il]; }
  GgmlType token_embd_type() const { return token_embd_type_; }
  const uint8_t* token_embd() const { return token_embd_.as<const uint8_t>(); }
  int64_t token_embd_row_bytes() const { return token_embd_row_bytes_; }
  const DeviceBuffer& output_norm() const { return output_norm_; }
  const GpuLinear& output() const { return output_; }
  // Device bytes of all weights (for memory reports), and pinned host bytes (experts on host).
  int64_t bytes() const { return bytes_; }
  int64_t host_bytes() const { return host_bytes_; }

 private:
  std::vector<GpuLayerWeights> layers_;
  GgmlType token_embd_type_ = GgmlType::kF32;
  DeviceBuffer token_embd_;
  int64_t token_embd_row_bytes_ = 0;
  DeviceBuffer output_norm_;
  GpuLinear output_;
  int64_t bytes_ = 0;
  int64_t host_bytes_ = 0;
};

}  // namespace tritmoe::gpu
