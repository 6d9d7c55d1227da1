#include "runtime/model/ffn.h"

#include <cmath>
#include <vector>

namespace tritmoe {

void SwiGluFfn(const FfnWeights& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
               ActPrecision precision) {
  if (n_tokens == 0) return;
  const int64_t n_ff = w.gate.rows;
  std::vector<float> gate(n_tokens * n_ff);
  std::vector<float> up(n_tokens * n_ff);
  MatMul(w.gate, x, n_tokens, gate.data(), pool, precision);
  MatMul(w.up, x, n_tokens, up.data(), pool, precision);
  for (int64_t i = 0; i < n_tokens * n_ff; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
  MatMul(w.down, gate.data(), n_tokens, y, pool, precision);
}

}  // namespace tritmoe
