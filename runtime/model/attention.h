// Multi-head latent attention (MLA) of DeepSeek-V3/R1 over a batch of sequences (formats.md §4.4).
//
// Per token: q = q_b(RMSNorm(q_a h)) split per head into q_nope [qk_nope] ‖ q_pe [qk_rope];
// kv_a_mqa h = latent [kv_lora] ‖ k_pe [qk_rope]; RoPE on q_pe and k_pe; RMSNorm on the latent.
// The cache keeps latent ‖ k_pe per token; per head, k_nope = K_h latent and v = V_h latent.
// Two equivalent forms:
//  * naive (prefill): decompress k_nope and v of every cached token per head, then ordinary
//    attention over [k_nope ‖ k_pe] with q = [q_nope ‖ q_pe];
//  * absorbed (decode): q_abs = K_h^T q_nope scores against the latent directly
//    (q_abs . latent = q_nope . k_nope), the weighted latent sum goes out through V_h.
// Both use kq_scale = mscale^2 / sqrt(qk_nope + qk_rope) and a causal mask.
#pragma once

#include <cstdint>
#include <span>

#include "base/thread_pool.h"
#include "experts/matmul.h"
#include "runtime/model/kv_cache.h"
#include "runtime/model/model_config.h"
#include "runtime/model/rope.h"
#include "runtime/model/weights.h"
#include "runtime/model/workspace.h"

namespace tritmoe {

// Naive costs ~H * (qk_nope + v) * kv_lora per cached token once, then qk + v per query-key pair
// and head; absorbed costs ~2 * kv_lora per pair and head. So naive wins for long prefills and
// absorbed for decode. llama.cpp runs split-layout files absorbed throughout (and legacy files
// naive): kAbsorbed with quantized activations reproduces its numerics on split-layout files.
enum class AttentionForm {
  kAuto,  // absorbed for a sequence with one new token, naive otherwise
  kNaive,
  kAbsorbed,
};

// One sequence's share of a step: rows [row_begin, row_begin + n_new) of the step, at positions
// [n_past, n_past + n_new), attending to all of its cache positions up to its own.
struct AttentionSeq {
  KvCache* cache = nullptr;
  int64_t row_begin = 0;
  int64_t n_new = 0;
  int64_t n_past = 0;
  bool absorbed = false;  // resolved form
};

// h: [n_rows][n_embd] (after attn_norm); rope: a table over the step's rows (row i at the
// position of step row i). Stores every new token's latent row at layer il of its sequence's
// cache, then writes out [n_rows][n_embd] = attn_output(attention).
void MlaAttention(const ModelConfig& config, const LayerWeights& layer, int il, const float* h,
                  int64_t n_rows, std::span<const AttentionSeq> seqs, const RopeTable& rope,
                  float* out, ThreadPool& pool, ActPrecision precision, Workspace& ws);

// y [n][w.cols] = x [n][w.rows] * W: the product with W transposed, for the orientations of the
// kv up-projection that MatMul cannot take directly. W is decoded to float once per call.
void TransposedMatMul(const WeightView& w, const float* x, int64_t n, float* y, ThreadPool& pool,
                      Workspace& ws);

}  // namespace tritmoe
