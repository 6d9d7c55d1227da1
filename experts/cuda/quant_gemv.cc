// Host wrappers of the GPU GEMV kernels: argument validation and absl::Status conversion around
// the absl-free launchers in quant_gemv.cu.
#include "experts/cuda/quant_gemv.h"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "experts/cuda/quant_gemv_launch.h"

namespace tritmoe {
namespace {

absl::Status FromCuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")"));
}

absl::Status CheckWeights(const GpuWeightView& w, const GpuActivations& x) {
  if (!GpuGemvSupports(w.type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPU GEMV does not support type ", GetTypeTraits(w.type).name));
  }
  if (w.data == nullptr || w.rows <= 0 || w.cols <= 0 || w.cols % gpu_internal::kTileCols != 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad GPU weights: rows ", w.rows, ", cols ",
                                                   w.cols, " (need cols % 256 == 0)"));
  }
  if (w.rows > std::numeric_limits<int>::max() || w.cols > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError("GPU GEMV matrix dimensions must fit in int");
  }
  if (x.data == nullptr || x.cols != w.cols) {
    return absl::InvalidArgumentError(
        absl::StrCat("activations have ", x.cols, " columns, the weights ", w.cols));
  }
  return absl::OkStatus();
}

}  // namespace

int64_t GpuActivationBytes(int64_t n_rows, int64_t cols) {
  return static_cast<int64_t>(gpu_internal::ActWorkspaceBytes(n_rows, cols));
}

absl::Status QuantizeActivationsGpu(const float* x, int64_t n_rows, int64_t cols, void* workspace,
                                    int64_t workspace_bytes, void* stream, GpuActivations* out) {
  if (cols <= 0 || cols % gpu_internal::kTileCols != 0 || cols > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("activation columns must be a positive multiple of 256, got ", cols));
  }
  if (n_rows < 0 || (n_rows > 0 && (x == nullptr || workspace == nullptr))) {
    return absl::InvalidArgumentError("null activations or workspace");
  }
  if (reinterpret_cast<uintptr_t>(x) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(workspace) % 16 != 0) {
    return absl::InvalidArgumentError("activations and workspace must be 16-byte aligned");
  }
  if (workspace_bytes < GpuActivationBytes(n_rows, cols)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "workspace of ", workspace_bytes, " bytes, need ", GpuActivationBytes(n_rows, cols)));
  }
  if (absl::Status s =
          FromCuda(gpu_internal::LaunchQuantizeActivations(x, n_rows, static_cast<int>(cols),
                                                           static_cast<uint8_t*>(workspace),
                                                           static_cast<cudaStream_t>(stream)),
                   "QuantizeActivationsGpu");
      !s.ok()) {
    return s;
  }
  out->data = workspace;
  out->n_rows = n_rows;
  out->cols = cols;
  return absl::OkStatus();
}

absl::Status QuantizeSwiGluActivationsGpu(const float* gu, int64_t n_rows, int64_t n_ff,
                                          void* workspace, int64_t workspace_bytes, void* stream,
                                          GpuActivations* out) {
  if (n_ff <= 0 || n_ff % gpu_internal::kTileCols != 0 ||
      n_ff > std::numeric_limits<int>::max() / 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("SwiGLU width must be a positive multiple of 256, got ", n_ff));
  }
  if (n_rows < 0 || (n_rows > 0 && (gu == nullptr || workspace == nullptr))) {
    return absl::InvalidArgumentError("null activations or workspace");
  }
  if (reinterpret_cast<uintptr_t>(gu) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(workspace) % 16 != 0) {
    return absl::InvalidArgumentError("activations and workspace must be 16-byte aligned");
  }
  if (workspace_bytes < GpuActivationBytes(n_rows, n_ff)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "workspace of ", workspace_bytes, " bytes, need ", GpuActivationBytes(n_rows, n_ff)));
  }
  if (absl::Status s =
          FromCuda(gpu_internal::LaunchQuantizeSwiGlu(gu, n_rows, static_cast<int>(n_ff),
                                                      static_cast<uint8_t*>(workspace),
                                                      static_cast<cudaStream_t>(stream)),
                   "QuantizeSwiGluActivationsGpu");
      !s.ok()) {
    return s;
  }
  out->data = workspace;
  out->n_rows = n_rows;
  out->cols = n_ff;
  return absl::OkStatus();
}

absl::Status GpuGemv(const GpuWeightView& w, const GpuActivations& x, float* y, void* stream,
                     int64_t y_stride) {
  if (absl::Status s = CheckWeights(w, x); !s.ok()) return s;
  if (w.n_experts != 1)
    return absl::InvalidArgumentError("GpuGemv takes one matrix; use GpuExpertGemv");
  if (x.n_rows > std::numeric_limits<int>::max() / 2)
    return absl::InvalidArgumentError("too many rows");
  if (x.n_rows == 0) return absl::OkStatus();
  if (y == nullptr || (y_stride != 0 && y_stride < w.rows)) {
    return absl::InvalidArgumentError("null output or y_stride < rows");
  }
  gpu_internal::GemvLaunch g;
  g.type_id = static_cast<uint32_t>(w.type);
  g.w = w.data;
  g.rows = static_cast<int>(w.rows);
  g.cols = static_cast<int>(w.cols);
  g.n_tokens = static_cast<int>(x.n_rows);
  g.act = static_cast<const uint8_t*>(x.data);
  g.y = y;
  g.y_stride = y_stride != 0 ? y_stride : w.rows;
  return FromCuda(gpu_internal::LaunchGemv(g, static_cast<cudaStream_t>(stream)), "GpuGemv");
}

absl::Status GpuExpertGemv(const GpuWeightView& w, const GpuActivations& x,
                           const GpuExpertRouting& routing, float* y, void* stream,
                           int64_t y_stride) {
  if (absl::Status s = CheckWeights(w, x); !s.ok()) return s;
  if (w.n_experts < 1 || routing.expert_offsets == nullptr || routing.max_pairs_per_expert < 0) {
    return absl::InvalidArgumentError("GpuExpertGemv needs n_experts >= 1 and expert offsets");
  }
  const absl::StatusOr<int64_t> bytes = GpuWeightBytes(w.type, w.rows, w.cols);
  if (!bytes.ok()) return bytes.status();
  if (w.n_experts > 1 && w.expert_stride_bytes < *bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert stride ", w.expert_stride_bytes, " < matrix bytes ", *bytes));
  }
  if (y == nullptr || (y_stride != 0 && y_stride < w.rows)) {
    return absl::InvalidArgumentError("null output or y_stride < rows");
  }
  if (routing.max_pairs_per_expert == 0) return absl::OkStatus();
  gpu_internal::GemvLaunch g;
  g.type_id = static_cast<uint32_t>(w.type);
  g.w = w.data;
  g.expert_stride = w.expert_stride_bytes;
  g.rows = static_cast<int>(w.rows);
  g.cols = static_cast<int>(w.cols);
  g.n_experts = w.n_experts;
  g.offsets = routing.expert_offsets;
  g.x_rows = routing.x_rows;
  g.y_rows = routing.y_rows;
  g.expert_slot = routing.expert_slot;
  g.max_tokens_per_expert = routing.max_pairs_per_expert;
  g.total_pairs = routing.total_pairs;
  g.act = static_cast<const uint8_t*>(x.data);
  g.y = y;
  g.y_stride = y_stride != 0 ? y_stride : w.rows;
  return FromCuda(gpu_internal::LaunchGemv(g, static_cast<cudaStream_t>(stream)), "GpuExpertGemv");
}

}  // namespace tritmoe
