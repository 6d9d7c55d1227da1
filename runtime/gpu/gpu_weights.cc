#include "runtime/gpu/gpu_weights.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/gpu/embedding.h"
#include "runtime/gpu/moe_route.h"

namespace tritmoe::gpu {
namespace {

MatrixStack Single(const WeightView& w) {
  return MatrixStack{w.type, static_cast<const uint8_t*>(w.data), w.rows, w.cols,
                     1,      w.rows * RowBytes(w.type, w.cols)};
}

// Whether a ‖ b can share one GpuLinear (and so one launch).
bool CanConcat(const MatrixStack& a, const MatrixStack& b) {
  if (a.type != b.type || a.cols != b.cols || a.count != b.count) return false;
  return !GpuLinear::WouldTile(a.type, a.cols) || a.rows % 16 == 0;
}

absl::StatusOr<GpuLinear> UploadPair(const std::string& name, const MatrixStack& a,
                                     const MatrixStack& b, ThreadPool& pool,
                                     bool on_device = true) {
  if (!CanConcat(a, b)) {
    return absl::UnimplementedError(
        absl::StrCat(name,
                     ": the GPU backend runs gate and up in one product and needs them of one type "
                     "and width (rows a multiple of 16 when tiled); got ",
                     GetTypeTraits(a.type).name, " ", a.rows, "x", a.cols, " and ",
                     GetTypeTraits(b.type).name, " ", b.rows, "x", b.cols));
  }
  const MatrixStack parts[2] = {a, b};
  return GpuLinear::Upload(name, parts, pool, on_device);
}

}  // namespace

absl::StatusOr<GpuWeights> GpuWeights::Upload(const Weights& w, const ModelConfig& c,
                                              ThreadPool& pool, bool experts_on_host) {
  if (c.kv_layout != KvProjLayout::kSplit) {
    return absl::UnimplementedError(
        "the GPU backend needs the split MLA layout (attn_k_b / attn_v_b); this file has the "
        "legacy attn_kv_b");
  }
  for (int e = 0; e < c.n_expert; ++e) {
    if (!w.IsLocalExpert(e)) {
      return absl::UnimplementedError("the GPU model holds every routed expert on one GPU");
    }
  }
  if (c.n_expert > kMaxRoutedExperts) {
    return absl::UnimplementedError(absl::StrCat("GPU routing takes at most ", kMaxRoutedExperts,
                                                 " experts, the model has ", c.n_expert));
  }
  GpuWeights g;
  const WeightView embd = w.token_embd();
  if (!EmbeddingSupports(static_cast<uint32_t>(embd.type))) {
    return absl::UnimplementedError(absl::StrCat("token_embd.weight: type ",
                                                 GetTypeTraits(embd.type).name,
                                                 " has no GPU embedding decoder"));
  }
  g.token_embd_type_ = embd.type;
  g.token_embd_row_bytes_ = RowBytes(embd.type, embd.cols);
  g.token_embd_ = DeviceBuffer(embd.rows * g.token_embd_row_bytes_);
  g.token_embd_.CopyFromHost(embd.data, g.token_embd_.bytes());
  g.output_norm_ = UploadFloats(w.output_norm());
  ASSIGN_OR_RETURN(g.output_, GpuLinear::Upload("output.weight", w.output(), pool));
  g.bytes_ = g.token_embd_.bytes() + g.output_.bytes();

  g.layers_.resize(c.n_layer);
  for (int il = 0; il < c.n_layer; ++il) {
    const LayerWeights& lw = w.layer(il);
    GpuLayerWeights& gl = g.layers_[il];
    const std::string p = absl::StrCat("blk.", il, ".");
    gl.attn_norm = UploadFloats(lw.attn_norm);
    gl.ffn_norm = UploadFloats(lw.ffn_norm);
    gl.attn_kv_a_norm = UploadFloats(lw.attn_kv_a_norm);
    if (c.q_lora_rank > 0) {
      gl.attn_q_a_norm = UploadFloats(lw.attn_q_a_norm);
      const MatrixStack qa = Single(lw.attn_q_a), kva = Single(lw.attn_kv_a_mqa);
      if (CanConcat(qa, kva)) {
        const MatrixStack parts[2] = {qa, kva};
        ASSIGN_OR_RETURN(gl.qkv_a, GpuLinear::Upload(p + "attn_q_a+attn_kv_a_mqa", parts, pool));
      } else {
        ASSIGN_OR_RETURN(gl.q_a, GpuLinear::Upload(p + "attn_q_a.weight", lw.attn_q_a, pool));
        ASSIGN_OR_RETURN(gl.kv_a,
                         GpuLinear::Upload(p + "attn_kv_a_mqa.weight", lw.attn_kv_a_mqa, pool));
      }
      ASSIGN_OR_RETURN(gl.q_b, GpuLinear::Upload(p + "attn_q_b.weight", lw.attn_q_b, pool));
    } else {
      ASSIGN_OR_RETURN(gl.q, GpuLinear::Upload(p + "attn_q.weight", lw.attn_q, pool));
      ASSIGN_OR_RETURN(gl.kv_a,
                       GpuLinear::Upload(p + "attn_kv_a_mqa.weight", lw.attn_kv_a_mqa, pool));
    }
    if (GpuLinear::WouldTile(lw.attn_k.type, lw.attn_k.cols)) {
      // Its input rows (q_nope) are strided inside q; only the float kernels read those.
      return absl::UnimplementedError(
          absl::StrCat(p, "attn_k_b.weight: ", GetTypeTraits(lw.attn_k.type).name, " with ",
                       lw.attn_k.cols, " columns; the GPU backend takes F32/F16/BF16/Q8_0 here"));
    }
    ASSIGN_OR_RETURN(gl.attn_k,
                     GpuLinear::Upload(p + "attn_k_b.weight",
                                       std::span<const MatrixStack>(&lw.attn_k, 1), pool));
    ASSIGN_OR_RETURN(gl.attn_v,
                     GpuLinear::Upload(p + "attn_v_b.weight",
                                       std::span<const MatrixStack>(&lw.attn_v, 1), pool));
    ASSIGN_OR_RETURN(gl.attn_output,
                     GpuLinear::Upload(p + "attn_output.weight", lw.attn_output, pool));
    if (!c.IsMoeLayer(il)) {
      ASSIGN_OR_RETURN(gl.ffn_gate_up, UploadPair(p + "ffn_gate+ffn_up", Single(lw.dense.gate),
                                                  Single(lw.dense.up), pool));
      ASSIGN_OR_RETURN(gl.ffn_down, GpuLinear::Upload(p + "ffn_down.weight", lw.dense.down, pool));
    } else {
      ASSIGN_OR_RETURN(gl.router,
                       GpuLinear::Upload(p + "ffn_gate_inp.weight", lw.ffn_gate_inp, pool));
      if (gl.router.tiled()) {
        return absl::UnimplementedError(
            absl::StrCat(p, "ffn_gate_inp.weight: the router runs in float (F32/F16/BF16)"));
      }
      if (!lw.exp_probs_b.empty()) gl.exp_probs_b = UploadFloats(lw.exp_probs_b);
      if (experts_on_host && (!GpuLinear::WouldTile(lw.gate_exps.type, lw.gate_exps.cols) ||
                              !GpuLinear::WouldTile(lw.down_exps.type, lw.down_exps.cols))) {
        return absl::UnimplementedError(absl::StrCat(
            p,
            "ffn_*_exps: the GPU expert cache takes experts of the int8 tile kernels only "
            "(IQ1_S, TQ1_0, TQ2_0, IQ2_XXS, Q4_K, Q6_K, Q8_0, columns % 256 == 0), not ",
            GetTypeTraits(lw.gate_exps.type).name, " / ", GetTypeTraits(lw.down_exps.type).name));
      }
      ASSIGN_OR_RETURN(gl.exp_gate_up, UploadPair(p + "ffn_gate_exps+ffn_up_exps", lw.gate_exps,
                                                  lw.up_exps, pool, !experts_on_host));
      ASSIGN_OR_RETURN(gl.exp_down,
                       GpuLinear::Upload(p + "ffn_down_exps.weight",
                                         std::span<const MatrixStack>(&lw.down_exps, 1), pool,
                                         !experts_on_host));
      if (lw.shared.present()) {
        ASSIGN_OR_RETURN(gl.shared_gate_up,
                         UploadPair(p + "ffn_gate_shexp+ffn_up_shexp", Single(lw.shared.gate),
                                    Single(lw.shared.up), pool));
        ASSIGN_OR_RETURN(gl.shared_down,
                         GpuLinear::Upload(p + "ffn_down_shexp.weight", lw.shared.down, pool));
      }
    }
    for (const GpuLinear* m :
         {&gl.qkv_a, &gl.q_a, &gl.kv_a, &gl.q_b, &gl.q, &gl.attn_k, &gl.attn_v, &gl.attn_output,
          &gl.ffn_gate_up, &gl.ffn_down, &gl.router, &gl.exp_gate_up, &gl.exp_down,
          &gl.shared_gate_up, &gl.shared_down}) {
      (m->on_device() || m->empty() ? g.bytes_ : g.host_bytes_) += m->bytes();
    }
  }
  return g;
}

}  // namespace tritmoe::gpu
