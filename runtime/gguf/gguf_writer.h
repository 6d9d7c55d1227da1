// Writing GGUF v3 files the way llama.cpp does (KV records in insertion order, sequential aligned
// tensor offsets, zero padding after every tensor), optionally split into gguf-split shards.
// Tensor bytes are produced by a callback at write time, so multi-gigabyte models are written
// without holding them in memory.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "experts/quant_type.h"
#include "runtime/gguf/gguf.h"

namespace tritmoe::gguf {

// Usage: Set* the metadata, AddTensor each tensor (in file order), then Write or WriteSplit (which
// may be called more than once; fill callbacks run again each time, one tensor at a time).
// Files are written to "<path>.tmp" and renamed when complete, so a failed write leaves no
// partial file behind. Setting general.alignment (uint32, a power of two) changes the alignment.
class GgufWriter {
 public:
  // Metadata, in the order they are set (setting a key again replaces its value in place).
  void SetUint8(const std::string& key, uint8_t v);
  void SetInt8(const std::string& key, int8_t v);
  void SetUint16(const std::string& key, uint16_t v);
  void SetInt16(const std::string& key, int16_t v);
  void SetUint32(const std::string& key, uint32_t v);
  void SetInt32(const std::string& key, int32_t v);
  void SetUint64(const std::string& key, uint64_t v);
  void SetInt64(const std::string& key, int64_t v);
  void SetFloat32(const std::string& key, float v);
  void SetFloat64(const std::string& key, double v);
  void SetBool(const std::string& key, bool v);
  void SetString(const std::string& key, const std::string& v);
  void SetStringArray(const std::string& key, const std::vector<std::string>& v);
  void SetFloat32Array(const std::string& key, const std::vector<float>& v);
  void SetInt32Array(const std::string& key, const std::vector<int32_t>& v);
  void SetValue(const std::string& key, const Value& v);  // any value, e.g. copied from a file

  // fill(dst) writes exactly nbytes = the tensor's byte size into dst (a null fill writes zeros).
  using FillFn = std::function<absl::Status(uint8_t* dst)>;
  // ne: 1..4 dims, ne[0] contiguous; ne[0] must be a multiple of the type's block size. Names are
  // 1..63 bytes and unique. Trailing dims equal to 1 are dropped when written (ggml_n_dims).
  absl::Status AddTensor(const std::string& name, GgmlType type, const std::vector<int64_t>& ne,
                         FillFn fill);

  // One file.
  absl::Status Write(const std::string& path) const;
  // gguf-split shards <prefix>-00001-of-0000N.gguf..., at most max_tensors per shard (> 0).
  // Returns the shard paths through *paths when non-null.
  absl::Status WriteSplit(const std::string& prefix, int max_tensors,
                          std::vector<std::string>* paths = nullptr) const;

 private:
  struct PendingTensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    uint64_t nbytes;
    FillFn fill;
  };
  absl::Status CheckMetadata() const;
  // Writes one complete file holding tensors_[first, first + count) with metadata `kvs`.
  absl::Status WriteFile(const std::string& path, const std::vector<KeyValue>& kvs, size_t first,
                         size_t count) const;

  std::vector<KeyValue> kvs_;
  std::vector<PendingTensor> tensors_;
  uint32_t alignment_ = 32;
};

}  // namespace tritmoe::gguf
