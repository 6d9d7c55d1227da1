#include "runtime/gpu/step_workspace.h"

#include <algorithm>

#include "experts/cuda/quant_gemv.h"

namespace tritmoe::gpu {
namespace {

// Hands out 256-byte aligned pieces of one block; with base == nullptr it only counts.
struct Carver {
  uint8_t* base = nullptr;
  int64_t off = 0;
  template <class T>
  T* Take(int64_t n) {
    off = (off + 255) & ~int64_t{255};
    T* p = base != nullptr ? reinterpret_cast<T*>(base + off) : nullptr;
    off += std::max<int64_t>(n, 1) * static_cast<int64_t>(sizeof(T));
    return p;
  }
};

}  // namespace

StepDims StepDims::From(const ModelConfig& c, int64_t gate_up_rows) {
  StepDims d;
  d.n_embd = c.n_embd;
  d.n_head = c.n_head;
  d.qk_head = c.qk_head();
  d.q_lora = c.q_lora_rank;
  d.kv_lora = c.kv_lora_rank;
  d.latent = c.latent_row();
  d.v_head = c.v_head;
  d.n_vocab = c.n_vocab;
  d.n_expert = c.n_expert;
  d.n_used = c.n_expert_used;
  d.gate_up_rows = gate_up_rows;
  d.attn_chunk_budget = int64_t{64} << 20;  // 256 MB of scores
  return d;
}

int StepWorkspace::AttentionChunk(const StepDims& d, int tokens, int keys) {
  const int64_t per_token = std::max<int64_t>(1, d.n_head * keys);
  const int64_t chunk = std::max<int64_t>(1, d.attn_chunk_budget / per_token);
  return static_cast<int>(std::min<int64_t>(tokens, chunk));
}

bool StepWorkspace::Reserve(const StepDims& d, const StepShape& shape) {
  if (buf_.get() != nullptr && shape.FitsIn(cap_)) return false;
  StepShape cap;
  cap.tokens = std::max(cap_.tokens, shape.tokens);
  cap.logit_rows = std::max(cap_.logit_rows, shape.logit_rows);
  cap.keys = std::max(cap_.keys, shape.keys);
  const int64_t T = cap.tokens, N = cap.logit_rows, H = d.n_head;
  const int64_t P = T * std::max<int64_t>(1, d.n_used);
  const int64_t chunk = AttentionChunk(d, cap.tokens, cap.keys);
  const int64_t ff = d.gate_up_rows / 2;
  int64_t tmp_size = 0;
  for (const auto& [n_rows, cols] : {std::pair<int64_t, int64_t>{T, d.q_lora},
                                     {T * H, d.kv_lora},
                                     {T, H * d.v_head},
                                     {P, ff},
                                     {T, ff},
                                     {N, d.n_embd}}) {
    tmp_size = std::max(tmp_size, GpuActivationBytes(n_rows, cols));
  }
  const int64_t in_size = GpuActivationBytes(T, d.n_embd);

  auto carve = [&](uint8_t* base) {
    Carver c{base};
    tokens = c.Take<int32_t>(T);
    pos = c.Take<int32_t>(T);
    logit_rows = c.Take<int32_t>(N);
    argmax_exclude = c.Take<int32_t>(N);
    rows = c.Take<AttnRow>(T);
    input_bytes_ = c.off;
    x = c.Take<float>(T * d.n_embd);
    h = c.Take<float>(T * d.n_embd);
    f = c.Take<float>(T * d.n_embd);
    qkv = c.Take<float>(T * (d.q_lora + d.latent));
    cq = c.Take<float>(T * d.q_lora);
    q = c.Take<float>(T * H * d.qk_head);
    qa = c.Take<float>(T * H * d.latent);
    scores = c.Take<float>(chunk * H * cap.keys);
    o_lat = c.Take<float>(T * H * d.kv_lora);
    o = c.Take<float>(T * H * d.v_head);
    gu = c.Take<float>(P * d.gate_up_rows);
    ffn_act = c.Take<float>(P * ff);
    y_down = c.Take<float>(P * d.n_embd);
    shared_out = c.Take<float>(T * d.n_embd);
    router_logits = c.Take<float>(T * d.n_expert);
    sel_experts = c.Take<int32_t>(P);
    sel_weights = c.Take<float>(P);
    expert_offsets = c.Take<int32_t>(d.n_expert + 1);
    pair_token = c.Take<int32_t>(P);
    slot_pair = c.Take<int32_t>(P);
    head_offsets = c.Take<int32_t>(H + 1);
    head_rows = c.Take<int32_t>(T * H);
    normed = c.Take<float>(N * d.n_embd);
    logits = c.Take<float>(N * d.n_vocab);
    argmax = c.Take<int32_t>(N);
    act_in = c.Take<uint8_t>(in_size);
    act_tmp = c.Take<uint8_t>(tmp_size);
    return c.off;
  };
  const int64_t total = carve(nullptr);
  buf_ = DeviceBuffer();  // free the old block first
  buf_ = DeviceBuffer(static_cast<size_t>(total));
  carve(buf_.as<uint8_t>());
  act_in_bytes = in_size;
  act_tmp_bytes = tmp_size;
  cap_ = cap;
  return true;
}

}  // namespace tritmoe::gpu
