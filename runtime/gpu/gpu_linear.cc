#include "runtime/gpu/gpu_linear.h"

#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "experts/cuda/float_gemv.h"

namespace tritmoe::gpu {
namespace {

constexpr int64_t kRowChunk = 256;  // rows per repack work item (a multiple of 16)

absl::Status FromCuda(cudaError_t err, const std::string& what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")"));
}

}  // namespace

bool GpuLinear::WouldTile(GgmlType type, int64_t cols) {
  return GpuGemvSupports(type) && cols > 0 && cols % 256 == 0;
}

bool GpuLinear::Supports(GgmlType type, int64_t cols) {
  return WouldTile(type, cols) || FloatGemvSupports(static_cast<uint32_t>(type), cols);
}

absl::StatusOr<GpuLinear> GpuLinear::Upload(const std::string& name, const WeightView& w,
                                            ThreadPool& pool) {
  const MatrixStack s{w.type, static_cast<const uint8_t*>(w.data), w.rows, w.cols,
                      1,      w.rows * RowBytes(w.type, w.cols)};
  return Upload(name, std::span<const MatrixStack>(&s, 1), pool);
}

absl::StatusOr<GpuLinear> GpuLinear::Upload(const std::string& name,
                                            std::span<const MatrixStack> parts, ThreadPool& pool,
                                            bool on_device) {
  if (parts.empty()) return absl::InternalError(absl::StrCat(name, ": nothing to upload"));
  const MatrixStack& p0 = parts[0];
  GpuLinear g;
  g.type_ = p0.type;
  g.cols_ = p0.cols;
  g.count_ = static_cast<int>(p0.count);
  for (const MatrixStack& p : parts) {
    if (p.data == nullptr || p.type != p0.type || p.cols != p0.cols || p.count != p0.count ||
        p.rows <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": the concatenated tensors differ in type, columns or count (",
          GetTypeTraits(p.type).name, " ", p.rows, "x", p.cols, " x", p.count, " vs ",
          GetTypeTraits(p0.type).name, " ", p0.rows, "x", p0.cols, " x", p0.count, ")"));
    }
    g.rows_ += p.rows;
  }
  if (!Supports(g.type_, g.cols_)) {
    return absl::UnimplementedError(absl::StrCat(
        name, ": ", GetTypeTraits(g.type_).name, " with ", g.cols_,
        " columns is not supported on the GPU (int8 tile kernels: IQ1_S, TQ1_0, TQ2_0, IQ2_XXS, "
        "Q4_K, Q6_K, Q8_0 with columns % 256 == 0; float kernels: F32, F16, BF16, Q8_0 with "
        "columns % 32 == 0)"));
  }
  if (g.rows_ > (int64_t{1} << 30) || g.cols_ > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": matrix too large for the GPU kernels"));
  }
  g.tiled_ = WouldTile(g.type_, g.cols_);
  std::vector<int64_t> part_off(parts.size() + 1, 0);
  for (size_t i = 0; i < parts.size(); ++i) {
    if (g.tiled_ && i + 1 < parts.size() && parts[i].rows % 16 != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": cannot concatenate a tiled matrix of ", parts[i].rows,
                       " rows (needs a multiple of 16)"));
    }
    int64_t bytes = parts[i].rows * RowBytes(g.type_, g.cols_);
    if (g.tiled_) {
      ASSIGN_OR_RETURN(bytes, GpuWeightBytes(g.type_, parts[i].rows, g.cols_));
    }
    part_off[i + 1] = part_off[i] + bytes;
  }
  g.matrix_bytes_ = part_off.back();

  struct Item {
    int64_t m, part, r0, r1;
  };
  std::vector<Item> items;
  for (int64_t m = 0; m < g.count_; ++m) {
    for (size_t i = 0; i < parts.size(); ++i) {
      for (int64_t r = 0; r < parts[i].rows; r += kRowChunk) {
        items.push_back({m, static_cast<int64_t>(i), r, std::min(parts[i].rows, r + kRowChunk)});
      }
    }
  }
  std::vector<uint8_t> staging;
  uint8_t* host = nullptr;
  if (on_device) {
    staging.resize(static_cast<size_t>(g.bytes()));
    host = staging.data();
  } else {
    g.host_ = PinnedBuffer(static_cast<size_t>(g.bytes()));
    host = g.host_.get();
  }
  std::mutex mu;
  absl::Status first_error;
  pool.ParallelFor(static_cast<int64_t>(items.size()), 1, [&](int64_t b, int64_t e, int) {
    for (int64_t k = b; k < e; ++k) {
      const Item& it = items[k];
      const MatrixStack& p = parts[it.part];
      const uint8_t* src = p.data + p.Offset(it.m);
      uint8_t* dst = host + it.m * g.matrix_bytes_ + part_off[it.part];
      if (g.tiled_) {
        absl::Status s = RepackRowsForGpu(g.type_, src, p.rows, g.cols_, it.r0, it.r1, dst);
        if (!s.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          if (first_error.ok()) first_error = s;
        }
      } else {
        const int64_t rb = RowBytes(g.type_, g.cols_);
        std::memcpy(dst + it.r0 * rb, src + it.r0 * rb, (it.r1 - it.r0) * rb);
      }
    }
  });
  if (!first_error.ok()) {
    return absl::Status(first_error.code(), absl::StrCat(name, ": ", first_error.message()));
  }
  if (on_device) {
    g.buf_ = DeviceBuffer(staging.size());
    g.buf_.CopyFromHost(staging.data(), staging.size());
  }
  return g;
}

absl::Status GpuLinear::Apply(const LinearArgs& a, cudaStream_t stream) const {
  if (empty()) return absl::InternalError("GpuLinear::Apply on an empty matrix");
  const bool grouped = a.offsets != nullptr;
  if (!grouped && (count_ != 1 || a.x_rows != nullptr || a.y_rows != nullptr)) {
    return absl::InternalError("dense product over a stack, or with row maps");
  }
  if (a.y == nullptr || a.y_stride < rows_ || a.n_x_rows < 0) {
    return absl::InternalError("bad output of a GPU product");
  }
  if (a.n_x_rows == 0) return absl::OkStatus();
  const bool cached = a.slots != nullptr;
  if (cached != (a.expert_slot != nullptr) || (cached && (!tiled_ || !grouped))) {
    return absl::InternalError("expert slots need a tiled stack, a grouped product and a slot map");
  }
  if (!cached && !on_device()) {
    return absl::InternalError("product over a host-only stack without expert slots");
  }
  if (tiled_) {
    GpuActivations act;
    if (a.quantized != nullptr) {
      act = *a.quantized;
      if (act.cols != cols_ || act.n_rows < a.n_x_rows) {
        return absl::InternalError("reused activations do not match the product");
      }
    } else {
      if (a.x_stride != cols_) {
        return absl::InternalError(absl::StrCat("tiled product needs contiguous rows: stride ",
                                                a.x_stride, ", cols ", cols_));
      }
      RETURN_IF_ERROR(QuantizeActivationsGpu(a.x, a.n_x_rows, cols_, a.act_workspace,
                                             a.act_workspace_bytes, stream, &act));
      if (a.quantized_out != nullptr) *a.quantized_out = act;
    }
    GpuWeightView w;
    w.type = type_;
    w.data = cached ? a.slots : buf_.get();
    w.rows = rows_;
    w.cols = cols_;
    w.n_experts = count_;
    w.expert_stride_bytes = matrix_bytes_;
    if (!grouped) return GpuGemv(w, act, a.y, stream, a.y_stride);
    GpuExpertRouting r;
    r.expert_offsets = a.offsets;
    r.x_rows = a.x_rows;
    r.y_rows = a.y_rows;
    r.max_pairs_per_expert = a.max_pairs;
    r.total_pairs = a.total_pairs;
    r.expert_slot = a.expert_slot;
    return GpuExpertGemv(w, act, r, a.y, stream, a.y_stride);
  }
  FloatGemvParams p;
  p.type_id = static_cast<uint32_t>(type_);
  p.w = buf_.get();
  p.expert_stride = matrix_bytes_;
  p.rows = static_cast<int>(rows_);
  p.cols = static_cast<int>(cols_);
  p.n_experts = count_;
  p.offsets = a.offsets;
  p.n_pairs = static_cast<int>(a.n_x_rows);
  p.max_pairs_per_expert = a.max_pairs;
  p.x_rows = a.x_rows;
  p.x = a.x;
  p.x_stride = a.x_stride;
  p.y_rows = a.y_rows;
  p.y = a.y;
  p.y_stride = a.y_stride;
  return FromCuda(LaunchFloatGemv(p, stream), "float GEMV");
}

DeviceBuffer UploadFloats(std::span<const float> v) {
  DeviceBuffer b(v.size() * sizeof(float));
  if (!v.empty()) b.CopyFromHost(v.data(), v.size() * sizeof(float));
  return b;
}

}  // namespace tritmoe::gpu
