// Internal interface between the absl-based host wrapper (quant_gemv.cc) and the kernels
// (quant_gemv.cu). C++17 and absl-free because nvcc compiles the .cu side as C++17. Callers use
// experts/cuda/quant_gemv.h instead.
//
// GPU weight layout ("tiled"): a matrix of `rows` x `cols` (cols % 256 == 0) is cut into tiles of
// 16 rows x 256 columns; tile (row group rg, column block kb) lies at byte
// (rg * cols / 256 + kb) * TileBytes(type). A tile holds exactly the bytes of its 16 GGUF blocks
// (rows padded to a multiple of 16 with zero blocks), rearranged so that each lane of a warp finds
// the operands of its m16n8k32 MMA fragments in a few aligned 16-, 8- or 4-byte loads. The exact
// per-type layouts are documented in gpu_layout.cc, which implements them on the host.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace tritmoe::gpu_internal {

inline constexpr int kTileRows = 16;
inline constexpr int kTileCols = 256;

// ggml type ids (experts/quant_type.h cannot be included here: it pulls in absl).
inline constexpr uint32_t kTypeQ4_K = 12;
inline constexpr uint32_t kTypeQ6_K = 14;
inline constexpr uint32_t kTypeQ8_0 = 8;
inline constexpr uint32_t kTypeIQ2_XXS = 16;
inline constexpr uint32_t kTypeIQ1_S = 19;
inline constexpr uint32_t kTypeTQ1_0 = 34;
inline constexpr uint32_t kTypeTQ2_0 = 35;

// Bytes of one 16 x 256 tile (= 16 x the GGUF bytes of 256 elements), or 0 for types the GPU
// GEMV does not handle.
constexpr int TileBytes(uint32_t type_id) {
  switch (type_id) {
    case kTypeIQ1_S:
      return 16 * 50;
    case kTypeTQ1_0:
      return 16 * 54;
    case kTypeTQ2_0:
      return 16 * 66;
    case kTypeIQ2_XXS:
      return 16 * 66;
    case kTypeQ4_K:
      return 16 * 144;
    case kTypeQ6_K:
      return 16 * 210;
    case kTypeQ8_0:
      return 16 * 8 * 34;
    default:
      return 0;
  }
}

// Quantized activations, written once per call by LaunchQuantizeActivations and read by every
// warp. One 304-byte record per activation row and 256-column block kb, at
// base + (row * cols / 256 + kb) * 304 (so any leading subset of rows is itself valid):
//   [0,256)   q: 256 int8 in lane order: byte t*64 + ib*8 + j holds column ib*32 + t*8 + j
//             (ib = 32-column sub-block, t = MMA thread-in-group, j = 0..7), so that lane (g, t)
//             loads its B fragments of all 8 sub-blocks with four 16-byte loads;
//   [256,288) qs: the per-sub-block sums qsum_ib = lo + 128 * hi (lo in [0,127], hi in [-32,31])
//             as B operands of the correction MMA: bytes t*8 + 0..3 = {lo_2t, lo_2t, lo_2t+1,
//             lo_2t+1}, bytes t*8 + 4..7 = the same for hi;
//   [288,296) meta: {float d, int32 sum}: x ~= d * q with d = max|x| / 127, sum = sum of the q;
//   [296,304) unused (keeps records 16-byte aligned).
inline constexpr int kActRecordBytes = 304;
inline constexpr int kActQsOffset = 256;
inline constexpr int kActMetaOffset = 288;

inline size_t ActWorkspaceBytes(int64_t n_rows, int64_t cols) {
  return static_cast<size_t>(n_rows * (cols / kTileCols) * kActRecordBytes);
}

// One launch of the (grouped) GEMV: for every expert e and every pair p in
// [offsets[e], offsets[e+1]): y[y_rows[p]][r] = sum_c W_e[r][c] * x[x_rows[p]][c], r < rows.
// Dense use: offsets == nullptr, n_experts == 1, pairs are 0..n_tokens-1.
struct GemvLaunch {
  uint32_t type_id = 0;
  const void* w = nullptr;    // tiled layout; expert e at w + e * expert_stride
  int64_t expert_stride = 0;  // bytes
  int rows = 0;
  int cols = 0;
  int n_experts = 1;
  const int32_t* offsets = nullptr;  // device [n_experts + 1] or nullptr
  const int32_t* x_rows = nullptr;   // device [pairs] or nullptr (pair p reads activation row p)
  const int32_t* y_rows = nullptr;   // device [pairs] or nullptr (pair p writes output row p)
  // Grouped only: device [n_experts]: expert e's weights are at w + expert_slot[e] *
  // expert_stride, and experts with expert_slot[e] < 0 are skipped (their outputs untouched);
  // nullptr: expert e at w + e * expert_stride.
  const int32_t* expert_slot = nullptr;
  int n_tokens = 0;               // pairs when offsets == nullptr
  int max_tokens_per_expert = 0;  // upper bound of offsets[e+1] - offsets[e]; sizes the grid
  int64_t total_pairs = 0;        // grouped: all pairs if known (else 0); picks the kernel
  const uint8_t* act = nullptr;   // activation records (see above)
  float* y = nullptr;             // [pairs][y_stride]
  int64_t y_stride = 0;           // floats between output rows (>= rows)
};

cudaError_t LaunchQuantizeActivations(const float* x, int64_t n_rows, int cols, uint8_t* act,
                                      cudaStream_t stream);
// As LaunchQuantizeActivations of x[r][c] = silu(gu[r][c]) * gu[r][n_ff + c] (gu: [n_rows][2 *
// n_ff], n_ff % 256 == 0): SwiGLU folded into the quantization, records bit-identical to a
// SwiGLU kernel followed by LaunchQuantizeActivations.
cudaError_t LaunchQuantizeSwiGlu(const float* gu, int64_t n_rows, int n_ff, uint8_t* act,
                                 cudaStream_t stream);
cudaError_t LaunchGemv(const GemvLaunch& launch, cudaStream_t stream);

// Forces the kernel variant of later launches: 0 automatic, 1 split-K (few items: every warp of
// a CTA takes different column blocks of the same rows), 2 / 3 pipelined with 4 / 8 warps
// (many items: cp.async stages, a warp per 16-row group), 4 split-K over up to 4 token chunks
// per weight read, each tile decoded once for all of them (the automatic choice with more than 8
// tokens per matrix; launches of one chunk fall back to split-K). For tests and benchmarks.
void SetGemvKernelForTesting(int choice);

// Forces the IQ1_S tile decoder of later launches: 0 lean with two row groups per warp of the
// pipelined kernel decoded interleaved (default), 1 nibble (the first decoder, for comparisons),
// 2 lean with one row group per warp, 3 lean with two row groups per warp decoded one after the
// other. All read the same tile layout and give bit-identical results.
void SetIq1sDecoderForTesting(int choice);

// Forces the IQ2_XXS tile decoder of later launches: 0 lean with two row groups per warp of the
// pipelined kernel decoded interleaved (default), 1 the first decoder (for comparisons), 2 lean
// with one row group per warp, 3 lean with two row groups per warp decoded one after the other.
// All read the same tile layout and give bit-identical results.
// For each setter here, -1 restores the default (TRITMOE_* from the environment, else built in).
void SetIq2xxsDecoderForTesting(int choice);

}  // namespace tritmoe::gpu_internal
