#include "runtime/model/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "experts/dequantize.h"
#include "runtime/model/rms_norm.h"

namespace tritmoe {
namespace {

// Attention math runs through MatMul on float32 views (vectorized kernels), as llama.cpp runs
// kq and kqv as F32 mul_mats.
WeightView FloatView(const float* data, int64_t rows, int64_t cols) {
  return WeightView{GgmlType::kF32, data, rows, cols};
}

void FloatMatMul(const float* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y,
                 ThreadPool& pool) {
  MatMul(FloatView(w, rows, cols), x, n, y, pool, ActPrecision::kFloat);
}

// dst [cols][rows] = src [rows][cols] transposed; src rows are src_stride apart.
void Transpose(const float* src, int64_t src_stride, int64_t rows, int64_t cols, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * src_stride + c];
  }
}

// Copies column block [col, col + n) of each of `rows` rows (stride `stride`) into dst [rows][n].
void GatherCols(const float* src, int64_t stride, int64_t col, int64_t rows, int64_t n,
                float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(dst + r * n, src + r * stride + col, n * sizeof(float));
  }
}

// Scales scores [n_q][n_keys] by kq_scale, masks keys after each query's position (query i sits
// at position first_pos + i) and turns each row into probabilities.
void CausalSoftmax(float* scores, int64_t n_q, int64_t n_keys, int64_t first_pos, float kq_scale) {
  for (int64_t i = 0; i < n_q; ++i) {
    float* sc = scores + i * n_keys;
    const int64_t n = std::min(n_keys, first_pos + i + 1);
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < n; ++j) {
      sc[j] *= kq_scale;
      mx = std::max(mx, sc[j]);
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      sc[j] = std::exp(sc[j] - mx);
      sum += sc[j];
    }
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < n; ++j) sc[j] *= inv;
    std::fill(sc + n, sc + n_keys, 0.0f);
  }
}

}  // namespace

void TransposedMatMul(const WeightView& w, const float* x, int64_t n, float* y, ThreadPool& pool,
                      Workspace& ws) {
  const int64_t a = w.rows, b = w.cols;
  float* wf = ws.Get(Buf::kTransW, a * b);
  float* wt = ws.Get(Buf::kTransWT, a * b);
  const int64_t row_bytes = RowBytes(w.type, b);
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r = 0; r < a; ++r) DequantizeRow(w.type, base + r * row_bytes, &wf[r * b], b);
  Transpose(wf, b, a, b, wt);
  FloatMatMul(wt, b, a, x, n, y, pool);
}

void MlaAttention(const ModelConfig& c, const LayerWeights& w, int il, const float* h,
                  int64_t n_rows, std::span<const AttentionSeq> seqs, const RopeTable& rope,
                  float* out, ThreadPool& pool, ActPrecision precision, Workspace& ws) {
  const int64_t H = c.n_head, nope = c.qk_nope, nrot = c.qk_rope, qk = c.qk_head();
  const int64_t V = c.v_head, R = c.kv_lora_rank, L = c.latent_row();
  const float kq_scale = c.kq_scale;
  const int64_t T = n_rows;

  // Queries [T][H][qk].
  float* q = ws.Get(Buf::kQ, T * H * qk);
  if (c.q_lora_rank > 0) {
    float* cq = ws.Get(Buf::kCq, T * c.q_lora_rank);
    MatMul(w.attn_q_a, h, T, cq, pool, precision);
    RmsNorm(cq, T, c.q_lora_rank, w.attn_q_a_norm.data(), c.rms_eps, cq);
    MatMul(w.attn_q_b, cq, T, q, pool, precision);
  } else {
    MatMul(w.attn_q, h, T, q, pool, precision);
  }
  // Latent rows [T][L]: RoPE on k_pe before the norm on the latent (the norm does not touch it).
  float* kv_new = ws.Get(Buf::kKvNew, T * L);
  MatMul(w.attn_kv_a_mqa, h, T, kv_new, pool, precision);
  RmsNorm(kv_new, L, T, R, w.attn_kv_a_norm.data(), c.rms_eps, kv_new, L);
  for (int64_t t = 0; t < T; ++t) {
    rope.Apply(t, &kv_new[t * L + R]);
    for (int64_t hd = 0; hd < H; ++hd) rope.Apply(t, &q[(t * H + hd) * qk + nope]);
  }

  // Store, then attend over what the cache holds (so a quantized cache is seen the same way by
  // both forms and by later steps).
  std::vector<int64_t> kv_off(seqs.size() + 1, 0);
  for (size_t s = 0; s < seqs.size(); ++s) {
    const AttentionSeq& sq = seqs[s];
    sq.cache->Write(il, sq.n_past, sq.n_new, &kv_new[sq.row_begin * L]);
    kv_off[s + 1] = kv_off[s] + sq.n_past + sq.n_new;
  }
  float* kv = ws.Get(Buf::kKv, kv_off.back() * L);
  for (size_t s = 0; s < seqs.size(); ++s) {
    seqs[s].cache->Read(il, 0, kv_off[s + 1] - kv_off[s], &kv[kv_off[s] * L]);
  }

  // Per-head outputs [T][H][V]; every (row, head) is written by one of the two forms below.
  float* o = ws.Get(Buf::kO, T * H * V);

  // Absorbed form: q_abs[t][h] = K_h^T q_nope (latent space); per sequence, all its query rows
  // (token, head) score against the latent rows at once, and the weighted latent sum goes out
  // through V_h.
  std::vector<int64_t> abs_rows;  // step rows of absorbed sequences
  for (const AttentionSeq& sq : seqs) {
    if (!sq.absorbed) continue;
    for (int64_t i = 0; i < sq.n_new; ++i) abs_rows.push_back(sq.row_begin + i);
  }
  if (!abs_rows.empty()) {
    const int64_t Ta = static_cast<int64_t>(abs_rows.size());
    // Query rows [Ta][H][L] = q_abs ‖ q_pe.
    float* qa = ws.Get(Buf::kQa, Ta * H * L);
    float* in = ws.Get(Buf::kIn, Ta * std::max(nope, R));
    float* res = ws.Get(Buf::kRes, Ta * std::max(R, V));
    for (int64_t hd = 0; hd < H; ++hd) {
      for (int64_t a = 0; a < Ta; ++a) {
        const float* qt = &q[(abs_rows[a] * H + hd) * qk];
        std::memcpy(&in[a * nope], qt, nope * sizeof(float));
        std::memcpy(&qa[(a * H + hd) * L + R], qt + nope, nrot * sizeof(float));
      }
      if (c.kv_layout == KvProjLayout::kSplit) {
        MatMul(w.attn_k.At(hd), in, Ta, res, pool, precision);
      } else {
        TransposedMatMul(w.attn_k.At(hd), in, Ta, res, pool, ws);
      }
      for (int64_t a = 0; a < Ta; ++a) {
        std::memcpy(&qa[(a * H + hd) * L], &res[a * R], R * sizeof(float));
      }
    }
    float* o_lat = ws.Get(Buf::kOLat, Ta * H * R);
    int64_t a0 = 0;  // first absorbed row of the current sequence
    for (size_t s = 0; s < seqs.size(); ++s) {
      const AttentionSeq& sq = seqs[s];
      if (!sq.absorbed) continue;
      const int64_t n_kv = kv_off[s + 1] - kv_off[s], n_q = sq.n_new * H;
      const float* keys = &kv[kv_off[s] * L];
      float* scores = ws.Get(Buf::kScores, n_q * n_kv);
      FloatMatMul(keys, n_kv, L, &qa[a0 * H * L], n_q, scores, pool);
      for (int64_t i = 0; i < sq.n_new; ++i) {  // rows of token i are its H heads
        for (int64_t hd = 0; hd < H; ++hd) {
          CausalSoftmax(&scores[(i * H + hd) * n_kv], 1, n_kv, sq.n_past + i, kq_scale);
        }
      }
      float* lat_t = ws.Get(Buf::kLatT, R * n_kv);
      Transpose(keys, L, n_kv, R, lat_t);
      FloatMatMul(lat_t, R, n_kv, scores, n_q, &o_lat[a0 * H * R], pool);
      a0 += sq.n_new;
    }
    for (int64_t hd = 0; hd < H; ++hd) {
      GatherCols(o_lat, H * R, hd * R, Ta, R, in);
      MatMul(w.attn_v.At(hd), in, Ta, res, pool, precision);
      for (int64_t a = 0; a < Ta; ++a) {
        std::memcpy(&o[(abs_rows[a] * H + hd) * V], &res[a * V], V * sizeof(float));
      }
    }
  }

  // Naive form: per head, decompress k_nope and v of every cached token of the naive sequences
  // (one MatMul over all of them), then per sequence ordinary causal attention.
  int64_t n_naive_keys = 0, max_naive_keys = 0, max_naive_q = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    if (seqs[s].absorbed) continue;
    n_naive_keys += kv_off[s + 1] - kv_off[s];
    max_naive_keys = std::max(max_naive_keys, kv_off[s + 1] - kv_off[s]);
    max_naive_q = std::max(max_naive_q, seqs[s].n_new);
  }
  if (n_naive_keys > 0) {
    const int64_t N = n_naive_keys;
    float* lat = ws.Get(Buf::kLat, N * R);
    std::vector<int64_t> naive_off(seqs.size(), 0);
    for (int64_t s = 0, off = 0; s < static_cast<int64_t>(seqs.size()); ++s) {
      if (seqs[s].absorbed) continue;
      naive_off[s] = off;
      GatherCols(&kv[kv_off[s] * L], L, 0, kv_off[s + 1] - kv_off[s], R, &lat[off * R]);
      off += kv_off[s + 1] - kv_off[s];
    }
    float* k_nope = ws.Get(Buf::kKNope, N * nope);
    float* v = ws.Get(Buf::kV, N * V);
    float* keys = ws.Get(Buf::kKeys, max_naive_keys * qk);
    float* v_t = ws.Get(Buf::kVT, V * max_naive_keys);
    float* qs = ws.Get(Buf::kQs, max_naive_q * qk);
    float* scores = ws.Get(Buf::kScores, max_naive_q * max_naive_keys);
    float* os = ws.Get(Buf::kOs, max_naive_q * V);
    for (int64_t hd = 0; hd < H; ++hd) {
      if (c.kv_layout == KvProjLayout::kSplit) {
        TransposedMatMul(w.attn_k.At(hd), lat, N, k_nope, pool, ws);
      } else {
        MatMul(w.attn_k.At(hd), lat, N, k_nope, pool, precision);
      }
      MatMul(w.attn_v.At(hd), lat, N, v, pool, precision);
      for (size_t s = 0; s < seqs.size(); ++s) {
        const AttentionSeq& sq = seqs[s];
        if (sq.absorbed) continue;
        const int64_t n_kv = kv_off[s + 1] - kv_off[s], n_q = sq.n_new;
        for (int64_t j = 0; j < n_kv; ++j) {  // K_j = k_nope_j ‖ k_pe_j
          std::memcpy(&keys[j * qk], &k_nope[(naive_off[s] + j) * nope], nope * sizeof(float));
          std::memcpy(&keys[j * qk + nope], &kv[(kv_off[s] + j) * L + R], nrot * sizeof(float));
        }
        for (int64_t i = 0; i < n_q; ++i) {
          std::memcpy(&qs[i * qk], &q[((sq.row_begin + i) * H + hd) * qk], qk * sizeof(float));
        }
        FloatMatMul(keys, n_kv, qk, qs, n_q, scores, pool);
        CausalSoftmax(scores, n_q, n_kv, sq.n_past, kq_scale);
        Transpose(&v[naive_off[s] * V], V, n_kv, V, v_t);
        FloatMatMul(v_t, V, n_kv, scores, n_q, os, pool);
        for (int64_t i = 0; i < n_q; ++i) {
          std::memcpy(&o[((sq.row_begin + i) * H + hd) * V], &os[i * V], V * sizeof(float));
        }
      }
    }
  }

  MatMul(w.attn_output, o, T, out, pool, precision);
}

}  // namespace tritmoe
