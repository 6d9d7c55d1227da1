// Quantized GEMV / small-batch GEMM on the GPU for decode: dense matrices and the grouped
// (per-expert) variant used for routed MoE experts. Plain C++ header: no CUDA types (streams are
// passed as an opaque `void*` holding a cudaStream_t; nullptr = the legacy default stream), so
// code built without CUDA can include it.
//
// Flow:
//   1. At load time, repack each weight matrix (each expert slice of a 3-D expert tensor) from
//      its GGUF rows into the GPU tile layout with RepackForGpu, and upload it.
//   2. Per call, QuantizeActivationsGpu turns the float activations into int8 blocks (one scale
//      per 256 columns) in a caller-owned workspace; several matrices that read the same x
//      (gate and up) share one quantization.
//   3. GpuGemv (dense) or GpuExpertGemv (grouped) multiplies. Both are one kernel launch, need
//      no host synchronization and can be captured in a CUDA graph.
//
// Supported weight types: IQ1_S, TQ1_0, TQ2_0, IQ2_XXS, Q4_K, Q6_K, Q8_0. Columns must be a
// multiple of 256; any number of rows.
//
// Accuracy: activations are quantized to int8 with one scale d_kb = max|x in block kb| / 127 per
// 256 columns (like llama.cpp's Q8_K); everything after that is exact int32 arithmetic per 256
// columns and float32 accumulation. Hence, rigorously,
//   |y[t][r] - sum_c W[r][c] x[t][c]| <= sum_c |W[r][c]| * d_kb(c) / 2  (+ ~1e-6 relative),
// and for typical data the relative error of y is ~0.5% (the test requires < 2%).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "experts/quant_type.h"

namespace tritmoe {

// Whether the GPU GEMV handles weights of this type.
bool GpuGemvSupports(GgmlType type);

// Bytes of a rows x cols matrix in the GPU tile layout (rows rounded up to 16).
absl::StatusOr<int64_t> GpuWeightBytes(GgmlType type, int64_t rows, int64_t cols);

// Host-side conversion of `rows` GGUF rows (RowBytes(type, cols) bytes each, contiguous) into the
// GPU tile layout; dst holds GpuWeightBytes(type, rows, cols) bytes. Single-threaded; callers
// parallelize with RepackRowsForGpu, which writes only the tiles of rows [row_begin, row_end)
// (whole 16-row groups: row_begin % 16 == 0, row_end % 16 == 0 or row_end == rows) into the
// full-size dst.
absl::Status RepackForGpu(GgmlType type, const void* src, int64_t rows, int64_t cols, void* dst);
absl::Status RepackRowsForGpu(GgmlType type, const void* src, int64_t rows, int64_t cols,
                              int64_t row_begin, int64_t row_end, void* dst);

// The inverse (for tests and debugging): GGUF rows from the tile layout. Byte-identical to the
// original for every type except TQ1_0, whose base-3 bytes are rewritten canonically (the same
// trits, so DequantizeRow gives the same values).
absl::Status UnpackGpuLayout(GgmlType type, const void* packed, int64_t rows, int64_t cols,
                             void* dst);

// A weight matrix (or a stack of expert matrices) on the device, in the GPU tile layout.
struct GpuWeightView {
  GgmlType type = GgmlType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int n_experts = 1;
  int64_t expert_stride_bytes = 0;  // >= GpuWeightBytes(type, rows, cols) when n_experts > 1
};

// Quantized activations in a caller-owned device workspace. The layout is per row, so the first
// k rows of a quantized batch are a valid GpuActivations with n_rows = k.
struct GpuActivations {
  const void* data = nullptr;
  int64_t n_rows = 0;
  int64_t cols = 0;
};

// Workspace bytes for quantizing n_rows activation rows of `cols` columns.
int64_t GpuActivationBytes(int64_t n_rows, int64_t cols);

// x: device [n_rows][cols] float32 (16-byte aligned). Enqueues one kernel on `stream`.
absl::Status QuantizeActivationsGpu(const float* x, int64_t n_rows, int64_t cols, void* workspace,
                                    int64_t workspace_bytes, void* stream, GpuActivations* out);

// As QuantizeActivationsGpu of x[r][c] = silu(gu[r][c]) * gu[r][n_ff + c], c < n_ff (the SwiGLU
// of a gate ‖ up product, gu: device [n_rows][2 * n_ff], n_ff % 256 == 0), in one kernel: the
// records are bit-identical to SwiGLU followed by QuantizeActivationsGpu.
absl::Status QuantizeSwiGluActivationsGpu(const float* gu, int64_t n_rows, int64_t n_ff,
                                          void* workspace, int64_t workspace_bytes, void* stream,
                                          GpuActivations* out);

// Dense: y[t][r] = sum_c W[r][c] * x[t][c] for every activation row t; y: device
// [x.n_rows][y_stride] float32 (y_stride = 0 means w.rows). Any number of rows (MMA batches of
// 8 in one launch; decode batches of 1..8 read the weights once). w.n_experts must be 1.
absl::Status GpuGemv(const GpuWeightView& w, const GpuActivations& x, float* y, void* stream,
                     int64_t y_stride = 0);

// Grouped experts (decode-time routed MoE): the (token, expert) pairs sorted by expert, CSR-style.
struct GpuExpertRouting {
  const int32_t* expert_offsets = nullptr;  // device [n_experts + 1]; pairs of expert e are
                                            // [offsets[e], offsets[e+1])
  const int32_t* x_rows = nullptr;  // device [n_pairs]: activation row of each pair, or nullptr
                                    // when pair p reads activation row p (e.g. down projections)
  int max_pairs_per_expert = 0;     // host upper bound on offsets[e+1] - offsets[e] (sizes the
                                    // grid; e.g. the number of tokens for top-k routing). Pairs
                                    // beyond it are not computed. x_rows[p] < x.n_rows.
  const int32_t* y_rows = nullptr;  // device [n_pairs]: output row of each pair, or nullptr when
                                    // pair p writes output row p (scatter, e.g. heads -> [t][h])
  // Host count of all pairs, or 0 if unknown. Only picks the kernel: below 8 pairs per expert on
  // average most experts have one 8-token chunk, and the one-chunk kernels are faster there even
  // when max_pairs_per_expert allows more (decode batches; docs/PERF.md).
  int64_t total_pairs = 0;
  // Expert cache (runtime/gpu/gpu_expert_cache.h): device [n_experts]: expert e's weights are
  // matrix expert_slot[e] of w (a slot array), and experts with expert_slot[e] < 0 are skipped
  // (their output rows untouched). nullptr: expert e is matrix e (every expert resident).
  const int32_t* expert_slot = nullptr;
};

// y[y_rows[p]][r] = sum_c W_e[r][c] * x[x_rows[p]][c] for each expert e and pair p of e; y:
// device [n_pairs][y_stride] float32 (rows as given by y_rows when set). One launch for all
// experts; experts without pairs cost almost nothing. The expert weights are w.data + e *
// w.expert_stride_bytes (e replaced by routing.expert_slot[e] when given).
absl::Status GpuExpertGemv(const GpuWeightView& w, const GpuActivations& x,
                           const GpuExpertRouting& routing, float* y, void* stream,
                           int64_t y_stride = 0);

}  // namespace tritmoe
