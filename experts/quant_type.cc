#include "experts/quant_type.h"

#include <array>
#include <cctype>
#include <string>

#include "absl/strings/str_cat.h"

namespace tritmoe {
namespace {

constexpr std::array<TypeTraits, 14> kTraits = {{
    {GgmlType::kF32, "F32", 1, 4, false, false},
    {GgmlType::kF16, "F16", 1, 2, false, false},
    {GgmlType::kQ4_0, "Q4_0", 32, 18, false, true},
    {GgmlType::kQ8_0, "Q8_0", 32, 34, false, false},
    {GgmlType::kQ2_K, "Q2_K", 256, 84, false, true},
    {GgmlType::kQ4_K, "Q4_K", 256, 144, false, true},
    {GgmlType::kQ6_K, "Q6_K", 256, 210, false, true},
    {GgmlType::kQ8_K, "Q8_K", 256, 292, false, false},
    {GgmlType::kIQ2_XXS, "IQ2_XXS", 256, 66, true, true},
    {GgmlType::kIQ1_S, "IQ1_S", 256, 50, true, true},
    {GgmlType::kIQ1_M, "IQ1_M", 256, 56, false, true},
    {GgmlType::kBF16, "BF16", 1, 2, false, false},
    {GgmlType::kTQ1_0, "TQ1_0", 256, 54, false, false},
    {GgmlType::kTQ2_0, "TQ2_0", 256, 66, false, false},
}};

// Every ggml type id up to GGML_TYPE_COUNT (43), "" for removed ids.
constexpr std::array<const char*, 43> kAllNames = {
    "F32",     "F16",    "Q4_0",  "Q4_1",  "",      "",       "Q5_0",   "Q5_1",    "Q8_0",
    "Q8_1",    "Q2_K",   "Q3_K",  "Q4_K",  "Q5_K",  "Q6_K",   "Q8_K",   "IQ2_XXS", "IQ2_XS",
    "IQ3_XXS", "IQ1_S",  "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8",     "I16",     "I32",
    "I64",     "F64",    "IQ1_M", "BF16",  "",      "",       "",       "TQ1_0",   "TQ2_0",
    "",        "",       "",      "MXFP4", "NVFP4", "Q1_0",   "Q2_0"};

}  // namespace

const TypeTraits* FindTypeTraits(uint32_t type_id) {
  for (const TypeTraits& t : kTraits) {
    if (static_cast<uint32_t>(t.type) == type_id) return &t;
  }
  return nullptr;
}

const TypeTraits& GetTypeTraits(GgmlType type) {
  // Every enumerator has an entry; the enum is closed.
  return *FindTypeTraits(static_cast<uint32_t>(type));
}

std::string_view GgmlTypeName(uint32_t type_id) {
  if (type_id < kAllNames.size() && kAllNames[type_id][0] != '\0') return kAllNames[type_id];
  return "unknown";
}

absl::StatusOr<GgmlType> ParseGgmlType(std::string_view name) {
  std::string upper(name);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const TypeTraits& t : kTraits) {
    if (upper == t.name) return t.type;
  }
  std::string known;
  for (const TypeTraits& t : kTraits) absl::StrAppend(&known, known.empty() ? "" : ", ", t.name);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown tensor type '", std::string(name), "'; supported: ", known));
}

}  // namespace tritmoe
