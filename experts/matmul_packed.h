// Activations prepared once for several products with weights of one type, e.g. the gate and up
// projections of an expert, which read the same input. MatMul (experts/matmul.h) is Pack +
// MatMulPacked.
#pragma once

#include <cstdint>
#include <memory>

#include "base/thread_pool.h"
#include "experts/matmul.h"
#include "experts/matmul_isa.h"
#include "experts/quant_type.h"

namespace tritmoe {

class PackedActivations {
 public:
  PackedActivations() = default;
  PackedActivations(PackedActivations&&) = default;
  PackedActivations& operator=(PackedActivations&&) = default;

  // Packs x: [n_tokens][cols] float32 for products with weights of `weight_type` stored in
  // `layout`, in the format of the active ISA's kernels (quantized to Q8_K / Q8_0 for quantized
  // types, unless precision is kFloat). cols must be a multiple of the weight type's block size.
  // Reuses its buffer. The packing is parallel over tokens on `pool` when given.
  void Pack(GgmlType weight_type, const float* x, int64_t n_tokens, int64_t cols,
            ThreadPool* pool = nullptr, ActPrecision precision = ActPrecision::kQuantized,
            WeightLayout layout = WeightLayout::kGguf);
  // The same for products with `w` (its type, layout and cols).
  void Pack(const WeightView& w, const float* x, int64_t n_tokens, ThreadPool* pool = nullptr,
            ActPrecision precision = ActPrecision::kQuantized) {
    Pack(w.type, x, n_tokens, w.cols, pool, precision, w.layout);
  }

  GgmlType weight_type() const { return weight_type_; }
  WeightLayout layout() const { return layout_; }
  ActPrecision precision() const { return precision_; }
  MatmulIsa isa() const { return isa_; }
  int64_t n_tokens() const { return n_tokens_; }
  int64_t cols() const { return cols_; }
  // Bytes between consecutive tokens' packed rows (a multiple of 64).
  int64_t stride() const { return stride_; }
  const uint8_t* data() const { return data_.get(); }
  // Where each token row's per-block scales start (kernels with act_scales), in bytes.
  int64_t scale_offset() const { return scale_offset_; }

 private:
  struct FreeDeleter {
    void operator()(uint8_t* p) const;
  };
  GgmlType weight_type_ = GgmlType::kF32;
  WeightLayout layout_ = WeightLayout::kGguf;
  ActPrecision precision_ = ActPrecision::kQuantized;
  MatmulIsa isa_ = MatmulIsa::kScalar;
  int64_t n_tokens_ = 0;
  int64_t cols_ = 0;
  int64_t stride_ = 0;
  int64_t scale_offset_ = 0;
  std::unique_ptr<uint8_t[], FreeDeleter> data_;
  int64_t capacity_ = 0;
};

// y[t * rows + r] = W[r] . x[t] for the tokens packed in x; x must have been packed for w.type,
// w.layout and w.cols with the ISA still active. Parallel over rows on `pool`.
void MatMulPacked(const WeightView& w, const PackedActivations& x, float* y, ThreadPool& pool);

}  // namespace tritmoe
