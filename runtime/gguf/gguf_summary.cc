#include "runtime/gguf/gguf_summary.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace tritmoe::gguf {
namespace {

template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <typename F>
std::string Shortest(F f) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), f);
  return std::string(buf, r.ptr);
}

// One scalar element (not a string) as text.
std::string ScalarText(ValueType t, const uint8_t* p) {
  switch (t) {
    case ValueType::kUint8:
      return absl::StrCat(Load<uint8_t>(p));
    case ValueType::kInt8:
      return absl::StrCat(Load<int8_t>(p));
    case ValueType::kUint16:
      return absl::StrCat(Load<uint16_t>(p));
    case ValueType::kInt16:
      return absl::StrCat(Load<int16_t>(p));
    case ValueType::kUint32:
      return absl::StrCat(Load<uint32_t>(p));
    case ValueType::kInt32:
      return absl::StrCat(Load<int32_t>(p));
    case ValueType::kUint64:
      return absl::StrCat(Load<uint64_t>(p));
    case ValueType::kInt64:
      return absl::StrCat(Load<int64_t>(p));
    case ValueType::kFloat32:
      return Shortest(Load<float>(p));
    case ValueType::kFloat64:
      return Shortest(Load<double>(p));
    case ValueType::kBool:
      return p[0] ? "true" : "false";
    default:
      return "?";
  }
}

nlohmann::json ScalarJson(ValueType t, const uint8_t* p) {
  switch (t) {
    case ValueType::kUint8:
      return Load<uint8_t>(p);
    case ValueType::kInt8:
      return Load<int8_t>(p);
    case ValueType::kUint16:
      return Load<uint16_t>(p);
    case ValueType::kInt16:
      return Load<int16_t>(p);
    case ValueType::kUint32:
      return Load<uint32_t>(p);
    case ValueType::kInt32:
      return Load<int32_t>(p);
    case ValueType::kUint64:
      return Load<uint64_t>(p);
    case ValueType::kInt64:
      return Load<int64_t>(p);
    // Through the shortest decimal form, so 1e-6f prints as 1e-06, not 9.99999997e-07.
    case ValueType::kFloat32:
      return std::stod(Shortest(Load<float>(p)));
    case ValueType::kFloat64:
      return Load<double>(p);
    case ValueType::kBool:
      return p[0] != 0;
    default:
      return nullptr;
  }
}

nlohmann::json ValueJson(const Value& v) {
  if (v.type == ValueType::kString) return v.strings[0];
  if (!v.is_array()) return ScalarJson(v.type, v.raw.data());
  nlohmann::json arr = nlohmann::json::array();
  if (v.elem_type == ValueType::kString) {
    for (const std::string& s : v.strings) arr.push_back(s);
  } else {
    const uint64_t size = ValueTypeSize(v.elem_type);
    for (uint64_t i = 0; i < v.count; ++i) arr.push_back(ScalarJson(v.elem_type, &v.raw[i * size]));
  }
  return arr;
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is not valid.
size_t Utf8Length(std::string_view s, size_t i) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 0;
  }
  return n;
}

// Quoted for a terminal: valid UTF-8 kept, control characters and invalid bytes as \xNN.
std::string Quote(const std::string& s, size_t max_chars = 60) {
  std::string out = "\"";
  size_t i = 0;
  for (; i < s.size() && i < max_chars;) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t n = Utf8Length(s, i);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (n == 0 || c < 0x20 || c == 0x7f) {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    } else {
      out.append(s, i, n);
      i += n;
      continue;
    }
    ++i;
  }
  if (i < s.size()) out += "...";
  return out + "\"";
}

std::string Shape(const std::array<int64_t, 4>& ne, int n_dims) {
  std::string out = "[";
  for (int d = 0; d < n_dims; ++d) absl::StrAppend(&out, d ? ", " : "", ne[d]);
  return out + "]";
}

// 1234567 -> "1,234,567".
std::string Grouped(uint64_t v) {
  std::string digits = absl::StrCat(v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string HumanBytes(uint64_t b) {
  if (b >= (uint64_t{1} << 30)) return absl::StrFormat("%.2f GiB", b / 1073741824.0);
  if (b >= (uint64_t{1} << 20)) return absl::StrFormat("%.2f MiB", b / 1048576.0);
  if (b >= 1024) return absl::StrFormat("%.2f KiB", b / 1024.0);
  return absl::StrCat(b, " B");
}

std::string StringKey(const GgufModel& m, std::string_view key) {
  const KeyValue* kv = m.FindKey(key);
  return kv && kv->value.type == ValueType::kString ? kv->value.strings[0] : std::string();
}

// Layer index of "blk.N.<rest>" when rest matches, else -1.
int LayerOf(std::string_view name, std::string_view rest) {
  if (name.substr(0, 4) != "blk.") return -1;
  size_t i = 4;
  int layer = 0;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9' && i < 12) {
    layer = layer * 10 + (name[i] - '0');
    ++i;
  }
  if (i == 4 || i >= name.size() || name[i] != '.') return -1;
  return name.substr(i + 1) == rest ? layer : -1;
}

// deepseek2 keys llama.cpp's loader requires (deepseek_r1_gguf_kv.tsv, column "req").
constexpr std::array<const char*, 11> kRequiredDeepseek2 = {
    "block_count",
    "context_length",
    "embedding_length",
    "attention.head_count",
    "attention.layer_norm_rms_epsilon",
    "attention.q_lora_rank",
    "attention.kv_lora_rank",
    "expert_count",
    "expert_used_count",
    "expert_shared_count",
    "expert_feed_forward_length",
};

}  // namespace

std::string_view AttentionLayoutName(AttentionLayout layout) {
  switch (layout) {
    case AttentionLayout::kNone:
      return "none";
    case AttentionLayout::kMla:
      return "mla";
    case AttentionLayout::kLegacy:
      return "legacy";
    case AttentionLayout::kMixed:
      return "mixed";
  }
  return "none";
}

bool IsRoutedExpertTensor(std::string_view name) {
  return LayerOf(name, "ffn_gate_exps.weight") >= 0 || LayerOf(name, "ffn_up_exps.weight") >= 0 ||
         LayerOf(name, "ffn_down_exps.weight") >= 0;
}

std::string_view FileTypeName(uint32_t ft) {
  // llama_ftype values (formats.md §1.6); 4-6 and 33-35 are removed.
  static constexpr std::array<const char*, 42> kNames = {"ALL_F32",
                                                         "MOSTLY_F16",
                                                         "MOSTLY_Q4_0",
                                                         "MOSTLY_Q4_1",
                                                         "",
                                                         "",
                                                         "",
                                                         "MOSTLY_Q8_0",
                                                         "MOSTLY_Q5_0",
                                                         "MOSTLY_Q5_1",
                                                         "MOSTLY_Q2_K",
                                                         "MOSTLY_Q3_K_S",
                                                         "MOSTLY_Q3_K_M",
                                                         "MOSTLY_Q3_K_L",
                                                         "MOSTLY_Q4_K_S",
                                                         "MOSTLY_Q4_K_M",
                                                         "MOSTLY_Q5_K_S",
                                                         "MOSTLY_Q5_K_M",
                                                         "MOSTLY_Q6_K",
                                                         "MOSTLY_IQ2_XXS",
                                                         "MOSTLY_IQ2_XS",
                                                         "MOSTLY_Q2_K_S",
                                                         "MOSTLY_IQ3_XS",
                                                         "MOSTLY_IQ3_XXS",
                                                         "MOSTLY_IQ1_S",
                                                         "MOSTLY_IQ4_NL",
                                                         "MOSTLY_IQ3_S",
                                                         "MOSTLY_IQ3_M",
                                                         "MOSTLY_IQ2_S",
                                                         "MOSTLY_IQ2_M",
                                                         "MOSTLY_IQ4_XS",
                                                         "MOSTLY_IQ1_M",
                                                         "MOSTLY_BF16",
                                                         "",
                                                         "",
                                                         "",
                                                         "MOSTLY_TQ1_0",
                                                         "MOSTLY_TQ2_0",
                                                         "MOSTLY_MXFP4_MOE",
                                                         "MOSTLY_NVFP4",
                                                         "MOSTLY_Q1_0",
                                                         "MOSTLY_Q2_0"};
  if (ft < kNames.size() && kNames[ft][0] != '\0') return kNames[ft];
  return "unknown";
}

std::string ValueTypeDesc(const Value& v) {
  if (v.is_array()) return absl::StrCat("array[", std::string(ValueTypeName(v.elem_type)), "]");
  return std::string(ValueTypeName(v.type));
}

std::string FormatValue(const Value& v, size_t max_elems) {
  if (v.type == ValueType::kString) return Quote(v.strings[0]);
  if (!v.is_array()) return ScalarText(v.type, v.raw.data());
  std::string out = "[";
  const uint64_t shown = std::min<uint64_t>(v.count, max_elems);
  const uint64_t size = ValueTypeSize(v.elem_type);
  for (uint64_t i = 0; i < shown; ++i) {
    if (i) out += ", ";
    out += v.elem_type == ValueType::kString ? Quote(v.strings[i], 40)
                                             : ScalarText(v.elem_type, &v.raw[i * size]);
  }
  if (shown < v.count) absl::StrAppend(&out, ", ... (", v.count, " total)");
  return out + "]";
}

GgufSummary Summarize(const GgufModel& m) {
  GgufSummary s;
  for (int i = 0; i < m.n_shards(); ++i) {
    s.files.push_back(m.shard(i).path());
    s.file_sizes.push_back(m.shard(i).file_size());
  }
  s.version = m.shard(0).version();
  s.alignment = m.shard(0).alignment();
  s.architecture = StringKey(m, "general.architecture");
  s.name = StringKey(m, "general.name");
  if (const KeyValue* kv = m.FindKey("general.file_type");
      kv && kv->value.type == ValueType::kUint32) {
    s.file_type = Load<uint32_t>(kv->value.raw.data());
  }
  s.tokenizer_model = StringKey(m, "tokenizer.ggml.model");
  s.tokenizer_pre = StringKey(m, "tokenizer.ggml.pre");
  const std::string prefix = s.architecture.empty() ? "" : s.architecture + ".";
  if (const KeyValue* kv = m.FindKey("tokenizer.ggml.tokens"); kv && kv->value.is_array()) {
    s.vocab_size = static_cast<int64_t>(kv->value.count);
  } else if (!prefix.empty()) {
    absl::StatusOr<int64_t> v = m.GetInt(prefix + "vocab_size");
    if (v.ok()) s.vocab_size = *v;
  }
  if (!prefix.empty()) {
    for (const KeyValue& kv : m.kvs()) {
      if (kv.key.compare(0, prefix.size(), prefix) == 0) s.hparams.push_back(kv);
    }
  }
  if (s.architecture == "deepseek2") {
    for (const char* k : kRequiredDeepseek2) {
      if (m.FindKey(prefix + k) == nullptr) s.missing_required.push_back(prefix + k);
    }
  }

  std::map<int, int> k_b, v_b;  // layer -> present
  std::map<GgmlType, TypeTotal> totals;
  for (const TensorInfo& t : m.tensors()) {
    SummaryTensor row;
    row.name = t.name;
    row.type = t.type;
    row.n_dims = t.n_dims;
    row.ne = t.ne;
    row.elements = t.n_elements();
    row.bytes = t.nbytes;
    row.shard = t.shard;
    row.routed_expert = IsRoutedExpertTensor(t.name);
    if (int l = LayerOf(t.name, "attn_k_b.weight"); l >= 0) k_b[l] = 1;
    if (int l = LayerOf(t.name, "attn_v_b.weight"); l >= 0) v_b[l] = 1;
    if (LayerOf(t.name, "attn_kv_b.weight") >= 0) ++s.layers_legacy;
    TypeTotal& tt = totals[t.type];
    tt.type = t.type;
    ++tt.tensors;
    tt.elements += row.elements;
    tt.bytes += row.bytes;
    s.total_elements += row.elements;
    s.total_bytes += row.bytes;
    if (row.routed_expert) {
      s.routed_expert_elements += row.elements;
      s.routed_expert_bytes += row.bytes;
    }
    s.tensors.push_back(std::move(row));
  }
  for (const auto& [layer, unused] : k_b) s.layers_mla += v_b.count(layer) ? 1 : 0;
  if (s.layers_mla > 0 && s.layers_legacy > 0) {
    s.attention = AttentionLayout::kMixed;
  } else if (s.layers_mla > 0) {
    s.attention = AttentionLayout::kMla;
  } else if (s.layers_legacy > 0) {
    s.attention = AttentionLayout::kLegacy;
  }
  for (auto& [type, tt] : totals) {
    tt.bits_per_weight = tt.elements > 0 ? 8.0 * tt.bytes / tt.elements : 0;
    s.by_type.push_back(tt);
  }
  std::stable_sort(s.by_type.begin(), s.by_type.end(),
                   [](const TypeTotal& a, const TypeTotal& b) { return a.bytes > b.bytes; });
  s.other_bytes = s.total_bytes - s.routed_expert_bytes;
  s.routed_expert_share =
      s.total_bytes > 0 ? static_cast<double>(s.routed_expert_bytes) / s.total_bytes : 0;
  s.bits_per_weight = s.total_elements > 0 ? 8.0 * s.total_bytes / s.total_elements : 0;
  return s;
}

std::string SummaryText(const GgufSummary& s, bool with_tensors) {
  std::string out;
  auto line = [&out](std::string_view label, const std::string& value) {
    absl::StrAppendFormat(&out, "%-15s %s\n", std::string(label), value);
  };
  if (s.files.size() == 1) {
    line("file:", absl::StrCat(s.files[0], " (", Grouped(s.file_sizes[0]), " bytes)"));
  } else {
    line("shards:", absl::StrCat(s.files.size()));
    for (size_t i = 0; i < s.files.size(); ++i) {
      absl::StrAppendFormat(&out, "  [%d] %s (%s bytes)\n", i, s.files[i],
                            Grouped(s.file_sizes[i]));
    }
  }
  line("GGUF:", absl::StrCat("version ", s.version, ", alignment ", s.alignment));
  line("architecture:", s.architecture.empty() ? "(none)" : s.architecture);
  line("name:", s.name.empty() ? "(none)" : s.name);
  line("file type:",
       s.file_type ? absl::StrCat(*s.file_type, " (", std::string(FileTypeName(*s.file_type)), ")")
                   : "(none)");
  std::string tok = s.tokenizer_model.empty() ? "(none)" : s.tokenizer_model;
  if (!s.tokenizer_pre.empty()) absl::StrAppend(&tok, ", pre-tokenizer ", s.tokenizer_pre);
  if (s.vocab_size >= 0) absl::StrAppend(&tok, ", vocabulary ", Grouped(s.vocab_size), " tokens");
  line("tokenizer:", tok);
  switch (s.attention) {
    case AttentionLayout::kMla:
      line("attention:", absl::StrCat("MLA, split attn_k_b/attn_v_b (", s.layers_mla, " layers)"));
      break;
    case AttentionLayout::kLegacy:
      line("attention:", absl::StrCat("legacy attn_kv_b (", s.layers_legacy, " layers)"));
      break;
    case AttentionLayout::kMixed:
      line("attention:", absl::StrCat("MIXED: ", s.layers_mla, " layers attn_k_b/attn_v_b, ",
                                      s.layers_legacy, " layers attn_kv_b"));
      break;
    case AttentionLayout::kNone:
      line("attention:", "(no attn_k_b/attn_v_b or attn_kv_b)");
      break;
  }
  if (!s.hparams.empty()) {
    absl::StrAppend(&out, "\nhyperparameters (", s.architecture, ".*):\n");
    for (const KeyValue& kv : s.hparams) {
      absl::StrAppendFormat(&out, "  %-52s %-14s %s\n", kv.key, ValueTypeDesc(kv.value),
                            FormatValue(kv.value));
    }
  }
  if (!s.missing_required.empty()) {
    absl::StrAppend(&out, "missing keys llama.cpp requires:");
    for (const std::string& k : s.missing_required) absl::StrAppend(&out, " ", k);
    out += "\n";
  }
  if (with_tensors) {
    absl::StrAppend(&out, "\ntensors (", s.tensors.size(), "):\n");
    const bool shards = s.files.size() > 1;
    absl::StrAppendFormat(&out, "  %-40s %-8s %-24s %15s%s\n", "name", "type", "shape", "bytes",
                          shards ? "  shard" : "");
    for (const SummaryTensor& t : s.tensors) {
      absl::StrAppendFormat(&out, "  %-40s %-8s %-24s %15s%s\n", t.name, GetTypeTraits(t.type).name,
                            Shape(t.ne, t.n_dims), Grouped(t.bytes),
                            shards ? absl::StrCat("  ", t.shard) : "");
    }
  }
  absl::StrAppend(&out, "\nby type:\n");
  absl::StrAppendFormat(&out, "  %-8s %8s %22s %22s %8s\n", "type", "tensors", "parameters",
                        "bytes", "bpw");
  for (const TypeTotal& t : s.by_type) {
    absl::StrAppendFormat(&out, "  %-8s %8d %22s %22s %8.4f\n", GetTypeTraits(t.type).name,
                          t.tensors, Grouped(t.elements), Grouped(t.bytes), t.bits_per_weight);
  }
  absl::StrAppendFormat(&out, "  %-8s %8d %22s %22s %8.4f\n", "total", s.tensors.size(),
                        Grouped(s.total_elements), Grouped(s.total_bytes), s.bits_per_weight);
  absl::StrAppend(&out, "\n");
  line("parameters:", Grouped(s.total_elements));
  line("tensor bytes:", absl::StrCat(Grouped(s.total_bytes), " (", HumanBytes(s.total_bytes), ")"));
  line("routed experts:",
       absl::StrFormat("%s bytes (%s), %.1f%% of tensor bytes, %s parameters",
                       Grouped(s.routed_expert_bytes), HumanBytes(s.routed_expert_bytes),
                       100.0 * s.routed_expert_share, Grouped(s.routed_expert_elements)));
  line("other tensors:",
       absl::StrFormat("%s bytes (%s), %.1f%%", Grouped(s.other_bytes), HumanBytes(s.other_bytes),
                       s.total_bytes ? 100.0 * s.other_bytes / s.total_bytes : 0.0));
  return out;
}

std::string SummaryJson(const GgufSummary& s, bool with_tensors) {
  using nlohmann::json;
  json j;
  j["files"] = json::array();
  for (size_t i = 0; i < s.files.size(); ++i) {
    j["files"].push_back({{"path", s.files[i]}, {"bytes", s.file_sizes[i]}});
  }
  j["version"] = s.version;
  j["alignment"] = s.alignment;
  j["architecture"] = s.architecture;
  j["name"] = s.name;
  j["file_type"] = s.file_type ? json(*s.file_type) : json(nullptr);
  j["file_type_name"] = s.file_type ? json(std::string(FileTypeName(*s.file_type))) : json(nullptr);
  j["tokenizer"] = {
      {"model", s.tokenizer_model}, {"pre", s.tokenizer_pre}, {"vocab_size", s.vocab_size}};
  json hp = json::object();
  for (const KeyValue& kv : s.hparams) hp[kv.key] = ValueJson(kv.value);
  j["hparams"] = hp;
  j["missing_required"] = s.missing_required;
  j["attention_layout"] = std::string(AttentionLayoutName(s.attention));
  j["layers_mla"] = s.layers_mla;
  j["layers_legacy"] = s.layers_legacy;
  if (with_tensors) {
    json ts = json::array();
    for (const SummaryTensor& t : s.tensors) {
      ts.push_back({{"name", t.name},
                    {"type", GetTypeTraits(t.type).name},
                    {"shape", std::vector<int64_t>(t.ne.begin(), t.ne.begin() + t.n_dims)},
                    {"elements", t.elements},
                    {"bytes", t.bytes},
                    {"shard", t.shard},
                    {"routed_expert", t.routed_expert}});
    }
    j["tensors"] = ts;
  }
  json bt = json::array();
  for (const TypeTotal& t : s.by_type) {
    bt.push_back({{"type", GetTypeTraits(t.type).name},
                  {"tensors", t.tensors},
                  {"elements", t.elements},
                  {"bytes", t.bytes},
                  {"bits_per_weight", t.bits_per_weight}});
  }
  j["by_type"] = bt;
  j["totals"] = {{"tensors", s.tensors.size()},
                 {"elements", s.total_elements},
                 {"bytes", s.total_bytes},
                 {"bits_per_weight", s.bits_per_weight},
                 {"routed_expert_elements", s.routed_expert_elements},
                 {"routed_expert_bytes", s.routed_expert_bytes},
                 {"other_bytes", s.other_bytes},
                 {"routed_expert_share", s.routed_expert_share}};
  // Strings in a GGUF need not be valid UTF-8; replace bad bytes rather than throw.
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace tritmoe::gguf
