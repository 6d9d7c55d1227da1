#include "runtime/gguf/gguf_parser.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "runtime/gguf/byte_cursor.h"

namespace tritmoe::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian uint32
// Smallest possible records, used to bound counts by what the rest of the file can hold:
// a KV is key length (8) + 1 key byte + type (4) + a 1-byte value; a tensor info is name length
// (8) + 1 name byte + n_dims (4) + one dim (8) + type (4) + offset (8).
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;
// Counts are bounded by the file size, which for a real model is ~10^11 bytes; reserve at most
// this many entries up front so a lying header cannot force a huge allocation before parsing.
constexpr uint64_t kMaxReserve = 1 << 16;

absl::Status Malformed(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

// Prefixes a cursor or validation error with the file and the record it concerns.
absl::Status InContext(const absl::Status& s, const std::string& path, const std::string& ctx) {
  return absl::Status(s.code(), absl::StrCat(path, ": ", ctx, ": ", s.message()));
}

// Printable rendering of a name that may hold arbitrary bytes.
std::string Printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s.substr(0, 80)) {
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    }
  }
  if (s.size() > 80) out += "...";
  return out;
}

bool IsKnownValueType(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::kFloat64); }

class Parser {
 public:
  explicit Parser(GgufFile* f, const uint8_t* base, uint64_t size, const std::string& path,
                  std::vector<KeyValue>* kvs, std::vector<TensorInfo>* tensors)
      : path_(path), cur_(base, size), kvs_(kvs), tensors_(tensors) {}

  absl::Status Run(uint32_t* version, uint32_t* alignment, uint64_t* data_offset, NameIndex* keys,
                   NameIndex* tensor_names);

 private:
  absl::Status ReadHeader(uint32_t* version, int64_t* n_tensors, int64_t* n_kv);
  absl::Status ReadKeyValue(int64_t index, NameIndex* keys);
  absl::Status ReadValue(ValueType type, uint64_t count, const std::string& key, Value* v);
  absl::Status ReadTensorInfo(int64_t index, NameIndex* names);
  absl::Status CheckAlignment(const KeyValue& kv, uint32_t* alignment);
  absl::Status CheckLayout(uint32_t alignment, uint64_t data_offset);

  const std::string& path_;
  ByteCursor cur_;
  std::vector<KeyValue>* kvs_;
  std::vector<TensorInfo>* tensors_;
};

absl::Status Parser::ReadHeader(uint32_t* version, int64_t* n_tensors, int64_t* n_kv) {
  uint32_t magic = 0;
  absl::Status s = cur_.Read(&magic, "magic");
  if (!s.ok()) return InContext(s, path_, "header");
  if (magic != kMagic) {
    char text[4];
    std::memcpy(text, &magic, 4);
    return Malformed(path_, absl::StrFormat("bad magic 0x%08x ('%s'): expected 'GGUF' "
                                            "(0x46554747); not a GGUF file",
                                            magic, Printable(std::string_view(text, 4))));
  }
  s = cur_.Read(version, "version");
  if (!s.ok()) return InContext(s, path_, "header");
  if (*version == 1) {
    return Malformed(path_, "GGUF version 1 is not supported (expected version 2 or 3)");
  }
  if (*version != 0 && (*version & 0xFFFF) == 0) {
    return Malformed(path_, absl::StrFormat("GGUF version field 0x%08x looks byte-swapped: "
                                            "big-endian files are not supported",
                                            *version));
  }
  if (*version != 2 && *version != 3) {
    return Malformed(path_,
                     absl::StrCat("unsupported GGUF version ", *version, " (expected 2 or 3)"));
  }
  s = cur_.Read(n_tensors, "n_tensors");
  if (s.ok()) s = cur_.Read(n_kv, "n_kv");
  if (!s.ok()) return InContext(s, path_, "header");
  if (*n_tensors < 0) return Malformed(path_, absl::StrCat("negative n_tensors ", *n_tensors));
  if (*n_kv < 0) return Malformed(path_, absl::StrCat("negative n_kv ", *n_kv));
  const uint64_t rest = cur_.remaining();
  if (static_cast<uint64_t>(*n_kv) > rest / kMinKvBytes) {
    return Malformed(path_, absl::StrFormat("absurd n_kv = %d: the remaining %u bytes of the file "
                                            "can hold at most %u key/value records",
                                            *n_kv, rest, rest / kMinKvBytes));
  }
  const uint64_t rest_tensors = rest - static_cast<uint64_t>(*n_kv) * kMinKvBytes;
  if (static_cast<uint64_t>(*n_tensors) > rest_tensors / kMinTensorInfoBytes) {
    return Malformed(path_, absl::StrFormat("absurd n_tensors = %d: the remaining %u bytes of the "
                                            "file can hold at most %u tensor infos",
                                            *n_tensors, rest, rest_tensors / kMinTensorInfoBytes));
  }
  return absl::OkStatus();
}

absl::Status Parser::ReadValue(ValueType type, uint64_t count, const std::string& key, Value* v) {
  // `count` elements of scalar type `type` (count == 1 and not stored as array for scalars).
  if (type == ValueType::kString) {
    v->strings.reserve(std::min(count, kMaxReserve));
    for (uint64_t i = 0; i < count; ++i) {
      std::string str;
      RETURN_IF_ERROR(cur_.ReadString(&str, kMaxStringBytes, "string value"));
      v->strings.push_back(std::move(str));
    }
    return absl::OkStatus();
  }
  const uint64_t n = count * ValueTypeSize(type);  // count <= 2^30, size <= 8: no overflow
  if (n > cur_.remaining()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "truncated file: %u values of type %s need %u bytes at offset %u but the file ends at %u",
        count, std::string(ValueTypeName(type)), n, cur_.pos(), cur_.size()));
  }
  v->raw.resize(n);
  return cur_.ReadBytes(v->raw.data(), n, "value");
}

absl::Status Parser::ReadKeyValue(int64_t index, NameIndex* keys) {
  KeyValue kv;
  const std::string ctx = absl::StrCat("key/value record #", index);
  absl::Status s = cur_.ReadString(&kv.key, kMaxStringBytes, "key");
  if (!s.ok()) return InContext(s, path_, ctx);
  if (kv.key.empty()) return Malformed(path_, absl::StrCat(ctx, ": empty key"));
  const std::string kctx = absl::StrCat("key '", Printable(kv.key), "'");
  if (keys->count(kv.key)) return Malformed(path_, absl::StrCat("duplicate key '", kv.key, "'"));

  uint32_t type = 0;
  s = cur_.Read(&type, "value type");
  if (!s.ok()) return InContext(s, path_, kctx);
  if (!IsKnownValueType(type)) {
    return Malformed(path_, absl::StrCat(kctx, ": unknown value type ", static_cast<int32_t>(type),
                                         " (expected 0..12)"));
  }
  kv.value.type = static_cast<ValueType>(type);
  if (kv.value.type == ValueType::kArray) {
    uint32_t elem = 0;
    s = cur_.Read(&elem, "array element type");
    if (!s.ok()) return InContext(s, path_, kctx);
    if (elem == static_cast<uint32_t>(ValueType::kArray)) {
      return Malformed(path_, absl::StrCat(kctx, ": nested arrays are not supported"));
    }
    if (!IsKnownValueType(elem)) {
      return Malformed(path_, absl::StrCat(kctx, ": unknown array element type ",
                                           static_cast<int32_t>(elem), " (expected 0..12)"));
    }
    kv.value.elem_type = static_cast<ValueType>(elem);
    uint64_t count = 0;
    s = cur_.Read(&count, "array count");
    if (!s.ok()) return InContext(s, path_, kctx);
    const uint64_t min_elem =
        kv.value.elem_type == ValueType::kString ? 8 : ValueTypeSize(kv.value.elem_type);
    if (count > kMaxArrayCount || count > cur_.remaining() / min_elem) {
      return Malformed(path_, absl::StrFormat("%s: absurd array count %u (limit %u; the remaining "
                                              "%u bytes can hold at most %u elements of %s)",
                                              kctx, count, kMaxArrayCount, cur_.remaining(),
                                              cur_.remaining() / min_elem,
                                              std::string(ValueTypeName(kv.value.elem_type))));
    }
    kv.value.count = count;
    s = ReadValue(kv.value.elem_type, count, kv.key, &kv.value);
  } else {
    s = ReadValue(kv.value.type, 1, kv.key, &kv.value);
  }
  if (!s.ok()) return InContext(s, path_, kctx);
  keys->emplace(kv.key, kvs_->size());
  kvs_->push_back(std::move(kv));
  return absl::OkStatus();
}

absl::Status Parser::CheckAlignment(const KeyValue& kv, uint32_t* alignment) {
  if (kv.value.type != ValueType::kUint32) {
    return Malformed(path_,
                     absl::StrCat("key 'general.alignment' has type ",
                                  std::string(ValueTypeName(kv.value.type)), ", expected uint32"));
  }
  uint32_t a = 0;
  std::memcpy(&a, kv.value.raw.data(), 4);
  if (a == 0 || (a & (a - 1)) != 0) {
    return Malformed(path_, absl::StrCat("key 'general.alignment' = ", a,
                                         " is not a power of two (must be non-zero)"));
  }
  *alignment = a;
  return absl::OkStatus();
}

absl::Status Parser::ReadTensorInfo(int64_t index, NameIndex* names) {
  TensorInfo t;
  const std::string ctx = absl::StrCat("tensor info #", index);
  uint64_t name_len = 0;
  {
    // Peek at the length to reject long names with a clear message before reading them.
    ByteCursor peek = cur_;
    absl::Status s = peek.Read(&name_len, "tensor name length");
    if (!s.ok()) return InContext(s, path_, ctx);
  }
  if (name_len > kMaxTensorNameBytes) {
    return Malformed(path_, absl::StrFormat("%s: tensor name of %u bytes is too long (must be < "
                                            "64 bytes, GGML_MAX_NAME)",
                                            ctx, name_len));
  }
  absl::Status s = cur_.ReadString(&t.name, kMaxTensorNameBytes, "tensor name");
  if (!s.ok()) return InContext(s, path_, ctx);
  if (t.name.empty()) return Malformed(path_, absl::StrCat(ctx, ": empty tensor name"));
  const std::string tctx = absl::StrCat("tensor '", Printable(t.name), "'");
  if (names->count(t.name)) {
    return Malformed(path_, absl::StrCat("duplicate tensor name '", Printable(t.name), "'"));
  }
  uint32_t n_dims = 0;
  s = cur_.Read(&n_dims, "n_dims");
  if (!s.ok()) return InContext(s, path_, tctx);
  if (n_dims < 1 || n_dims > kMaxDims) {
    return Malformed(path_, absl::StrCat(tctx, ": n_dims = ", n_dims, " (expected 1..4)"));
  }
  t.n_dims = static_cast<int>(n_dims);
  for (uint32_t d = 0; d < n_dims; ++d) {
    s = cur_.Read(&t.ne[d], "dimension");
    if (!s.ok()) return InContext(s, path_, tctx);
    if (t.ne[d] < 0) {
      return Malformed(path_, absl::StrCat(tctx, ": negative dimension ne[", d, "] = ", t.ne[d]));
    }
  }
  uint32_t type_id = 0;
  s = cur_.Read(&type_id, "type");
  if (!s.ok()) return InContext(s, path_, tctx);
  const TypeTraits* traits = FindTypeTraits(type_id);
  if (traits == nullptr) {
    const std::string_view name = GgmlTypeName(type_id);
    if (name == "unknown") {
      return Malformed(path_, absl::StrCat(tctx, ": type ", type_id, " (unknown)"));
    }
    return Malformed(path_, absl::StrCat(tctx, ": type ", type_id, " (", std::string(name),
                                         ") is not supported by TritMoE"));
  }
  t.type = traits->type;
  s = cur_.Read(&t.offset, "data offset");
  if (!s.ok()) return InContext(s, path_, tctx);

  if (t.ne[0] % traits->block_elems != 0) {
    return Malformed(path_, absl::StrCat(tctx, ": ne0 = ", t.ne[0], " is not a multiple of the ",
                                         traits->name, " block size ", traits->block_elems));
  }
  int64_t elems = 1;
  for (int d = 0; d < kMaxDims; ++d) {
    if (__builtin_mul_overflow(elems, t.ne[d], &elems)) {
      return Malformed(path_, absl::StrCat(tctx, ": element count overflows int64 (ne = [", t.ne[0],
                                           ", ", t.ne[1], ", ", t.ne[2], ", ", t.ne[3], "])"));
    }
  }
  int64_t bytes = 0;
  bool overflow = __builtin_mul_overflow(t.ne[0] / traits->block_elems,
                                         static_cast<int64_t>(traits->block_bytes), &bytes);
  for (int d = 1; d < kMaxDims; ++d) overflow |= __builtin_mul_overflow(bytes, t.ne[d], &bytes);
  if (overflow) {
    return Malformed(path_, absl::StrCat(tctx, ": byte size overflows int64"));
  }
  t.nbytes = static_cast<uint64_t>(bytes);
  names->emplace(t.name, tensors_->size());
  tensors_->push_back(std::move(t));
  return absl::OkStatus();
}

absl::Status Parser::CheckLayout(uint32_t alignment, uint64_t data_offset) {
  const uint64_t size = cur_.size();
  if (!tensors_->empty() && data_offset > size) {
    return Malformed(path_, absl::StrFormat("truncated file: the data section starts at %u but "
                                            "the file ends at %u",
                                            data_offset, size));
  }
  uint64_t expected = 0;
  for (const TensorInfo& t : *tensors_) {
    const std::string tctx = absl::StrCat("tensor '", Printable(t.name), "'");
    const uint64_t room = size - std::min(size, data_offset);
    if (t.offset > room || t.nbytes > room - t.offset) {
      const unsigned __int128 end =
          static_cast<unsigned __int128>(data_offset) + t.offset + t.nbytes;
      const std::string end_text =
          end >> 64 ? "beyond 2^64" : absl::StrCat(static_cast<uint64_t>(end));
      return Malformed(path_, absl::StrFormat("%s: data offset %u (+%u bytes) is out of range: it "
                                              "ends at file offset %s, past the end of the file "
                                              "(size %u)",
                                              tctx, t.offset, t.nbytes, end_text, size));
    }
    if (t.offset != expected) {
      return Malformed(
          path_, absl::StrFormat("%s: data offset %u is not sequential (expected %u: previous "
                                 "tensors padded to alignment %u; %s)",
                                 tctx, t.offset, expected, alignment,
                                 t.offset < expected ? "it overlaps them" : "it leaves a gap"));
    }
    expected += PadTo(t.nbytes, alignment);  // t.nbytes <= size, so no overflow
  }
  return absl::OkStatus();
}

absl::Status Parser::Run(uint32_t* version, uint32_t* alignment, uint64_t* data_offset,
                         NameIndex* keys, NameIndex* tensor_names) {
  int64_t n_tensors = 0, n_kv = 0;
  RETURN_IF_ERROR(ReadHeader(version, &n_tensors, &n_kv));
  kvs_->reserve(std::min<uint64_t>(n_kv, kMaxReserve));
  for (int64_t i = 0; i < n_kv; ++i) RETURN_IF_ERROR(ReadKeyValue(i, keys));
  *alignment = kDefaultAlignment;
  if (auto it = keys->find("general.alignment"); it != keys->end()) {
    RETURN_IF_ERROR(CheckAlignment((*kvs_)[it->second], alignment));
  }
  // Re-check the tensor count now that the KV records' real size is known.
  if (static_cast<uint64_t>(n_tensors) > cur_.remaining() / kMinTensorInfoBytes) {
    return Malformed(path_, absl::StrFormat("absurd n_tensors = %d: the remaining %u bytes after "
                                            "the key/value records can hold at most %u tensor "
                                            "infos",
                                            n_tensors, cur_.remaining(),
                                            cur_.remaining() / kMinTensorInfoBytes));
  }
  tensors_->reserve(std::min<uint64_t>(n_tensors, kMaxReserve));
  for (int64_t i = 0; i < n_tensors; ++i) RETURN_IF_ERROR(ReadTensorInfo(i, tensor_names));
  *data_offset = PadTo(cur_.pos(), *alignment);  // pos <= size < 2^63: no overflow
  return CheckLayout(*alignment, *data_offset);
}

}  // namespace

absl::Status GgufParser::Parse(GgufFile* file) {
  Parser p(file, file->base_, file->size_, file->path_, &file->kvs_, &file->tensors_);
  return p.Run(&file->version_, &file->alignment_, &file->data_offset_, &file->key_index_,
               &file->tensor_index_);
}

}  // namespace tritmoe::gguf
