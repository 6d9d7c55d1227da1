#include "runtime/model/embedding.h"

#include "experts/dequantize.h"
#include "runtime/model/rms_norm.h"

namespace tritmoe {

void EmbedTokens(const WeightView& table, const int32_t* tokens, int64_t n_tokens, float* x) {
  const int64_t row_bytes = RowBytes(table.type, table.cols);
  const uint8_t* base = static_cast<const uint8_t*>(table.data);
  for (int64_t t = 0; t < n_tokens; ++t) {
    DequantizeRow(table.type, base + tokens[t] * row_bytes, x + t * table.cols, table.cols);
  }
}

void LmHead(const WeightView& output, const float* norm, float eps, const float* x, int64_t n,
            float* logits, ThreadPool& pool, ActPrecision precision, Workspace& ws) {
  if (n == 0) return;
  float* h = ws.Get(Buf::kLmNorm, n * output.cols);
  RmsNorm(x, n, output.cols, norm, eps, h);
  MatMul(output, h, n, logits, pool, precision);
}

}  // namespace tritmoe
