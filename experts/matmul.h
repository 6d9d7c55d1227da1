// Quantized matrix products on the CPU: Y = X * W^T for a weight matrix W stored in any supported
// type. Runtime dispatch picks AVX-512 (VNNI) or AVX2 kernels; a scalar path remains for reference.
//
// Weight layouts. MatMul reads GGUF tensor bytes as they are (WeightLayout::kGguf). For IQ1_S the
// CPU kernels are limited by the grid lookups of that format, so experts/matmul_repack.h offers a
// lossless CPU layout (kIq1sQuads, 64 bytes per 256 weights instead of 50: +28% RAM for the copy)
// that MatMul reads about 3x faster on AVX-512 (docs/PERF.md). TQ1_0's base-3 unpacking makes its
// kernels compute-bound, so TQ1_0 weights can be copied into TQ2_0 blocks (kTq1AsTq2, 66 bytes per
// 256 weights instead of 54: +22%), which the TQ2_0 kernels read at memory speed. Repacking is
// optional and explicit: the caller (the model loader) asks PreferredCpuLayout(type) and calls
// RepackWeights once at load time, keeps the RepackedWeights alive for as long as it multiplies
// with them, and passes its view() here. MatMul never repacks on its own, and results do not depend
// on the layout beyond float rounding (the integer sums are identical; the GGUF bytes stay the
// source of truth and can be recovered exactly, UnpackWeights).
#pragma once

#include <cstdint>

#include "base/thread_pool.h"
#include "experts/quant_type.h"

namespace tritmoe {

enum class WeightLayout {
  kGguf,       // GGUF tensor bytes: rows of RowBytes(type, cols), rows contiguous
  kIq1sQuads,  // IQ1_S only: rows of cols / 256 blocks of 64 bytes (experts/matmul_iq1s_quads.h)
  kTq1AsTq2,   // TQ1_0 only: rows of cols / 256 TQ2_0 blocks (66 bytes) holding the same ternary
               // values and fp16 scale; MatMul runs the TQ2_0 kernels on them
};

// A weight matrix: `rows` rows (ne1) of `cols` elements (ne0), rows contiguous, each row
// LayoutRowBytes(type, layout, cols) bytes (experts/matmul_repack.h; RowBytes for kGguf).
struct WeightView {
  GgmlType type = GgmlType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  WeightLayout layout = WeightLayout::kGguf;
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
