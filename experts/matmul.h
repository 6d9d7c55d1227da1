// Quantized matrix products on the CPU: Y = X * W^T for a weight matrix W stored in any supported
// type. Runtime dispatch picks AVX-512 (VNNI) or AVX2 kernels; a scalar path remains for reference.
#pragma once

#include <cstdint>

#include "base/thread_pool.h"
#include "experts/quant_type.h"

namespace tritmoe {

// A weight matrix as it lies in a GGUF tensor: `rows` rows (ne1) of `cols` elements (ne0), each
// row RowBytes(type, cols) bytes, rows contiguous.
struct WeightView {
  GgmlType type = GgmlType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
};

enum class ActPrecision {
  // Activations are quantized to the weight type's dot-product format (Q8_K for K/IQ/TQ types,
  // Q8_0 for Q4_0/Q8_0) and multiplied in integers, as llama.cpp's CPU backend does. Fast.
  kQuantized,
  // Weights are decoded to float32 and multiplied with float32 activations: the reference path.
  kFloat,
};

// y[t * rows + r] = sum_c W[r][c] * x[t * cols + c]  for t < n_tokens, r < rows.
// x: [n_tokens][cols] float32; y: [n_tokens][rows] float32. cols must be a multiple of the
// type's block size. Parallel over rows on `pool`.
void MatMul(const WeightView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            ActPrecision precision = ActPrecision::kQuantized);

}  // namespace tritmoe
