#include "runtime/gpu/gpu_kv_cache.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "experts/dequantize.h"

namespace tritmoe::gpu {

absl::StatusOr<std::unique_ptr<GpuKvCache>> GpuKvCache::Create(const KvCacheConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  return std::unique_ptr<GpuKvCache>(new GpuKvCache(config));
}

GpuKvCache::GpuKvCache(const KvCacheConfig& config)
    : config_(config),
      buf_(static_cast<size_t>(config.n_layer * config.capacity * config.row_bytes())) {
  buf_.Fill(0);  // padding elements of quantized rows stay zero, as on the CPU
}

absl::Status GpuKvCache::CheckRoom(int64_t n) const {
  if (n < 0 || size_ + n > config_.capacity) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: ", size_, " tokens + ", n,
                                                     " new exceed the capacity of ",
                                                     config_.capacity, " tokens"));
  }
  return absl::OkStatus();
}

void GpuKvCache::Commit(int64_t n) {
  TM_CHECK(n >= 0 && size_ + n <= config_.capacity) << "commit " << n << " at " << size_;
  size_ += n;
}

void GpuKvCache::Truncate(int64_t n) {
  TM_CHECK(n >= 0 && n <= size_) << "truncate to " << n << " of " << size_;
  size_ = n;
}

absl::Status GpuKvCache::Read(int il, int64_t pos, int64_t n, float* rows) const {
  if (il < 0 || il >= config_.n_layer || pos < 0 || n < 0 || pos + n > config_.capacity) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache read of layer ", il, " positions [", pos, ", ", pos + n, ")"));
  }
  const int64_t rb = config_.row_bytes();
  const int64_t elems = config_.row_elems(), padded = config_.padded_row_elems();
  std::vector<uint8_t> bytes(n * rb);
  buf_.CopyToHost(bytes.data(), bytes.size(), il * layer_stride() + pos * rb);
  std::vector<float> tmp(padded);
  const GgmlType type = KvCacheGgmlType(config_.type);
  for (int64_t t = 0; t < n; ++t) {
    DequantizeRow(type, bytes.data() + t * rb, tmp.data(), padded);
    std::memcpy(rows + t * elems, tmp.data(), elems * sizeof(float));
  }
  return absl::OkStatus();
}

}  // namespace tritmoe::gpu
