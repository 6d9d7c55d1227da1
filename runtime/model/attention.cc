#include "runtime/model/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "experts/dequantize.h"
#include "runtime/model/rms_norm.h"

namespace tritmoe {
namespace {

float Dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// In-place softmax of scores [n] (n >= 1).
void Softmax(float* scores, int64_t n) {
  const float mx = *std::max_element(scores, scores + n);
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    scores[j] = std::exp(scores[j] - mx);
    sum += scores[j];
  }
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) scores[j] *= inv;
}

// Copies column block [col, col + n) of each of `rows` rows (stride `stride`) into dst [rows][n].
void GatherCols(const float* src, int64_t stride, int64_t col, int64_t rows, int64_t n,
                float* dst) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * n, src + r * stride + col, n * 4);
}

void ScatterCols(const float* src, int64_t rows, int64_t n, float* dst, int64_t stride,
                 int64_t col) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * stride + col, src + r * n, n * 4);
}

// Items per ParallelFor chunk so that a chunk holds at least ~64k multiply-adds: small loops then
// run on the calling thread alone, which beats waking workers.
int64_t Grain(int64_t work_per_item) {
  constexpr int64_t kMinChunkWork = 1 << 16;
  return std::max<int64_t>(1, kMinChunkWork / std::max<int64_t>(1, work_per_item));
}

}  // namespace

void TransposedMatMul(const WeightView& w, const float* x, int64_t n, float* y, ThreadPool& pool) {
  const int64_t a = w.rows, b = w.cols;
  std::vector<float> wf(a * b);
  const int64_t row_bytes = RowBytes(w.type, b);
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  pool.ParallelFor(a, Grain(b), [&](int64_t begin, int64_t end, int) {
    for (int64_t r = begin; r < end; ++r)
      DequantizeRow(w.type, base + r * row_bytes, &wf[r * b], b);
  });
  pool.ParallelFor(n, Grain(a * b), [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) {
      float* yi = y + i * b;
      std::fill(yi, yi + b, 0.0f);
      const float* xi = x + i * a;
      for (int64_t r = 0; r < a; ++r) {
        const float xr = xi[r];
        const float* wr = &wf[r * b];
        for (int64_t c = 0; c < b; ++c) yi[c] += xr * wr[c];
      }
    }
  });
}

void MlaAttention(const ModelConfig& c, const LayerWeights& w, int il, const float* h,
                  int64_t n_rows, std::span<const AttentionSeq> seqs, const RopeTable& rope,
                  float* out, ThreadPool& pool, ActPrecision precision) {
  const int64_t H = c.n_head, nope = c.qk_nope, nrot = c.qk_rope, qk = c.qk_head();
  const int64_t V = c.v_head, R = c.kv_lora_rank, L = c.latent_row();
  const float kq_scale = c.kq_scale;
  const int64_t T = n_rows;

  // Queries [T][H][qk].
  std::vector<float> q(T * H * qk);
  if (c.q_lora_rank > 0) {
    std::vector<float> cq(T * c.q_lora_rank);
    MatMul(w.attn_q_a, h, T, cq.data(), pool, precision);
    RmsNorm(cq.data(), T, c.q_lora_rank, w.attn_q_a_norm.data(), c.rms_eps, cq.data());
    MatMul(w.attn_q_b, cq.data(), T, q.data(), pool, precision);
  } else {
    MatMul(w.attn_q, h, T, q.data(), pool, precision);
  }
  // Latent rows [T][L]: RoPE on k_pe before the norm on the latent (the norm does not touch it).
  std::vector<float> kv_new(T * L);
  MatMul(w.attn_kv_a_mqa, h, T, kv_new.data(), pool, precision);
  RmsNorm(kv_new.data(), L, T, R, w.attn_kv_a_norm.data(), c.rms_eps, kv_new.data(), L);
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
  std::vector<float> kv(kv_off.back() * L);
  for (size_t s = 0; s < seqs.size(); ++s) {
    seqs[s].cache->Read(il, 0, kv_off[s + 1] - kv_off[s], &kv[kv_off[s] * L]);
  }

  // One query row: its sequence and position.
  struct QueryRow {
    int64_t t;       // step row
    int64_t kv;      // offset of its sequence's rows in kv (and in naive decompressed buffers)
    int64_t n_keys;  // causal: positions [0, pos]
    int64_t naive_off;
  };
  std::vector<QueryRow> absorbed, naive;
  int64_t naive_keys = 0;
  std::vector<int64_t> naive_seq_off(seqs.size(), -1);
  for (size_t s = 0; s < seqs.size(); ++s) {
    const AttentionSeq& sq = seqs[s];
    if (!sq.absorbed) {
      naive_seq_off[s] = naive_keys;
      naive_keys += kv_off[s + 1] - kv_off[s];
    }
    for (int64_t i = 0; i < sq.n_new; ++i) {
      QueryRow r{sq.row_begin + i, kv_off[s], sq.n_past + i + 1, naive_seq_off[s]};
      (sq.absorbed ? absorbed : naive).push_back(r);
    }
  }
  int64_t max_keys = 1;
  for (size_t s = 0; s < seqs.size(); ++s) max_keys = std::max(max_keys, kv_off[s + 1] - kv_off[s]);
  std::vector<std::vector<float>> scratch(pool.size(), std::vector<float>(max_keys));

  std::vector<float> o(T * H * V, 0.0f);  // per-head outputs [T][H][V]

  if (!absorbed.empty()) {
    const int64_t Ta = absorbed.size();
    std::vector<float> q_abs(Ta * H * R), o_lat(Ta * H * R);
    std::vector<float> in(Ta * std::max(nope, R)), res(Ta * std::max(R, V));
    for (int64_t hd = 0; hd < H; ++hd) {
      for (int64_t a = 0; a < Ta; ++a) {
        std::memcpy(&in[a * nope], &q[(absorbed[a].t * H + hd) * qk], nope * 4);
      }
      if (c.kv_layout == KvProjLayout::kSplit) {
        MatMul(w.attn_k.At(hd), in.data(), Ta, res.data(), pool, precision);
      } else {
        TransposedMatMul(w.attn_k.At(hd), in.data(), Ta, res.data(), pool);
      }
      ScatterCols(res.data(), Ta, R, q_abs.data(), H * R, hd * R);
    }
    pool.ParallelFor(
        Ta * H, Grain(max_keys * (L + R)), [&](int64_t begin, int64_t end, int thread) {
          float* sc = scratch[thread].data();
          for (int64_t item = begin; item < end; ++item) {
            const QueryRow& r = absorbed[item / H];
            const int64_t hd = item % H;
            const float* qa = &q_abs[item * R];
            const float* qp = &q[(r.t * H + hd) * qk + nope];
            const float* keys = &kv[r.kv * L];
            for (int64_t j = 0; j < r.n_keys; ++j) {
              sc[j] = kq_scale * (Dot(qa, keys + j * L, R) + Dot(qp, keys + j * L + R, nrot));
            }
            Softmax(sc, r.n_keys);
            float* ol = &o_lat[item * R];
            std::fill(ol, ol + R, 0.0f);
            for (int64_t j = 0; j < r.n_keys; ++j) {
              const float p = sc[j];
              const float* lat = keys + j * L;
              for (int64_t d = 0; d < R; ++d) ol[d] += p * lat[d];
            }
          }
        });
    for (int64_t hd = 0; hd < H; ++hd) {
      GatherCols(o_lat.data(), H * R, hd * R, Ta, R, in.data());
      MatMul(w.attn_v.At(hd), in.data(), Ta, res.data(), pool, precision);
      for (int64_t a = 0; a < Ta; ++a) {
        std::memcpy(&o[(absorbed[a].t * H + hd) * V], &res[a * V], V * 4);
      }
    }
  }

  if (!naive.empty()) {
    const int64_t N = naive_keys;
    std::vector<float> lat(N * R);
    for (size_t s = 0; s < seqs.size(); ++s) {
      if (seqs[s].absorbed) continue;
      GatherCols(&kv[kv_off[s] * L], L, 0, kv_off[s + 1] - kv_off[s], R,
                 &lat[naive_seq_off[s] * R]);
    }
    std::vector<float> k_nope(N * nope), v(N * V);
    for (int64_t hd = 0; hd < H; ++hd) {
      if (c.kv_layout == KvProjLayout::kSplit) {
        TransposedMatMul(w.attn_k.At(hd), lat.data(), N, k_nope.data(), pool);
      } else {
        MatMul(w.attn_k.At(hd), lat.data(), N, k_nope.data(), pool, precision);
      }
      MatMul(w.attn_v.At(hd), lat.data(), N, v.data(), pool, precision);
      pool.ParallelFor(
          naive.size(), Grain(max_keys * (qk + V)), [&](int64_t begin, int64_t end, int thread) {
            float* sc = scratch[thread].data();
            for (int64_t item = begin; item < end; ++item) {
              const QueryRow& r = naive[item];
              const float* qn = &q[(r.t * H + hd) * qk];
              const float* qp = qn + nope;
              const float* kn = &k_nope[r.naive_off * nope];
              const float* kp = &kv[r.kv * L + R];
              for (int64_t j = 0; j < r.n_keys; ++j) {
                sc[j] = kq_scale * (Dot(qn, kn + j * nope, nope) + Dot(qp, kp + j * L, nrot));
              }
              Softmax(sc, r.n_keys);
              float* ot = &o[(r.t * H + hd) * V];
              const float* vs = &v[r.naive_off * V];
              for (int64_t j = 0; j < r.n_keys; ++j) {
                const float p = sc[j];
                for (int64_t d = 0; d < V; ++d) ot[d] += p * vs[j * V + d];
              }
            }
          });
    }
  }

  MatMul(w.attn_output, o.data(), T, out, pool, precision);
}

}  // namespace tritmoe
