#include "runtime/gguf/gguf.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "runtime/gguf/gguf_parser.h"
#include "runtime/gguf/mapped_file.h"

namespace tritmoe::gguf {

std::string_view ValueTypeName(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
      return "uint8";
    case ValueType::kInt8:
      return "int8";
    case ValueType::kUint16:
      return "uint16";
    case ValueType::kInt16:
      return "int16";
    case ValueType::kUint32:
      return "uint32";
    case ValueType::kInt32:
      return "int32";
    case ValueType::kFloat32:
      return "float32";
    case ValueType::kBool:
      return "bool";
    case ValueType::kString:
      return "string";
    case ValueType::kArray:
      return "array";
    case ValueType::kUint64:
      return "uint64";
    case ValueType::kInt64:
      return "int64";
    case ValueType::kFloat64:
      return "float64";
  }
  return "unknown";
}

uint64_t ValueTypeSize(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kBool:
      return 1;
    case ValueType::kUint16:
    case ValueType::kInt16:
      return 2;
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kFloat32:
      return 4;
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kFloat64:
      return 8;
    case ValueType::kString:
    case ValueType::kArray:
      return 0;
  }
  return 0;
}

bool IsIntegerType(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kUint16:
    case ValueType::kInt16:
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kUint64:
    case ValueType::kInt64:
      return true;
    default:
      return false;
  }
}

uint64_t TensorInfo::row_bytes() const { return static_cast<uint64_t>(RowBytes(type, ne[0])); }

GgufFile::~GgufFile() = default;

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapping, MappedFile::Open(path));
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  f->base_ = mapping->data();
  f->size_ = mapping->size();
  f->mapping_ = std::move(mapping);
  RETURN_IF_ERROR(GgufParser::Parse(f.get()));
  return f;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::OpenFromBuffer(const uint8_t* data, size_t size,
                                                                   const std::string& name) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = name;
  f->buffer_.assign(data, data + size);
  f->base_ = f->buffer_.empty() ? nullptr : f->buffer_.data();
  f->size_ = size;
  RETURN_IF_ERROR(GgufParser::Parse(f.get()));
  return f;
}

const KeyValue* GgufFile::FindKey(std::string_view key) const {
  auto it = key_index_.find(key);
  return it == key_index_.end() ? nullptr : &kvs_[it->second];
}

const TensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::string SplitPath(const std::string& prefix, int shard_no, int shard_count) {
  return absl::StrFormat("%s-%05d-of-%05d.gguf", prefix, shard_no, shard_count);
}

bool ParseSplitPath(const std::string& path, SplitName* out) {
  // "-NNNNN-of-MMMMM.gguf" is 20 characters.
  constexpr size_t kSuffix = 20;
  if (path.size() < kSuffix) return false;
  const std::string_view s = std::string_view(path).substr(path.size() - kSuffix);
  auto digits = [&](size_t at, int* v) {
    *v = 0;
    for (size_t i = at; i < at + 5; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      *v = *v * 10 + (s[i] - '0');
    }
    return true;
  };
  int no = 0, count = 0;
  if (s[0] != '-' || s.substr(6, 4) != "-of-" || s.substr(15) != ".gguf") return false;
  if (!digits(1, &no) || !digits(10, &count)) return false;
  if (no < 1 || no > count) return false;
  out->prefix = path.substr(0, path.size() - kSuffix);
  out->shard_no = no;
  out->shard_count = count;
  return true;
}

}  // namespace tritmoe::gguf
