// Reading GGUF v3 files (single files and gguf-split shards), validated strictly: a malformed
// file is rejected with a message naming the file, the key or tensor, and what was expected.
// Tensor data is memory-mapped and touched only when read, so a rank that reads only some
// tensors (its own experts) pages in only those bytes.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "experts/quant_type.h"

namespace tritmoe::gguf {

// Limits enforced when reading (llama.cpp's): names of tensors are < 64 bytes, strings and array
// counts at most 2^30, at most 4 dimensions. Alignment defaults to 32 bytes.
inline constexpr uint64_t kMaxTensorNameBytes = 63;
inline constexpr uint64_t kMaxStringBytes = uint64_t{1} << 30;
inline constexpr uint64_t kMaxArrayCount = uint64_t{1} << 30;
inline constexpr int kMaxDims = 4;
inline constexpr uint32_t kDefaultAlignment = 32;

// PAD(x, n) for a power-of-two n.
inline uint64_t PadTo(uint64_t x, uint64_t n) { return (x + n - 1) & ~(n - 1); }

enum class ValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
// "uint8", "float32", "string", "array"..., or "unknown".
std::string_view ValueTypeName(ValueType t);
// Encoded size of one scalar of type t; 0 for kString/kArray (variable) and unknown ids.
uint64_t ValueTypeSize(ValueType t);
bool IsIntegerType(ValueType t);

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

// Transparent hashing so maps keyed by std::string can be searched with a string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using NameIndex = std::unordered_map<std::string, size_t, StringHash, std::equal_to<>>;

struct KeyValue {
  std::string key;
  Value value;
};

struct TensorInfo {
  std::string name;
  GgmlType type = GgmlType::kF32;
  int n_dims = 1;
  std::array<int64_t, 4> ne = {1, 1, 1, 1};  // ne[0] contiguous
  uint64_t offset = 0;                       // relative to the shard's data section
  uint64_t nbytes = 0;
  int shard = 0;  // index of the shard holding it

  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  // Bytes of one ne0-row.
  uint64_t row_bytes() const;
};

class MappedFile;

// One GGUF file, memory-mapped. Open validates everything (header, every KV record and tensor
// info, sequential in-range tensor offsets); errors are InvalidArgument (malformed file) or
// NotFound (no such file), with messages starting with the path.
class GgufFile {
 public:
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses a copy of `data` (no file needed; used by the fuzzer and tests). `name` stands in for
  // the path in messages.
  static absl::StatusOr<std::unique_ptr<GgufFile>> OpenFromBuffer(const uint8_t* data, size_t size,
                                                                  const std::string& name);
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
  const uint8_t* base_ = nullptr;        // the mapping (or nullptr for an empty file)
  std::unique_ptr<MappedFile> mapping_;  // Open
  std::vector<uint8_t> buffer_;          // OpenFromBuffer
  std::vector<KeyValue> kvs_;
  std::vector<TensorInfo> tensors_;
  NameIndex key_index_;
  NameIndex tensor_index_;
};

// gguf-split file names: <prefix>-NNNNN-of-MMMMM.gguf, NNNNN 1-based.
std::string SplitPath(const std::string& prefix, int shard_no, int shard_count);
struct SplitName {
  std::string prefix;
  int shard_no = 0;  // 1-based, as in the name
  int shard_count = 0;
};
// False when `path` does not end in -NNNNN-of-MMMMM.gguf (5 digits each, 1 <= NNNNN <= MMMMM).
bool ParseSplitPath(const std::string& path, SplitName* out);

// A model: one file, or all shards of a gguf-split set opened from any of them. Metadata comes
// from shard 0; tensor names are unique across shards.
class GgufModel {
 public:
  // `path` is a single file or one shard named <prefix>-NNNNN-of-MMMMM.gguf. For a split set
  // (split.count > 1) every shard is opened and checked: its split.no (uint16) must match its
  // name, split.count (uint16) must agree, the tensor count must equal split.tensors.count
  // (int32, when present), and tensor names must be unique across shards. A missing shard is
  // NotFound, naming it.
  static absl::StatusOr<std::unique_ptr<GgufModel>> Open(const std::string& path);

  // Wraps one already-open file as a model (split keys are not followed). Used for in-memory
  // files (fuzzing, tests).
  static std::unique_ptr<GgufModel> FromFile(std::unique_ptr<GgufFile> file);

  // The path of shard 0.
  const std::string& path() const { return shards_[0]->path(); }
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
  // Builds tensors_ and its index from the shards; fails on a name repeated across shards.
  absl::Status IndexTensors();

  std::vector<std::unique_ptr<GgufFile>> shards_;
  std::vector<TensorInfo> tensors_;
  NameIndex tensor_index_;
};

}  // namespace tritmoe::gguf
