// Internal interface between MatMul (experts/matmul.cc) and the per-ISA kernel sets
// (matmul_scalar.cc, matmul_avx2.cc, matmul_avx512.cc). Not for use outside experts/.
//
// For each weight type an ISA provides:
//   pack: turns one float32 activation row into the kernel's activation format (Q8_K, Q8_0, a
//         re-ordered Q8_K variant, or float32), written to a 64-byte-aligned buffer;
//   dot:  the dot products of ONE weight row with up to kMaxTokenTile packed activation rows;
//   tile: optional, replaces dot: a tile of up to kMaxRowTile rows x kMaxTokenTile tokens per call
//         (single-token products are bound by per-row overheads and activation loads otherwise).
// Every pack function quantizes with QuantizeRowQ8K / QuantizeRowQ8_0 first, so all ISAs see the
// same integers; they differ only in layout and in the order of the final float operations.
#pragma once

#include <cstddef>
#include <cstdint>

#include "experts/matmul.h"
#include "experts/matmul_isa.h"
#include "experts/quant_type.h"

namespace tritmoe::matmul_internal {

// Tokens handled per weight-row pass of a dot kernel.
inline constexpr int kMaxTokenTile = 8;
// Weight rows per call of a tile kernel.
inline constexpr int kMaxRowTile = 8;
// ggml type ids are < 36 for every supported type; the table is indexed by id.
inline constexpr int kTypeSlots = 36;

// out[t] = dot(weight row w, activation row t) for t < n_tok (1 <= n_tok <= kMaxTokenTile).
// n: elements in the row; act: packed row 0, rows act_stride bytes apart.
using RowDotFn = void (*)(int64_t n, const void* w, const void* act, int64_t act_stride, int n_tok,
                          float* out);
// Packs one activation row of n float32 values into dst (act_block_bytes per act_block_elems).
using PackActFn = void (*)(const float* x, int64_t n, void* dst);

// The dot products of weight rows r < n_rows with tokens t < n_tok over n_blocks blocks of
// 256 elements (the kernels with a tile function all have 256-element weight blocks).
struct TileArgs {
  int64_t n_blocks = 0;
  const uint8_t* w = nullptr;        // weight row 0 at the first block of the call
  int64_t w_stride = 0;              // bytes between weight rows
  const uint8_t* w_end = nullptr;    // one past the matrix's last byte: loads must not cross it
  int n_rows = 0;                    // 1..kMaxRowTile
  const uint8_t* act = nullptr;      // packed activations of token 0 at the first block
  const float* act_scale = nullptr;  // token 0's block scales at the first block (act_scales)
  int64_t act_stride = 0;            // bytes between tokens, for act and act_scale alike
  int n_tok = 0;                     // 1..kMaxTokenTile
  float* out = nullptr;              // out[t * out_stride + r]
  int64_t out_stride = 0;
  bool accumulate = false;  // out += result (a later column pass) instead of out = result
};
using TileDotFn = void (*)(const TileArgs& args);

struct TypeKernels {
  RowDotFn dot = nullptr;
  PackActFn pack = nullptr;
  int act_block_elems = 0;
  int act_block_bytes = 0;
  TileDotFn tile = nullptr;  // when set, MatMul calls it instead of dot
  // pack also writes the activation scale of each block as a float array right after the blocks:
  // at dst + (n / act_block_elems) * act_block_bytes (kernels vectorize over blocks with it).
  bool act_scales = false;
};

struct KernelTable {
  MatmulIsa isa = MatmulIsa::kScalar;
  TypeKernels types[kTypeSlots];  // WeightLayout::kGguf, by type id
  TypeKernels iq1s_quads;         // WeightLayout::kIq1sQuads
  const TypeKernels& For(GgmlType t) const { return types[static_cast<uint32_t>(t)]; }
  TypeKernels& For(GgmlType t) { return types[static_cast<uint32_t>(t)]; }
  // kTq1AsTq2 holds TQ2_0 blocks, so TQ1_0 weights in it take TQ2_0's kernels.
  const TypeKernels& For(GgmlType t, WeightLayout layout) const {
    switch (layout) {
      case WeightLayout::kGguf:
        break;
      case WeightLayout::kIq1sQuads:
        return iq1s_quads;
      case WeightLayout::kTq1AsTq2:
        return For(GgmlType::kTQ2_0);
    }
    return For(t);
  }
};

// The activation block llama.cpp's CPU dot products use for K/IQ/TQ weights (formats.md §2.4).
struct BlockQ8K {
  float d;
  int8_t qs[256];
  int16_t bsums[16];
};
static_assert(sizeof(BlockQ8K) == 292);

// The activation block used with Q4_0 / Q8_0 weights (formats.md §2.2).
struct BlockQ8_0 {
  uint16_t d;  // fp16
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8_0) == 34);

// Each fills every supported type of `table`; the vector ones start from the scalar table and
// replace what they implement. Defined in matmul_{scalar,avx2,avx512}.cc.
void FillScalarKernels(KernelTable* table);
void FillAvx2Kernels(KernelTable* table);
void FillAvx512Kernels(KernelTable* table);

// The kernel table of ActiveMatmulIsa() (built once per ISA, never freed).
const KernelTable& ActiveKernels();
const KernelTable& KernelsFor(MatmulIsa isa);

}  // namespace tritmoe::matmul_internal
