// MatMul: activations are packed (quantized) once per call, then each thread takes a contiguous
// range of weight rows and, for every row (or tile of kMaxRowTile rows, for kernels with a tile
// function), runs the dot kernel over tiles of up to kMaxTokenTile tokens, so a weight row is read
// from memory once per block of tokens.
#include "experts/matmul.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "base/check.h"
#include "experts/matmul_kernels.h"
#include "experts/matmul_packed.h"
#include "experts/matmul_repack.h"

namespace tritmoe {
namespace {

using matmul_internal::ActiveKernels;
using matmul_internal::KernelsFor;
using matmul_internal::kMaxRowTile;
using matmul_internal::kMaxTokenTile;
using matmul_internal::TileArgs;
using matmul_internal::TypeKernels;

constexpr int64_t kAlign = 64;
// Tokens whose packed activations are kept hot (in L2) while a thread sweeps its rows; a weight
// row is re-read from memory once per such block.
constexpr int64_t kActBlockBytes = 256 << 10;
// Packed activation bytes of one token tile that one column pass may touch (2/3 of a 48 KiB L1),
// but never passes so short that the weight rows are read in small pieces.
constexpr int64_t kL1ActBytes = 32 << 10;
constexpr int64_t kMinChunkCols = 2048;

int64_t RoundUp(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

const TypeKernels& KernelsOrDie(MatmulIsa isa, GgmlType type, WeightLayout layout) {
  TM_CHECK(LayoutSupports(layout, type)) << "MatMul: weights of type " << GetTypeTraits(type).name
                                         << " in layout " << static_cast<int>(layout);
  const TypeKernels& k = KernelsFor(isa).For(type, layout);
  TM_CHECK(k.dot != nullptr || k.tile != nullptr)
      << "MatMul: no kernel for type " << GetTypeTraits(type).name;
  return k;
}

// The kernel set for weights in `layout` with activations of `precision` (the float path decodes
// any layout to float32 rows).
const TypeKernels& KernelsOrDie(MatmulIsa isa, GgmlType type, WeightLayout layout,
                                ActPrecision precision) {
  return precision == ActPrecision::kFloat ? KernelsOrDie(isa, GgmlType::kF32, WeightLayout::kGguf)
                                           : KernelsOrDie(isa, type, layout);
}

// Elements and bytes of one weight block in `layout`.
struct BlockShape {
  int64_t elems;
  int64_t bytes;
};
BlockShape WeightBlock(GgmlType type, WeightLayout layout) {
  const TypeTraits& traits = GetTypeTraits(type);
  return {traits.block_elems, LayoutRowBytes(type, layout, traits.block_elems)};
}

}  // namespace

void PackedActivations::FreeDeleter::operator()(uint8_t* p) const { std::free(p); }

void PackedActivations::Pack(GgmlType weight_type, const float* x, int64_t n_tokens, int64_t cols,
                             ThreadPool* pool, ActPrecision precision, WeightLayout layout) {
  const TypeTraits& traits = GetTypeTraits(weight_type);
  TM_CHECK(cols % traits.block_elems == 0) << "MatMul: " << cols << " columns is not a multiple of "
                                           << traits.name << "'s block of " << traits.block_elems;
  weight_type_ = weight_type;
  layout_ = layout;
  precision_ = precision;
  isa_ = ActiveMatmulIsa();
  n_tokens_ = n_tokens;
  cols_ = cols;
  const TypeKernels& k = KernelsOrDie(isa_, weight_type, layout, precision);
  const int64_t blocks = cols / k.act_block_elems;
  scale_offset_ = blocks * k.act_block_bytes;
  stride_ = RoundUp(scale_offset_ + (k.act_scales ? blocks * int64_t{sizeof(float)} : 0), kAlign);
  const int64_t need = std::max<int64_t>(kAlign, stride_ * n_tokens);
  if (need > capacity_) {
    data_.reset(static_cast<uint8_t*>(std::aligned_alloc(kAlign, RoundUp(need, kAlign))));
    TM_CHECK(data_ != nullptr) << "MatMul: out of memory packing activations";
    capacity_ = need;
  }
  uint8_t* base = data_.get();
  auto pack = [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t) k.pack(x + t * cols, cols, base + t * stride_);
  };
  if (pool != nullptr && n_tokens > 1) {
    pool->ParallelFor(n_tokens, 1, pack);
  } else {
    pack(0, n_tokens, 0);
  }
}

void MatMulPacked(const WeightView& w, const PackedActivations& x, float* y, ThreadPool& pool) {
  const bool as_float = x.precision() == ActPrecision::kFloat;
  TM_CHECK((x.weight_type() == w.type && x.layout() == w.layout) || as_float)
      << "MatMul: activations packed for " << GetTypeTraits(x.weight_type()).name << " layout "
      << static_cast<int>(x.layout()) << ", weights are " << GetTypeTraits(w.type).name
      << " layout " << static_cast<int>(w.layout);
  TM_CHECK(x.cols() == w.cols) << "MatMul: " << x.cols() << " activation columns, " << w.cols
                               << " weight columns";
  const int64_t rows = w.rows, cols = w.cols, n_tokens = x.n_tokens();
  if (rows == 0 || n_tokens == 0) return;
  const TypeKernels& k = KernelsOrDie(x.isa(), w.type, w.layout, x.precision());
  const BlockShape block = WeightBlock(w.type, w.layout);
  const int64_t row_bytes = LayoutRowBytes(w.type, w.layout, cols);
  const auto* wbase = static_cast<const uint8_t*>(w.data);
  const int64_t stride = x.stride();
  const int64_t tok_block = std::max<int64_t>(kMaxTokenTile, kActBlockBytes / stride);
  // Columns per pass: one token tile's activations for a pass stay in L1 while the thread sweeps
  // its rows (a whole 7168-column row of 8 tokens would not). A multiple of both block sizes.
  const int64_t tile = std::min<int64_t>(n_tokens, kMaxTokenTile);
  const int64_t unit = std::max<int64_t>(block.elems, k.act_block_elems);
  const int64_t fit = kL1ActBytes / (tile * k.act_block_bytes) * k.act_block_elems;
  const int64_t chunk =
      as_float ? cols : std::min(cols, std::max(kMinChunkCols, fit) / unit * unit);

  if (k.tile != nullptr && !as_float) {
    pool.ParallelFor(rows, 16, [&](int64_t r0, int64_t r1, int) {
      for (int64_t t0 = 0; t0 < n_tokens; t0 += tok_block) {
        const int64_t t1 = std::min(n_tokens, t0 + tok_block);
        for (int64_t c0 = 0; c0 < cols; c0 += chunk) {
          const int64_t b0 = c0 / k.act_block_elems;
          TileArgs a;
          a.n_blocks = std::min(chunk, cols - c0) / k.act_block_elems;
          a.w_stride = row_bytes;
          a.w_end = wbase + rows * row_bytes;
          a.act_stride = stride;
          a.out_stride = rows;
          a.accumulate = c0 > 0;
          for (int64_t r = r0; r < r1; r += kMaxRowTile) {
            a.w = wbase + r * row_bytes + c0 / block.elems * block.bytes;
            a.n_rows = static_cast<int>(std::min<int64_t>(kMaxRowTile, r1 - r));
            for (int64_t t = t0; t < t1; t += kMaxTokenTile) {
              const uint8_t* act_row = x.data() + t * stride;
              a.act = act_row + b0 * k.act_block_bytes;
              a.act_scale = k.act_scales
                                ? reinterpret_cast<const float*>(act_row + x.scale_offset()) + b0
                                : nullptr;
              a.n_tok = static_cast<int>(std::min<int64_t>(kMaxTokenTile, t1 - t));
              a.out = y + t * rows + r;
              k.tile(a);
            }
          }
        }
      }
    });
    return;
  }

  pool.ParallelFor(rows, 16, [&](int64_t r0, int64_t r1, int) {
    std::vector<float> decoded(as_float ? cols : 0);
    float out[kMaxTokenTile];
    for (int64_t t0 = 0; t0 < n_tokens; t0 += tok_block) {
      const int64_t t1 = std::min(n_tokens, t0 + tok_block);
      for (int64_t c0 = 0; c0 < cols; c0 += chunk) {
        const int64_t nc = std::min(chunk, cols - c0);
        const int64_t w_off = c0 / block.elems * block.bytes;
        const int64_t a_off = c0 / k.act_block_elems * k.act_block_bytes;
        for (int64_t r = r0; r < r1; ++r) {
          const void* wrow = wbase + r * row_bytes + w_off;
          if (as_float) {
            DequantizeLayoutRow(w.type, w.layout, wrow, decoded.data(), cols);
            wrow = decoded.data();
          }
          for (int64_t t = t0; t < t1; t += kMaxTokenTile) {
            const int nt = static_cast<int>(std::min<int64_t>(kMaxTokenTile, t1 - t));
            k.dot(nc, wrow, x.data() + t * stride + a_off, stride, nt, out);
            if (c0 == 0) {
              for (int i = 0; i < nt; ++i) y[(t + i) * rows + r] = out[i];
            } else {
              for (int i = 0; i < nt; ++i) y[(t + i) * rows + r] += out[i];
            }
          }
        }
      }
    }
  });
}

void MatMul(const WeightView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            ActPrecision precision) {
  // One scratch per calling thread, so repeated calls do not allocate.
  thread_local PackedActivations packed;
  packed.Pack(w, x, n_tokens, &pool, precision);
  MatMulPacked(w, packed, y, pool);
}

}  // namespace tritmoe
