// Weight copies in a CPU layout (see WeightLayout in experts/matmul.h): the choice of layout, the
// lossless repack from GGUF bytes and back, and the row sizes and decoders of every layout.
//
//   if (PreferredCpuLayout(view.type) != WeightLayout::kGguf) {
//     ASSIGN_OR_RETURN(RepackedWeights packed,
//                      RepackWeights(view, PreferredCpuLayout(view.type), &pool));
//     ... MatMul(packed.view(), x, n, y, pool) for the life of `packed` ...
//   }
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "base/thread_pool.h"
#include "experts/matmul.h"
#include "experts/quant_type.h"

namespace tritmoe {

// The layout MatMul reads fastest on this CPU for weights of `type` with the best matmul ISA:
// kIq1sQuads for IQ1_S and kTq1AsTq2 for TQ1_0 when the CPU has AVX-512 VBMI/VNNI, else kGguf
// (no repack pays off).
WeightLayout PreferredCpuLayout(GgmlType type);

// Whether `layout` can hold weights of `type` (kGguf: always).
bool LayoutSupports(WeightLayout layout, GgmlType type);

// Bytes of one row of `cols` elements (a multiple of the type's block size) in `layout`.
int64_t LayoutRowBytes(GgmlType type, WeightLayout layout, int64_t cols);

// A weight matrix copied into a CPU layout; owns its 64-byte aligned bytes.
class RepackedWeights {
 public:
  RepackedWeights() = default;
  RepackedWeights(RepackedWeights&&) = default;
  RepackedWeights& operator=(RepackedWeights&&) = default;

  // The copy, for MatMul; valid while this object lives.
  WeightView view() const { return view_; }
  // Bytes of the copy (the RAM it costs on top of, or instead of, the GGUF bytes).
  int64_t bytes() const { return bytes_; }

 private:
  friend absl::StatusOr<RepackedWeights> RepackWeights(const WeightView&, WeightLayout,
                                                       ThreadPool*);
  struct FreeDeleter {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t[], FreeDeleter> data_;
  WeightView view_;
  int64_t bytes_ = 0;
};

// Copies GGUF-layout weights `w` into `layout`, losslessly (parallel over rows on `pool` when
// given). InvalidArgument when w is not in the GGUF layout, the layout does not apply to w.type,
// or the shape is not whole blocks.
absl::StatusOr<RepackedWeights> RepackWeights(const WeightView& w, WeightLayout layout,
                                              ThreadPool* pool = nullptr);

// Writes the GGUF bytes of `w` (any layout) to `gguf`: rows * RowBytes(w.type, w.cols) bytes. For
// repacked weights these are exactly the bytes they were made from (kTq1AsTq2: for TQ1_0 bytes as
// the quantizer writes them; any other byte comes back as the one that decodes to the same codes).
absl::Status UnpackWeights(const WeightView& w, void* gguf);

// Decodes one row (n elements) stored in `layout` to float32, with the same float operations as
// DequantizeRow on the GGUF bytes.
void DequantizeLayoutRow(GgmlType type, WeightLayout layout, const void* src, float* dst,
                         int64_t n);

}  // namespace tritmoe
