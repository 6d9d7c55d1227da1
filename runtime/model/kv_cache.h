// The KV cache of one sequence for MLA: per layer and token, one latent row = the normalized kv
// latent (kv_lora_rank values) followed by the already-roped shared key k_pe (n_rot values). Keys
// and values of every head are recomputed from it (naive form) or never materialized (absorbed
// form), so both attention layouts use the same cache. For R1: 576 values per token and layer.
//
// Rows are stored in F32, F16, Q8_0 or Q4_0 (the 4-bit cache people run R1 with). A quantized row
// is padded with zeros to a whole number of 32-element blocks (576 needs no padding).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "experts/quant_type.h"

namespace tritmoe {

// kF32 is the exact reference cache (tests); kF16 is llama.cpp's default.
enum class KvCacheType { kF32, kF16, kQ8_0, kQ4_0 };

// "f32", "f16", "q8_0", "q4_0" (case-insensitive).
absl::StatusOr<KvCacheType> ParseKvCacheType(std::string_view name);
std::string_view KvCacheTypeName(KvCacheType type);
GgmlType KvCacheGgmlType(KvCacheType type);

struct KvCacheConfig {
  int n_layer = 0;
  int kv_lora_rank = 0;
  int n_rot = 0;
  KvCacheType type = KvCacheType::kF16;
  int64_t capacity = 0;  // tokens

  int row_elems() const { return kv_lora_rank + n_rot; }
  // Stored elements per row: row_elems rounded up to the storage type's block.
  int64_t padded_row_elems() const;
  int64_t row_bytes() const;
  absl::Status Validate() const;
};

// Positions [0, size()) are filled. A forward step writes the new tokens' rows at [size(),
// size() + n) in every layer, then calls Commit(n); a step that fails before Commit leaves the
// cache as it was.
class KvCache {
 public:
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(const KvCacheConfig& config);

  const KvCacheConfig& config() const { return config_; }
  int64_t size() const { return size_; }
  int64_t capacity() const { return config_.capacity; }
  int64_t bytes() const;

  // OK when n more tokens fit; else ResourceExhausted naming the sizes.
  absl::Status CheckRoom(int64_t n) const;

  // Stores rows [n][row_elems] (latent ‖ k_pe, float) at positions [pos, pos + n) of layer il.
  // pos + n <= capacity (callers check with CheckRoom).
  void Write(int il, int64_t pos, int64_t n, const float* rows);
  // Decodes positions [pos, pos + n) of layer il into rows [n][row_elems] (float).
  void Read(int il, int64_t pos, int64_t n, float* rows) const;

  void Commit(int64_t n);
  // Forgets positions >= n (n <= size()), e.g. to reuse a common prefix.
  void Truncate(int64_t n);
  void Clear() { size_ = 0; }

 private:
  explicit KvCache(const KvCacheConfig& config);

  KvCacheConfig config_;
  int64_t size_ = 0;
  std::vector<std::vector<uint8_t>> layers_;  // [n_layer][capacity * row_bytes]
};

}  // namespace tritmoe
