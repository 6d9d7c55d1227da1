// The latent KV cache of one sequence in device memory: the same rows as runtime/model/kv_cache.h
// (normalized latent ‖ roped k_pe per token and layer, stored as F32, F16, Q8_0 or Q4_0 with the
// same byte layout), one allocation of [n_layer][capacity][row_bytes]. GpuModel::Step writes the
// new tokens' rows, then commits them; a failed step leaves size() unchanged.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "experts/cuda/device_buffer.h"
#include "runtime/model/kv_cache.h"

namespace tritmoe::gpu {

class GpuKvCache {
 public:
  static absl::StatusOr<std::unique_ptr<GpuKvCache>> Create(const KvCacheConfig& config);

  const KvCacheConfig& config() const { return config_; }
  int64_t size() const { return size_; }
  int64_t capacity() const { return config_.capacity; }
  int64_t bytes() const { return buf_.bytes(); }
  // Device address of layer 0; layer il starts layer_stride() bytes further per layer.
  const uint8_t* data() const { return buf_.as<const uint8_t>(); }
  int64_t layer_stride() const { return config_.capacity * config_.row_bytes(); }

  // OK when n more tokens fit; else ResourceExhausted naming the sizes (as KvCache).
  absl::Status CheckRoom(int64_t n) const;
  void Commit(int64_t n);
  void Truncate(int64_t n);
  void Clear() { size_ = 0; }

  // Decodes positions [pos, pos + n) of layer il into host rows [n][row_elems] (tests): copies
  // the bytes back and decodes them with the CPU's DequantizeRow.
  absl::Status Read(int il, int64_t pos, int64_t n, float* rows) const;

 private:
  explicit GpuKvCache(const KvCacheConfig& config);
  KvCacheConfig config_;
  int64_t size_ = 0;
  DeviceBuffer buf_;
};

}  // namespace tritmoe::gpu
