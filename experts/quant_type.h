// The tensor element types TritMoE reads and writes, with llama.cpp's GGUF type ids and block
// layouts (see docs/FORMATS.md and tests/data/testvectors). A "block" is the smallest unit that
// can be decoded on its own; a row's length (ne0) must be a multiple of the block's element count.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace tritmoe {

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ8_0 = 8,
  kQ2_K = 10,
  kQ4_K = 12,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ1_S = 19,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
};

inline constexpr int kQK_K = 256;

struct TypeTraits {
  GgmlType type;
  const char* name;  // llama.cpp's spelling, e.g. "IQ1_S"
  int block_elems;
  int block_bytes;
  bool needs_imatrix;   // quantizing without importance weights is an error
  bool uses_imatrix;    // importance weights change the result when given
};

// Traits of a supported type id, or nullptr for an id TritMoE does not handle (including ids that
// are valid in ggml but unsupported here; GGUF validation reports those by name when it can).
const TypeTraits* FindTypeTraits(uint32_t type_id);
const TypeTraits& GetTypeTraits(GgmlType type);

// llama.cpp's name for any ggml type id (also unsupported ones), or "unknown".
std::string_view GgmlTypeName(uint32_t type_id);

// Parses "IQ1_S", "iq1_s", "q4_k"... into a supported type.
absl::StatusOr<GgmlType> ParseGgmlType(std::string_view name);

// Bytes of a row of n elements; n must be a multiple of the block size (checked by callers).
inline int64_t RowBytes(GgmlType type, int64_t n) {
  const TypeTraits& t = GetTypeTraits(type);
  return n / t.block_elems * t.block_bytes;
}

}  // namespace tritmoe
