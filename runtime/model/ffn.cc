#include "runtime/model/ffn.h"

#include <cmath>

namespace tritmoe {

void SwiGluFfn(const FfnWeights& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
               ActPrecision precision, Workspace& ws) {
  if (n_tokens == 0) return;
  const int64_t n_ff = w.gate.rows;
  float* gate = ws.Get(Buf::kFfnGate, n_tokens * n_ff);
  float* up = ws.Get(Buf::kFfnUp, n_tokens * n_ff);
  MatMul(w.gate, x, n_tokens, gate, pool, precision);
  MatMul(w.up, x, n_tokens, up, pool, precision);
  for (int64_t i = 0; i < n_tokens * n_ff; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
  MatMul(w.down, gate, n_tokens, y, pool, precision);
}

}  // namespace tritmoe
