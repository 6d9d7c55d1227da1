// Reading GGUF v3 files (single files and gguf-split shards), validated strictly: a malformed
// file is rejected with a message naming the file, the key or tensor, and what was expected.
// Tensor data is memory-mapped and touched only when read, so a rank that reads only some
// tensors (its own experts) pages in only those bytes.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "experts/quant_type.h"

namespace tritmoe::gguf {

enum class ValueType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};
std::string_view ValueTypeName(ValueType t);

// One metadata value. Scalars and arrays of scalars keep their raw little-endian bytes and type;
// strings (and string arrays) are decoded.
struct Value {
  ValueType type = ValueType::kUint8;
  ValueType elem_type = ValueType::kUint8;  // arrays only
  std::vector<uint8_t> raw;                 // scalar bytes, or count * elem size for arrays
  std::vector<std::string> strings;         // kString: one; string arrays: all
  uint64_t count = 0;                       // arrays: number of elements

  bool is_array() const { return type == ValueType::kArray; }
};

struct KeyValue {
  std::string key;
  Value value;
};

struct TensorInfo {
  std::string name;
  GgmlType type = GgmlType::kF32;
  int n_dims = 1;
  std::array<int64_t, 4> ne = {1, 1, 1, 1};  // ne[0] contiguous
  uint64_t offset = 0;   // relative to the shard's data section
  uint64_t nbytes = 0;
  int shard = 0;         // index of the shard holding it

  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  // Bytes of one ne0-row.
  uint64_t row_bytes() const;
};

// One GGUF file, memory-mapped.
class GgufFile {
 public:
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return size_; }
  const std::vector<KeyValue>& kvs() const { return kvs_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const KeyValue* FindKey(std::string_view key) const;
  const TensorInfo* FindTensor(std::string_view name) const;
  // Pointer to a tensor's bytes inside the mapping (validated in range at Open).
  const uint8_t* TensorData(const TensorInfo& t) const { return base_ + data_offset_ + t.offset; }

 private:
  GgufFile() = default;
  friend class GgufParser;

  std::string path_;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  uint64_t size_ = 0;
  const uint8_t* base_ = nullptr;  // the mapping (or nullptr for an empty file)
  std::vector<KeyValue> kvs_;
  std::vector<TensorInfo> tensors_;
};

// A model: one file, or all shards of a gguf-split set opened from any of them. Metadata comes
// from shard 0; tensor names are unique across shards.
class GgufModel {
 public:
  // `path` is a single file or one shard named <prefix>-NNNNN-of-MMMMM.gguf.
  static absl::StatusOr<std::unique_ptr<GgufModel>> Open(const std::string& path);

  const GgufFile& shard(int i) const { return *shards_[i]; }
  int n_shards() const { return static_cast<int>(shards_.size()); }
  const std::vector<KeyValue>& kvs() const { return shards_[0]->kvs(); }
  // All tensors, in shard order then file order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* FindTensor(std::string_view name) const;
  const uint8_t* TensorData(const TensorInfo& t) const;
  const KeyValue* FindKey(std::string_view key) const { return shards_[0]->FindKey(key); }

  // Typed metadata getters. Integers of any width convert when the value fits; errors name the
  // key and the type found.
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<uint64_t> GetUint(std::string_view key) const;
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;
  absl::StatusOr<double> GetFloat(std::string_view key) const;  // float32/float64/any int
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(std::string_view key) const;
  absl::StatusOr<std::vector<float>> GetFloatArray(std::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(std::string_view key) const;

 private:
  GgufModel() = default;
  std::vector<std::unique_ptr<GgufFile>> shards_;
  std::vector<TensorInfo> tensors_;
};

}  // namespace tritmoe::gguf
