// A weight matrix, or a stack of equal matrices (routed experts, attention heads), resident on the
// GPU in the layout of the kernel that multiplies it:
//  * "tiled": the int8-MMA tile layout of experts/cuda/quant_gemv.h, for the types it handles
//    (IQ1_S, TQ1_0, TQ2_0, IQ2_XXS, Q4_K, Q6_K, Q8_0) with cols % 256 == 0; activations are
//    quantized to int8 per 256 columns first (relative error of a product ~0.5%);
//  * "float": the GGUF rows unchanged, for experts/cuda/float_gemv.h (F32, F16, BF16, Q8_0, any
//    multiple of 32 columns); float32 activations (relative error ~1e-6).
// Several tensors can be concatenated row-wise per matrix at upload (gate ‖ up, q_a ‖ kv_a), so
// that one launch computes both. The bytes on the device are exactly the GGUF bytes (tile rows
// padded to 16), so a full read moves bytes() bytes.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "base/thread_pool.h"
#include "experts/cuda/device_buffer.h"
#include "experts/cuda/quant_gemv.h"
#include "runtime/gpu/pinned_buffer.h"
#include "runtime/model/weights.h"

namespace tritmoe::gpu {

// One product y = W x over pairs (see Apply).
struct LinearArgs {
  const float* x = nullptr;  // device activation rows [n_x_rows][x_stride]
  int64_t x_stride = 0;      // tiled path: must equal cols
  int64_t n_x_rows = 0;
  // Dense: pair p < n_x_rows reads x row p and writes y row p. Grouped (stacks): pairs of matrix
  // e are [offsets[e], offsets[e+1]) (device), reading x row x_rows[p] (or p) and writing y row
  // y_rows[p] (or p); max_pairs bounds the pairs of one matrix.
  const int32_t* offsets = nullptr;
  const int32_t* x_rows = nullptr;
  const int32_t* y_rows = nullptr;
  int max_pairs = 0;
  int64_t total_pairs = 0;  // grouped: all pairs when known (else 0); only picks the kernel
  float* y = nullptr;
  int64_t y_stride = 0;  // >= rows
  // Tiled path: x quantized into this workspace first, unless `quantized` already holds x
  // (a previous product over the same rows).
  void* act_workspace = nullptr;
  int64_t act_workspace_bytes = 0;
  const GpuActivations* quantized = nullptr;
  GpuActivations* quantized_out = nullptr;  // receives x's quantized form when computed
  // Expert cache (tiled stacks only, grouped): the matrices are read from `slots` (device,
  // matrix_bytes() apart) through expert_slot (device [count()]: the slot of matrix e, -1 =
  // skip e), instead of from the stack's own device copy.
  const void* slots = nullptr;
  const int32_t* expert_slot = nullptr;
};

class GpuLinear {
 public:
  GpuLinear() = default;

  // Uploads the row-wise concatenation of `parts`: matrix i is part 0's matrix i, then part 1's
  // matrix i, ... All parts share type, cols and count; in the tiled layout every part but the
  // last needs rows % 16 == 0. Repacking runs on `pool`. Errors name `name`. With
  // on_device = false the repacked bytes stay in pinned host memory (host_data(); the expert
  // cache's host tier) and nothing is allocated on the device: Apply then needs args.slots.
  static absl::StatusOr<GpuLinear> Upload(const std::string& name,
                                          std::span<const MatrixStack> parts, ThreadPool& pool,
                                          bool on_device = true);
  static absl::StatusOr<GpuLinear> Upload(const std::string& name, const WeightView& w,
                                          ThreadPool& pool);

  // Whether a tensor of this type and width can be uploaded, and whether it would be tiled.
  static bool Supports(GgmlType type, int64_t cols);
  static bool WouldTile(GgmlType type, int64_t cols);

  bool empty() const { return rows_ == 0; }
  GgmlType type() const { return type_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int count() const { return count_; }
  bool tiled() const { return tiled_; }
  int64_t matrix_bytes() const { return matrix_bytes_; }
  int64_t bytes() const { return matrix_bytes_ * count_; }
  const void* data() const { return buf_.get(); }  // null for a host-only stack
  bool on_device() const { return buf_.get() != nullptr; }
  const uint8_t* host_data() const { return host_.get(); }  // host-only stacks, else null

  // Enqueues the product on `stream` (one or two launches; no synchronization).
  absl::Status Apply(const LinearArgs& args, cudaStream_t stream) const;

 private:
  GgmlType type_ = GgmlType::kF32;
  int64_t rows_ = 0, cols_ = 0;
  int count_ = 0;
  bool tiled_ = false;
  int64_t matrix_bytes_ = 0;
  DeviceBuffer buf_;
  PinnedBuffer host_;
};

// A float vector (norm gains, router bias) on the device.
DeviceBuffer UploadFloats(std::span<const float> v);

}  // namespace tritmoe::gpu
