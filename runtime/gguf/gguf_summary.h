// What `tritmoe inspect` reports about a GGUF model: files, header, architecture and its
// hyperparameters, tokenizer, attention layout, every tensor, totals per type with bits per
// weight, and how the bytes split between routed experts and everything else. Computing it is
// separate from printing so it can be tested; SummaryText / SummaryJson render it.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/gguf/gguf.h"

namespace tritmoe::gguf {

// How a deepseek2 file stores the per-layer kv up-projection (formats.md §4.2).
enum class AttentionLayout {
  kNone,    // neither tensor (not a deepseek2 model, or no attention tensors)
  kMla,     // blk.N.attn_k_b.weight + blk.N.attn_v_b.weight (llama.cpp >= 2025-04-15)
  kLegacy,  // blk.N.attn_kv_b.weight (e.g. Unsloth's January-2025 R1 quants)
  kMixed,   // both kinds present (malformed)
};
std::string_view AttentionLayoutName(AttentionLayout layout);

// True for blk.N.ffn_{gate,up,down}_exps.weight (N decimal digits).
bool IsRoutedExpertTensor(std::string_view name);

// llama.cpp's llama_ftype name for general.file_type ("MOSTLY_IQ1_S"...), or "unknown".
std::string_view FileTypeName(uint32_t file_type);

// Renders a value for people: numbers in shortest round-trip form, strings quoted, arrays as
// [a, b, ...] with at most max_elems elements shown and the total count when cut.
std::string FormatValue(const Value& v, size_t max_elems = 8);
// "uint32", "array[string]"...
std::string ValueTypeDesc(const Value& v);

struct SummaryTensor {
  std::string name;
  GgmlType type = GgmlType::kF32;
  int n_dims = 1;
  std::array<int64_t, 4> ne = {1, 1, 1, 1};
  int64_t elements = 0;
  uint64_t bytes = 0;
  int shard = 0;
  bool routed_expert = false;
};

struct TypeTotal {
  GgmlType type = GgmlType::kF32;
  int tensors = 0;
  int64_t elements = 0;
  uint64_t bytes = 0;
  double bits_per_weight = 0;  // 8 * bytes / elements (0 when there are no elements)
};

struct GgufSummary {
  std::vector<std::string> files;  // shard paths, in order
  std::vector<uint64_t> file_sizes;
  uint32_t version = 0;
  uint32_t alignment = 0;
  std::string architecture;  // general.architecture, "" when absent
  std::string name;          // general.name
  std::optional<uint32_t> file_type;
  std::string tokenizer_model;    // tokenizer.ggml.model
  std::string tokenizer_pre;      // tokenizer.ggml.pre
  int64_t vocab_size = -1;        // tokens array length, else <arch>.vocab_size, else -1
  std::vector<KeyValue> hparams;  // every "<arch>." key, in file order
  std::vector<std::string> missing_required;  // deepseek2 keys llama.cpp requires, absent here
  AttentionLayout attention = AttentionLayout::kNone;
  int layers_mla = 0;                  // layers with attn_k_b and attn_v_b
  int layers_legacy = 0;               // layers with attn_kv_b
  std::vector<SummaryTensor> tensors;  // in file order
  std::vector<TypeTotal> by_type;      // largest byte total first
  int64_t total_elements = 0;
  uint64_t total_bytes = 0;
  int64_t routed_expert_elements = 0;
  uint64_t routed_expert_bytes = 0;
  uint64_t other_bytes = 0;
  double routed_expert_share = 0;  // of total_bytes, 0..1
  double bits_per_weight = 0;      // over all tensors
};

GgufSummary Summarize(const GgufModel& model);

// Human-readable report; the tensor table is left out when with_tensors is false.
std::string SummaryText(const GgufSummary& s, bool with_tensors = true);
// Machine-readable report (one JSON object, pretty-printed).
std::string SummaryJson(const GgufSummary& s, bool with_tensors = true);

}  // namespace tritmoe::gguf
