#include "runtime/gguf/gguf_writer.h"

#include <cstdio>
#include <cstring>
#include <memory>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace tritmoe::gguf {
namespace {

constexpr uint32_t kVersion = 3;

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

void PutString(std::string* out, const std::string& s) {
  Put<uint64_t>(out, s.size());
  out->append(s);
}

template <typename T>
Value Scalar(ValueType type, T v) {
  Value value;
  value.type = type;
  value.raw.resize(sizeof(T));
  std::memcpy(value.raw.data(), &v, sizeof(T));
  return value;
}

template <typename T>
Value Array(ValueType elem, const std::vector<T>& v) {
  Value value;
  value.type = ValueType::kArray;
  value.elem_type = elem;
  value.count = v.size();
  value.raw.resize(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(value.raw.data(), v.data(), value.raw.size());
  return value;
}

void SetIn(std::vector<KeyValue>* kvs, const std::string& key, const Value& v) {
  for (KeyValue& kv : *kvs) {
    if (kv.key == key) {
      kv.value = v;
      return;
    }
  }
  kvs->push_back({key, v});
}

// Appends the encoded value, checking that it is self-consistent (SetValue accepts any Value).
absl::Status PutValue(std::string* out, const std::string& key, const Value& v) {
  const uint32_t type = static_cast<uint32_t>(v.type);
  if (type > static_cast<uint32_t>(ValueType::kFloat64)) {
    return absl::InvalidArgumentError(absl::StrCat("key '", key, "': unknown value type ", type));
  }
  Put<int32_t>(out, static_cast<int32_t>(type));
  ValueType scalar = v.type;
  uint64_t count = 1;
  if (v.is_array()) {
    if (v.elem_type == ValueType::kArray ||
        static_cast<uint32_t>(v.elem_type) > static_cast<uint32_t>(ValueType::kFloat64)) {
      return absl::InvalidArgumentError(absl::StrCat("key '", key, "': arrays of ",
                                                     std::string(ValueTypeName(v.elem_type)),
                                                     " cannot be written"));
    }
    Put<int32_t>(out, static_cast<int32_t>(v.elem_type));
    Put<uint64_t>(out, v.count);
    scalar = v.elem_type;
    count = v.count;
  }
  if (scalar == ValueType::kString) {
    if (v.strings.size() != count) {
      return absl::InvalidArgumentError(
          absl::StrCat("key '", key, "': holds ", v.strings.size(), " strings, expected ", count));
    }
    for (const std::string& s : v.strings) PutString(out, s);
    return absl::OkStatus();
  }
  if (v.raw.size() != count * ValueTypeSize(scalar)) {
    return absl::InvalidArgumentError(absl::StrCat("key '", key, "': holds ", v.raw.size(),
                                                   " bytes, expected ", count, " x ",
                                                   ValueTypeSize(scalar)));
  }
  out->append(reinterpret_cast<const char*>(v.raw.data()), v.raw.size());
  return absl::OkStatus();
}

// Closes and deletes a temporary file unless released.
class TempFile {
 public:
  explicit TempFile(std::string path) : path_(std::move(path)) {}
  ~TempFile() {
    if (f_ != nullptr) std::fclose(f_);
    if (!committed_) std::remove(path_.c_str());
  }
  absl::Status Open() {
    f_ = std::fopen(path_.c_str(), "wb");
    if (f_ == nullptr) {
      return absl::InternalError(
          absl::StrCat("cannot create '", path_, "': ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }
  absl::Status Write(const void* p, size_t n) {
    if (n > 0 && std::fwrite(p, 1, n, f_) != n) {
      return absl::InternalError(
          absl::StrCat("cannot write '", path_, "': ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }
  absl::Status CommitAs(const std::string& final_path) {
    const int rc = std::fclose(f_);
    f_ = nullptr;
    if (rc != 0) {
      return absl::InternalError(
          absl::StrCat("cannot write '", path_, "': ", std::strerror(errno)));
    }
    if (std::rename(path_.c_str(), final_path.c_str()) != 0) {
      return absl::InternalError(absl::StrCat("cannot rename '", path_, "' to '", final_path,
                                              "': ", std::strerror(errno)));
    }
    committed_ = true;
    return absl::OkStatus();
  }

 private:
  std::string path_;
  FILE* f_ = nullptr;
  bool committed_ = false;
};

}  // namespace

void GgufWriter::SetUint8(const std::string& k, uint8_t v) {
  SetValue(k, Scalar(ValueType::kUint8, v));
}
void GgufWriter::SetInt8(const std::string& k, int8_t v) {
  SetValue(k, Scalar(ValueType::kInt8, v));
}
void GgufWriter::SetUint16(const std::string& k, uint16_t v) {
  SetValue(k, Scalar(ValueType::kUint16, v));
}
void GgufWriter::SetInt16(const std::string& k, int16_t v) {
  SetValue(k, Scalar(ValueType::kInt16, v));
}
void GgufWriter::SetUint32(const std::string& k, uint32_t v) {
  SetValue(k, Scalar(ValueType::kUint32, v));
}
void GgufWriter::SetInt32(const std::string& k, int32_t v) {
  SetValue(k, Scalar(ValueType::kInt32, v));
}
void GgufWriter::SetUint64(const std::string& k, uint64_t v) {
  SetValue(k, Scalar(ValueType::kUint64, v));
}
void GgufWriter::SetInt64(const std::string& k, int64_t v) {
  SetValue(k, Scalar(ValueType::kInt64, v));
}
void GgufWriter::SetFloat32(const std::string& k, float v) {
  SetValue(k, Scalar(ValueType::kFloat32, v));
}
void GgufWriter::SetFloat64(const std::string& k, double v) {
  SetValue(k, Scalar(ValueType::kFloat64, v));
}
void GgufWriter::SetBool(const std::string& k, bool v) {
  SetValue(k, Scalar<uint8_t>(ValueType::kBool, v ? 1 : 0));
}
void GgufWriter::SetString(const std::string& k, const std::string& v) {
  Value value;
  value.type = ValueType::kString;
  value.strings = {v};
  SetValue(k, value);
}
void GgufWriter::SetStringArray(const std::string& k, const std::vector<std::string>& v) {
  Value value;
  value.type = ValueType::kArray;
  value.elem_type = ValueType::kString;
  value.count = v.size();
  value.strings = v;
  SetValue(k, value);
}
void GgufWriter::SetFloat32Array(const std::string& k, const std::vector<float>& v) {
  SetValue(k, Array(ValueType::kFloat32, v));
}
void GgufWriter::SetInt32Array(const std::string& k, const std::vector<int32_t>& v) {
  SetValue(k, Array(ValueType::kInt32, v));
}

void GgufWriter::SetValue(const std::string& key, const Value& v) {
  SetIn(&kvs_, key, v);
  if (key == "general.alignment" && v.type == ValueType::kUint32 && v.raw.size() == 4) {
    std::memcpy(&alignment_, v.raw.data(), 4);
  }
}

absl::Status GgufWriter::AddTensor(const std::string& name, GgmlType type,
                                   const std::vector<int64_t>& ne, FillFn fill) {
  if (name.empty() || name.size() > kMaxTensorNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor name '", name, "' must be 1..", kMaxTensorNameBytes, " bytes"));
  }
  for (const PendingTensor& t : tensors_) {
    if (t.name == name) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' added twice"));
    }
  }
  if (ne.empty() || ne.size() > static_cast<size_t>(kMaxDims)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "': ", ne.size(), " dimensions (expected 1..4)"));
  }
  const TypeTraits& traits = GetTypeTraits(type);
  if (ne[0] % traits.block_elems != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': ne0 = ", ne[0],
                                                   " is not a multiple of the ", traits.name,
                                                   " block size ", traits.block_elems));
  }
  for (size_t d = 0; d < ne.size(); ++d) {
    if (ne[d] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "': negative dimension ne[", d, "] = ", ne[d]));
    }
  }
  int64_t bytes = 0;
  for (size_t d = 0; d < ne.size(); ++d) {
    const bool overflow =
        d == 0 ? __builtin_mul_overflow(ne[0] / traits.block_elems,
                                        static_cast<int64_t>(traits.block_bytes), &bytes)
               : __builtin_mul_overflow(bytes, ne[d], &bytes);
    if (overflow) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': size overflows"));
    }
  }
  tensors_.push_back({name, type, ne, static_cast<uint64_t>(bytes), std::move(fill)});
  return absl::OkStatus();
}

absl::Status GgufWriter::CheckMetadata() const {
  std::unordered_set<std::string> seen;
  for (const KeyValue& kv : kvs_) {
    if (kv.key.empty()) return absl::InvalidArgumentError("empty metadata key");
    if (kv.key == "general.alignment") {
      if (kv.value.type != ValueType::kUint32) {
        return absl::InvalidArgumentError(absl::StrCat("key 'general.alignment' has type ",
                                                       std::string(ValueTypeName(kv.value.type)),
                                                       ", expected uint32"));
      }
      if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("key 'general.alignment' = ", alignment_, " is not a power of two"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status GgufWriter::WriteFile(const std::string& path, const std::vector<KeyValue>& kvs,
                                   size_t first, size_t count) const {
  std::string meta;
  meta.append("GGUF", 4);
  Put<uint32_t>(&meta, kVersion);
  Put<int64_t>(&meta, static_cast<int64_t>(count));
  Put<int64_t>(&meta, static_cast<int64_t>(kvs.size()));
  for (const KeyValue& kv : kvs) {
    PutString(&meta, kv.key);
    RETURN_IF_ERROR(PutValue(&meta, kv.key, kv.value));
  }
  uint64_t offset = 0, max_bytes = 0;
  for (size_t i = first; i < first + count; ++i) {
    const PendingTensor& t = tensors_[i];
    // ggml_n_dims: trailing dims of size 1 are not written.
    size_t n_dims = t.ne.size();
    while (n_dims > 1 && t.ne[n_dims - 1] == 1) --n_dims;
    PutString(&meta, t.name);
    Put<uint32_t>(&meta, static_cast<uint32_t>(n_dims));
    for (size_t d = 0; d < n_dims; ++d) Put<int64_t>(&meta, t.ne[d]);
    Put<int32_t>(&meta, static_cast<int32_t>(t.type));
    Put<uint64_t>(&meta, offset);
    offset += PadTo(t.nbytes, alignment_);
    max_bytes = std::max(max_bytes, t.nbytes);
  }
  if (count > 0) meta.resize(PadTo(meta.size(), alignment_), '\0');

  TempFile out(path + ".tmp");
  RETURN_IF_ERROR(out.Open());
  RETURN_IF_ERROR(out.Write(meta.data(), meta.size()));
  std::unique_ptr<uint8_t[]> buf(new uint8_t[std::max<uint64_t>(max_bytes, 1)]);
  const std::vector<uint8_t> zeros(alignment_, 0);
  for (size_t i = first; i < first + count; ++i) {
    const PendingTensor& t = tensors_[i];
    if (t.fill) {
      absl::Status s = t.fill(buf.get());
      if (!s.ok()) {
        return absl::Status(
            s.code(), absl::StrCat("writing '", path, "': tensor '", t.name, "': ", s.message()));
      }
    } else {
      std::memset(buf.get(), 0, t.nbytes);
    }
    RETURN_IF_ERROR(out.Write(buf.get(), t.nbytes));
    RETURN_IF_ERROR(out.Write(zeros.data(), PadTo(t.nbytes, alignment_) - t.nbytes));
  }
  return out.CommitAs(path);
}

absl::Status GgufWriter::Write(const std::string& path) const {
  RETURN_IF_ERROR(CheckMetadata());
  return WriteFile(path, kvs_, 0, tensors_.size());
}

absl::Status GgufWriter::WriteSplit(const std::string& prefix, int max_tensors,
                                    std::vector<std::string>* paths) const {
  if (max_tensors <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max tensors per shard must be positive, got ", max_tensors));
  }
  RETURN_IF_ERROR(CheckMetadata());
  const size_t n = tensors_.size();
  const size_t n_shards = std::max<size_t>(1, (n + max_tensors - 1) / max_tensors);
  if (n_shards > 65535 || n > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat(n, " tensors in shards of ", max_tensors, " need too many shards"));
  }
  if (paths != nullptr) paths->clear();
  for (size_t i = 0; i < n_shards; ++i) {
    // Shard 0 carries all metadata then the split keys; the others only the split keys (plus the
    // alignment when it is not the default, which they need to be read correctly).
    std::vector<KeyValue> kvs;
    if (i == 0) kvs = kvs_;
    SetIn(&kvs, "split.no", Scalar<uint16_t>(ValueType::kUint16, static_cast<uint16_t>(i)));
    SetIn(&kvs, "split.count",
          Scalar<uint16_t>(ValueType::kUint16, static_cast<uint16_t>(n_shards)));
    SetIn(&kvs, "split.tensors.count", Scalar<int32_t>(ValueType::kInt32, static_cast<int32_t>(n)));
    if (i > 0 && alignment_ != kDefaultAlignment) {
      SetIn(&kvs, "general.alignment", Scalar<uint32_t>(ValueType::kUint32, alignment_));
    }
    const std::string path = SplitPath(prefix, static_cast<int>(i + 1), static_cast<int>(n_shards));
    const size_t first = i * max_tensors;
    RETURN_IF_ERROR(
        WriteFile(path, kvs, first, std::min<size_t>(max_tensors, n - std::min(n, first))));
    if (paths != nullptr) paths->push_back(path);
  }
  return absl::OkStatus();
}

}  // namespace tritmoe::gguf
