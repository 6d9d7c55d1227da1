#include "runtime/model/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "experts/dequantize.h"
#include "experts/quantize.h"

namespace tritmoe {

absl::StatusOr<KvCacheType> ParseKvCacheType(std::string_view name) {
  const std::string lower = absl::AsciiStrToLower(std::string(name));
  if (lower == "f32") return KvCacheType::kF32;
  if (lower == "f16") return KvCacheType::kF16;
  if (lower == "q8_0") return KvCacheType::kQ8_0;
  if (lower == "q4_0") return KvCacheType::kQ4_0;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown KV cache type '", std::string(name), "' (f32, f16, q8_0 or q4_0)"));
}

std::string_view KvCacheTypeName(KvCacheType type) {
  switch (type) {
    case KvCacheType::kF32:
      return "f32";
    case KvCacheType::kF16:
      return "f16";
    case KvCacheType::kQ8_0:
      return "q8_0";
    case KvCacheType::kQ4_0:
      return "q4_0";
  }
  return "unknown";
}

GgmlType KvCacheGgmlType(KvCacheType type) {
  switch (type) {
    case KvCacheType::kF32:
      return GgmlType::kF32;
    case KvCacheType::kF16:
      return GgmlType::kF16;
    case KvCacheType::kQ8_0:
      return GgmlType::kQ8_0;
    case KvCacheType::kQ4_0:
      return GgmlType::kQ4_0;
  }
  return GgmlType::kF16;
}

int64_t KvCacheConfig::padded_row_elems() const {
  const int64_t block = GetTypeTraits(KvCacheGgmlType(type)).block_elems;
  return (row_elems() + block - 1) / block * block;
}

int64_t KvCacheConfig::row_bytes() const {
  return RowBytes(KvCacheGgmlType(type), padded_row_elems());
}

absl::Status KvCacheConfig::Validate() const {
  if (n_layer <= 0 || kv_lora_rank <= 0 || n_rot < 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad KV cache shape: ", n_layer, " layers, ",
                                                   kv_lora_rank, " + ", n_rot, " per row"));
  }
  if (capacity <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache capacity must be > 0 tokens, got ", capacity));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(const KvCacheConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  return std::unique_ptr<KvCache>(new KvCache(config));
}

KvCache::KvCache(const KvCacheConfig& config) : config_(config) {
  layers_.resize(config.n_layer);
  for (auto& l : layers_) l.resize(static_cast<size_t>(config.capacity * config.row_bytes()));
}

int64_t KvCache::bytes() const { return config_.n_layer * config_.capacity * config_.row_bytes(); }

absl::Status KvCache::CheckRoom(int64_t n) const {
  if (n < 0 || size_ + n > config_.capacity) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: ", size_, " tokens + ", n,
                                                     " new exceed the capacity of ",
                                                     config_.capacity, " tokens"));
  }
  return absl::OkStatus();
}

void KvCache::Write(int il, int64_t pos, int64_t n, const float* rows) {
  TM_CHECK(il >= 0 && il < config_.n_layer && pos >= 0 && pos + n <= config_.capacity)
      << "layer " << il << " positions [" << pos << ", " << pos + n << ")";
  const int64_t elems = config_.row_elems();
  const int64_t padded = config_.padded_row_elems();
  const int64_t rb = config_.row_bytes();
  std::vector<float> tmp(padded, 0.0f);
  uint8_t* base = layers_[il].data() + pos * rb;
  for (int64_t t = 0; t < n; ++t) {
    std::memcpy(tmp.data(), rows + t * elems, elems * sizeof(float));
    absl::Status s =
        QuantizeRows(KvCacheGgmlType(config_.type), tmp.data(), base + t * rb, 1, padded, nullptr);
    TM_CHECK(s.ok()) << s.message();
  }
}

void KvCache::Read(int il, int64_t pos, int64_t n, float* rows) const {
  TM_CHECK(il >= 0 && il < config_.n_layer && pos >= 0 && pos + n <= config_.capacity)
      << "layer " << il << " positions [" << pos << ", " << pos + n << ")";
  const int64_t elems = config_.row_elems();
  const int64_t padded = config_.padded_row_elems();
  const int64_t rb = config_.row_bytes();
  const GgmlType type = KvCacheGgmlType(config_.type);
  const uint8_t* base = layers_[il].data() + pos * rb;
  if (padded == elems) {
    for (int64_t t = 0; t < n; ++t) DequantizeRow(type, base + t * rb, rows + t * elems, elems);
    return;
  }
  std::vector<float> tmp(padded);
  for (int64_t t = 0; t < n; ++t) {
    DequantizeRow(type, base + t * rb, tmp.data(), padded);
    std::memcpy(rows + t * elems, tmp.data(), elems * sizeof(float));
  }
}

void KvCache::Commit(int64_t n) {
  TM_CHECK(n >= 0 && size_ + n <= config_.capacity) << "commit " << n << " at " << size_;
  size_ += n;
}

void KvCache::Truncate(int64_t n) {
  TM_CHECK(n >= 0 && n <= size_) << "truncate to " << n << " of " << size_;
  size_ = n;
}

}  // namespace tritmoe
