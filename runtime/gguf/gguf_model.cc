// GgufModel: opening split sets and the typed metadata getters.
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/gguf/gguf.h"

namespace tritmoe::gguf {
namespace {

template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Integer element i of raw bytes of type t, widened. *is_negative tells which field holds it.
struct WideInt {
  bool negative = false;
  uint64_t u = 0;  // when !negative
  int64_t s = 0;   // when negative
};
WideInt LoadInt(ValueType t, const uint8_t* p) {
  int64_t s = 0;
  switch (t) {
    case ValueType::kUint8:
      return {false, Load<uint8_t>(p), 0};
    case ValueType::kUint16:
      return {false, Load<uint16_t>(p), 0};
    case ValueType::kUint32:
      return {false, Load<uint32_t>(p), 0};
    case ValueType::kUint64:
      return {false, Load<uint64_t>(p), 0};
    case ValueType::kInt8:
      s = Load<int8_t>(p);
      break;
    case ValueType::kInt16:
      s = Load<int16_t>(p);
      break;
    case ValueType::kInt32:
      s = Load<int32_t>(p);
      break;
    case ValueType::kInt64:
      s = Load<int64_t>(p);
      break;
    default:
      break;
  }
  if (s < 0) return {true, 0, s};
  return {false, static_cast<uint64_t>(s), 0};
}

std::string TypeDesc(const Value& v) {
  if (v.is_array()) return absl::StrCat("array of ", std::string(ValueTypeName(v.elem_type)));
  return std::string(std::string(ValueTypeName(v.type)));
}

absl::Status WrongType(const std::string& path, std::string_view key, const Value& v,
                       std::string_view expected) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": key '", std::string(key), "' has type ",
                                                 TypeDesc(v), ", expected ",
                                                 std::string(expected)));
}

// Reads a split key with the exact type the gguf-split convention gives it.
absl::StatusOr<int64_t> SplitKey(const GgufFile& f, std::string_view key, ValueType type) {
  const KeyValue* kv = f.FindKey(key);
  if (kv == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), ": shard lacks key '", std::string(key), "'"));
  }
  if (kv->value.type != type) {
    return WrongType(f.path(), key, kv->value, std::string(ValueTypeName(type)));
  }
  return type == ValueType::kUint16 ? static_cast<int64_t>(Load<uint16_t>(kv->value.raw.data()))
                                    : static_cast<int64_t>(Load<int32_t>(kv->value.raw.data()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<GgufModel>> GgufModel::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> first, GgufFile::Open(path));
  std::unique_ptr<GgufModel> m(new GgufModel());
  int64_t count = 1;
  if (first->FindKey("split.count") != nullptr) {
    ASSIGN_OR_RETURN(count, SplitKey(*first, "split.count", ValueType::kUint16));
  }
  if (count <= 1) {
    if (count < 1) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": split.count = 0"));
    }
    m->shards_.push_back(std::move(first));
  } else {
    SplitName name;
    if (!ParseSplitPath(path, &name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": split.count = ", count,
          " but the file name does not follow <prefix>-NNNNN-of-MMMMM.gguf, so the other shards "
          "cannot be found"));
    }
    if (name.shard_count != count) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": the name says ", name.shard_count,
                                                     " shards but split.count = ", count));
    }
    m->shards_.resize(count);
    m->shards_[name.shard_no - 1] = std::move(first);
    for (int i = 0; i < count; ++i) {
      if (m->shards_[i] != nullptr) continue;
      const std::string shard_path = SplitPath(name.prefix, i + 1, static_cast<int>(count));
      absl::StatusOr<std::unique_ptr<GgufFile>> shard = GgufFile::Open(shard_path);
      if (absl::IsNotFound(shard.status())) {
        return absl::NotFoundError(absl::StrCat("shard ", i + 1, " of ", count, " is missing: '",
                                                shard_path, "' (opening the split set of '", path,
                                                "')"));
      }
      if (!shard.ok()) return shard.status();
      m->shards_[i] = std::move(*shard);
    }
    for (int i = 0; i < count; ++i) {
      const GgufFile& f = *m->shards_[i];
      ASSIGN_OR_RETURN(int64_t no, SplitKey(f, "split.no", ValueType::kUint16));
      ASSIGN_OR_RETURN(int64_t c, SplitKey(f, "split.count", ValueType::kUint16));
      if (no != i) {
        return absl::InvalidArgumentError(absl::StrCat(f.path(), ": split.no = ", no, ", expected ",
                                                       i, " for shard ", i + 1, " of ", count));
      }
      if (c != count) {
        return absl::InvalidArgumentError(absl::StrCat(
            f.path(), ": split.count = ", c, ", expected ", count, " (from the other shards)"));
      }
    }
  }
  RETURN_IF_ERROR(m->IndexTensors());
  if (m->n_shards() > 1) {
    for (int i = 0; i < m->n_shards(); ++i) {
      const GgufFile& f = *m->shards_[i];
      if (f.FindKey("split.tensors.count") == nullptr) continue;
      ASSIGN_OR_RETURN(int64_t total, SplitKey(f, "split.tensors.count", ValueType::kInt32));
      if (total != static_cast<int64_t>(m->tensors_.size())) {
        return absl::InvalidArgumentError(absl::StrCat(f.path(), ": split.tensors.count = ", total,
                                                       " but the ", m->n_shards(), " shards hold ",
                                                       m->tensors_.size(), " tensors"));
      }
    }
  }
  return m;
}

std::unique_ptr<GgufModel> GgufModel::FromFile(std::unique_ptr<GgufFile> file) {
  std::unique_ptr<GgufModel> m(new GgufModel());
  m->shards_.push_back(std::move(file));
  m->IndexTensors().IgnoreError();  // names are unique within one file (checked when parsed)
  return m;
}

absl::Status GgufModel::IndexTensors() {
  tensors_.clear();
  tensor_index_.clear();
  for (int i = 0; i < n_shards(); ++i) {
    for (const TensorInfo& t : shards_[i]->tensors()) {
      TensorInfo copy = t;
      copy.shard = i;
      auto [it, inserted] = tensor_index_.emplace(t.name, tensors_.size());
      if (!inserted) {
        const TensorInfo& prev = tensors_[it->second];
        return absl::InvalidArgumentError(
            absl::StrCat(shards_[i]->path(), ": duplicate tensor name '", t.name, "' (also in ",
                         shards_[prev.shard]->path(), ")"));
      }
      tensors_.push_back(std::move(copy));
    }
  }
  return absl::OkStatus();
}

const TensorInfo* GgufModel::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const uint8_t* GgufModel::TensorData(const TensorInfo& t) const {
  return shards_[t.shard]->TensorData(t);
}

namespace {

absl::StatusOr<const Value*> Lookup(const GgufFile& f, std::string_view key) {
  const KeyValue* kv = f.FindKey(key);
  if (kv == nullptr) {
    return absl::NotFoundError(absl::StrCat(f.path(), ": key '", std::string(key), "' not found"));
  }
  return &kv->value;
}

}  // namespace

absl::StatusOr<std::string> GgufModel::GetString(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Lookup(shard(0), key));
  if (v->type != ValueType::kString) return WrongType(path(), key, *v, "string");
  return v->strings[0];
}

absl::StatusOr<uint64_t> GgufModel::GetUint(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Lookup(shard(0), key));
  if (!IsIntegerType(v->type)) return WrongType(path(), key, *v, "an integer");
  WideInt w = LoadInt(v->type, v->raw.data());
  if (w.negative) {
    return absl::InvalidArgumentError(absl::StrCat(path(), ": key '", std::string(key), "' = ", w.s,
                                                   " is negative, expected unsigned"));
  }
  return w.u;
}

absl::StatusOr<int64_t> GgufModel::GetInt(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Lookup(shard(0), key));
  if (!IsIntegerType(v->type)) return WrongType(path(), key, *v, "an integer");
  WideInt w = LoadInt(v->type, v->raw.data());
  if (w.negative) return w.s;
  if (w.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return absl::OutOfRangeError(
        absl::StrCat(path(), ": key '", std::string(key), "' = ", w.u, " does not fit in int64"));
  }
  return static_cast<int64_t>(w.u);
}

absl::StatusOr<double> GgufModel::GetFloat(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Lookup(shard(0), key));
  if (v->type == ValueType::kFloat32) return static_cast<double>(Load<float>(v->raw.data()));
  if (v->type == ValueType::kFloat64) return Load<double>(v->raw.data());
  if (IsIntegerType(v->type)) {
    WideInt w = LoadInt(v->type, v->raw.data());
    return w.negative ? static_cast<double>(w.s) : static_cast<double>(w.u);
  }
  return WrongType(path(), key, *v, "a number");
}

absl::StatusOr<bool> GgufModel::GetBool(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Lookup(shard(0), key));
  if (v->type != ValueType::kBool) return WrongType(path(), key, *v, "bool");
  return v->raw[0] != 0;
}

absl::StatusOr<std::vector<std::string>> GgufModel::GetStringArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Lookup(shard(0), key));
  if (!v->is_array() || v->elem_type != ValueType::kString) {
    return WrongType(path(), key, *v, "array of string");
  }
  return v->strings;
}

absl::StatusOr<std::vector<float>> GgufModel::GetFloatArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Lookup(shard(0), key));
  if (!v->is_array() ||
      (v->elem_type != ValueType::kFloat32 && v->elem_type != ValueType::kFloat64)) {
    return WrongType(path(), key, *v, "array of float32 or float64");
  }
  std::vector<float> out(v->count);
  for (uint64_t i = 0; i < v->count; ++i) {
    out[i] = v->elem_type == ValueType::kFloat32
                 ? Load<float>(v->raw.data() + 4 * i)
                 : static_cast<float>(Load<double>(v->raw.data() + 8 * i));
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> GgufModel::GetIntArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Lookup(shard(0), key));
  if (!v->is_array() || !IsIntegerType(v->elem_type)) {
    return WrongType(path(), key, *v, "array of integers");
  }
  const uint64_t size = ValueTypeSize(v->elem_type);
  std::vector<int64_t> out(v->count);
  for (uint64_t i = 0; i < v->count; ++i) {
    WideInt w = LoadInt(v->elem_type, v->raw.data() + size * i);
    if (!w.negative && w.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::OutOfRangeError(absl::StrCat(path(), ": key '", std::string(key), "': element ",
                                                i, " = ", w.u, " does not fit in int64"));
    }
    out[i] = w.negative ? w.s : static_cast<int64_t>(w.u);
  }
  return out;
}

}  // namespace tritmoe::gguf
