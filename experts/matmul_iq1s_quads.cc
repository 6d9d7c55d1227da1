// IQ1_S <-> quads block conversion (layout in matmul_iq1s_quads.h).
#include "experts/matmul_iq1s_quads.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "experts/fp16.h"
#include "experts/quant_tables.h"

namespace tritmoe::iq1s_quads {
namespace {

constexpr int kPow3[5] = {1, 3, 9, 27, 81};

// The base-3 value Σ_k (g_k + 1)·3^k of grid entry i (k = element 0..7). llama.cpp's grid is sorted
// by it, which makes the inverse a binary search (the round-trip test covers every entry).
const std::array<uint16_t, 2048>& GridBase3() {
  static const std::array<uint16_t, 2048> table = [] {
    std::array<uint16_t, 2048> t{};
    for (int i = 0; i < 2048; ++i) {
      int v = 0, pow = 1;
      for (int k = 0; k < 8; ++k, pow *= 3) {
        v += (static_cast<int8_t>(tables::kIq1sGrid[i] >> (8 * k)) + 1) * pow;
      }
      t[i] = static_cast<uint16_t>(v);
    }
    return t;
  }();
  return table;
}

uint64_t LoadU64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
uint16_t LoadU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

}  // namespace

int Code(const uint8_t* block, int i) {
  const int k = i / 32, j = (i % 32) / 4, n = i % 4;
  return static_cast<int>(Field(block, k, j) / kPow3[n] % 3);
}

uint16_t DBits(const uint8_t* block) { return LoadU16(block + kDOffset); }

namespace {
int Nibble(const uint8_t* block, int k) {
  return static_cast<int>(LoadU64(block + 8 * MetaQword(k)) >> MetaShift(k)) & 15;
}
}  // namespace

int Scale(const uint8_t* block, int k) { return Nibble(block, k) & 7; }

bool DeltaNegative(const uint8_t* block, int k) { return (Nibble(block, k) & 8) != 0; }

void PackBlock(const uint8_t* iq1s, uint8_t* quads) {
  const uint8_t* qs = iq1s + 2;
  uint64_t q[8] = {};
  for (int k = 0; k < 8; ++k) {
    const uint16_t qh = LoadU16(iq1s + 34 + 2 * k);
    // Codes of the sub-block's 32 elements, from its four grid entries.
    int u[32];
    for (int l = 0; l < 4; ++l) {
      const uint64_t g = tables::kIq1sGrid[qs[4 * k + l] | (((qh >> (3 * l)) & 7) << 8)];
      for (int e = 0; e < 8; ++e) u[8 * l + e] = static_cast<int8_t>(g >> (8 * e)) + 1;
    }
    for (int j = 0; j < 8; ++j) {
      uint64_t field = 0;
      for (int n = 0; n < 4; ++n) field += static_cast<uint64_t>(u[4 * j + n] * kPow3[n]);
      q[k] |= field << FieldShift(k, j);
    }
    q[MetaQword(k)] |= static_cast<uint64_t>(qh >> 12) << MetaShift(k);  // scale | sign << 3
  }
  std::memcpy(quads, q, 64);
  std::memcpy(quads + kDOffset, iq1s, 2);  // d: the top byte of qword 0, the bottom of qword 1
}

void UnpackBlock(const uint8_t* quads, uint8_t* iq1s) {
  const std::array<uint16_t, 2048>& base3 = GridBase3();
  const uint16_t d = DBits(quads);
  std::memcpy(iq1s, &d, 2);
  for (int k = 0; k < 8; ++k) {
    uint16_t qh = static_cast<uint16_t>(Nibble(quads, k) << 12);
    for (int l = 0; l < 4; ++l) {
      // Elements 8l..8l+7 of the sub-block: fields 2l (elements 0..3) and 2l + 1 (4..7).
      const int v = static_cast<int>(Field(quads, k, 2 * l) + 81 * Field(quads, k, 2 * l + 1));
      const auto it = std::lower_bound(base3.begin(), base3.end(), v);
      // Only PackBlock output is valid input; a pattern that is no grid point maps to index 0.
      const int idx = it != base3.end() && *it == v ? static_cast<int>(it - base3.begin()) : 0;
      iq1s[2 + 4 * k + l] = static_cast<uint8_t>(idx & 0xFF);
      qh = static_cast<uint16_t>(qh | ((idx >> 8) << (3 * l)));
    }
    iq1s[34 + 2 * k] = static_cast<uint8_t>(qh & 0xFF);
    iq1s[35 + 2 * k] = static_cast<uint8_t>(qh >> 8);
  }
}

void DequantizeBlock(const uint8_t* quads, float* y) {
  const float d = Fp16ToFp32(DBits(quads));
  for (int k = 0; k < 8; ++k) {
    const float dl = d * static_cast<float>(2 * Scale(quads, k) + 1);
    const float delta = DeltaNegative(quads, k) ? -0.125f : 0.125f;
    for (int e = 0; e < 32; ++e) {
      y[32 * k + e] = dl * (static_cast<float>(Code(quads, 32 * k + e) - 1) + delta);
    }
  }
}

}  // namespace tritmoe::iq1s_quads
