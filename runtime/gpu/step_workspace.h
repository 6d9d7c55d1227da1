// The device buffers of one GPU forward step, carved from one allocation. Every size is computed
// here (StepWorkspace::Layout) from the model's dimensions and the step's shape; a step whose
// shape exceeds the capacity grows the workspace (and drops the CUDA graphs that point into it).
#pragma once

#include <cstdint>

#include "experts/cuda/device_buffer.h"
#include "runtime/gpu/mla_attention.h"
#include "runtime/model/model_config.h"

namespace tritmoe::gpu {

// Widths that size the buffers (from the config and the uploaded weights).
struct StepDims {
  int64_t n_embd = 0, n_head = 0, qk_head = 0, q_lora = 0, kv_lora = 0, latent = 0, v_head = 0;
  int64_t n_vocab = 0, n_expert = 0, n_used = 0;
  int64_t gate_up_rows = 0;       // largest gate ‖ up height: 2 * max(n_ff, n_ff_exp, shared)
  int64_t attn_chunk_budget = 0;  // floats of attention scores one chunk may use

  static StepDims From(const ModelConfig& c, int64_t gate_up_rows);
};

// The shape of a step: new tokens, logits rows, attention key length (a bucket >= the longest
// sequence's length).
struct StepShape {
  int tokens = 0;
  int logit_rows = 0;
  int keys = 0;
  bool FitsIn(const StepShape& cap) const {
    return tokens <= cap.tokens && logit_rows <= cap.logit_rows && keys <= cap.keys;
  }
};

class StepWorkspace {
 public:
  // Query rows per attention chunk at this key length (so that the scores fit the budget).
  static int AttentionChunk(const StepDims& d, int tokens, int keys);

  // (Re)allocates for `shape` when it does not fit; returns true when it reallocated.
  bool Reserve(const StepDims& d, const StepShape& shape);
  const StepShape& capacity() const { return cap_; }

  // Step inputs, uploaded by one copy from a host block of input_bytes() laid out alike:
  // tokens [T], pos [T], logit_rows [n_out], argmax_exclude [n_out], rows [T].
  int32_t* tokens = nullptr;
  int32_t* pos = nullptr;
  int32_t* logit_rows = nullptr;
  int32_t* argmax_exclude = nullptr;  // per logits row: a token the argmax skips, or -1
  AttnRow* rows = nullptr;
  void* inputs() const { return tokens; }
  int64_t input_bytes() const { return input_bytes_; }
  int64_t tokens_offset() const { return 0; }
  int64_t pos_offset() const { return reinterpret_cast<uint8_t*>(pos) - base(); }
  int64_t logit_rows_offset() const { return reinterpret_cast<uint8_t*>(logit_rows) - base(); }
  int64_t argmax_exclude_offset() const {
    return reinterpret_cast<uint8_t*>(argmax_exclude) - base();
  }
  int64_t rows_offset() const { return reinterpret_cast<uint8_t*>(rows) - base(); }

  float *x = nullptr, *h = nullptr, *f = nullptr;  // [T][n_embd]
  float* qkv = nullptr;                            // [T][q_lora + latent]
  float* cq = nullptr;                             // [T][q_lora]
  float* q = nullptr;                              // [T][H][qk_head]
  float* qa = nullptr;                             // [T][H][latent]
  float* scores = nullptr;                         // [chunk][H][keys]
  float* o_lat = nullptr;                          // [T][H][kv_lora]
  float* o = nullptr;                              // [T][H][v_head]
  float* gu = nullptr;                             // [P][gate_up_rows]
  float* ffn_act = nullptr;                        // [P][gate_up_rows / 2]
  float* y_down = nullptr;                         // [P][n_embd]
  float* shared_out = nullptr;                     // [T][n_embd]
  float* router_logits = nullptr;                  // [T][n_expert]
  int32_t* sel_experts = nullptr;                  // [P]
  float* sel_weights = nullptr;                    // [P]
  int32_t *expert_offsets = nullptr, *pair_token = nullptr, *slot_pair = nullptr;
  int32_t *head_offsets = nullptr, *head_rows = nullptr;  // [H + 1], [T * H]
  float* normed = nullptr;                                // [n_out][n_embd]
  float* logits = nullptr;                                // [n_out][n_vocab]
  int32_t* argmax = nullptr;                              // [n_out]
  void* act_in = nullptr;   // quantized layer input (shared by the products that read it)
  void* act_tmp = nullptr;  // quantized other activations
  int64_t act_in_bytes = 0, act_tmp_bytes = 0;

 private:
  uint8_t* base() const { return reinterpret_cast<uint8_t*>(tokens); }
  StepShape cap_;
  int64_t input_bytes_ = 0;
  DeviceBuffer buf_;
};

}  // namespace tritmoe::gpu
