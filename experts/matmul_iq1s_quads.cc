// IQ1_S <-> quads block conversion (layout in matmul_iq1s_quads.h).
#include "experts/matmul_iq1s_quads.h"

#include <array>
#include <cstring>

#include "experts/fp16.h"
#include "experts/quant_tables.h"

namespace tritmoe::iq1s_quads {
namespace {

constexpr int kPow3[5] = {1, 3, 9, 27, 81};

// Both directions go through tables built once: a repack converts every routed-expert block of a
// model at load time (~50 ns per block with them, ~600 ns computing the digits per element).
struct GridTables {
  // Grid entry i as its two fields: bits 0..6 = elements 0..3, bits 7..13 = elements 4..7, each
  // Σ (g + 1)·3^n.
  std::array<uint16_t, 2048> fields;
  // The inverse: grid index of the base-3 value f0 + 81·f1 of 8 codes, or -1 if not a grid point.
  std::array<int16_t, 6561> index;
};

const GridTables& Tables() {
  static const GridTables* const t = [] {
    auto* g = new GridTables();
    g->index.fill(-1);
    for (int i = 0; i < 2048; ++i) {
      int f[2] = {0, 0};
      for (int e = 0; e < 8; ++e) {
        f[e / 4] += (static_cast<int8_t>(tables::kIq1sGrid[i] >> (8 * e)) + 1) * kPow3[e % 4];
      }
      g->fields[i] = static_cast<uint16_t>(f[0] | (f[1] << 7));
      g->index[f[0] + 81 * f[1]] = static_cast<int16_t>(i);
    }
    return g;
  }();
  return *t;
}

uint64_t LoadU64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
uint16_t LoadU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

int Nibble(const uint8_t* block, int k) {
  return static_cast<int>(LoadU64(block + 8 * MetaQword(k)) >> MetaShift(k)) & 15;
}

}  // namespace

int Code(const uint8_t* block, int i) {
  const int k = i / 32, j = (i % 32) / 4, n = i % 4;
  const int u = static_cast<int>(Field(block, k, j) / kPow3[n] % 3);
  return DeltaNegative(block, k) ? 2 - u : u;
}

uint16_t DBits(const uint8_t* block) { return LoadU16(block + kDOffset); }

int Scale(const uint8_t* block, int k) { return Nibble(block, k) & 7; }

bool DeltaNegative(const uint8_t* block, int k) { return (Nibble(block, k) & 8) != 0; }

void PackBlock(const uint8_t* iq1s, uint8_t* quads) {
  const GridTables& t = Tables();
  const uint8_t* qs = iq1s + 2;
  uint64_t q[8] = {};
  for (int k = 0; k < 8; ++k) {
    const uint16_t qh = LoadU16(iq1s + 34 + 2 * k);
    // δ = -1/8 (qh bit 15): the codes negated, each field f -> 80 - f.
    const bool negate = (qh & 0x8000) != 0;
    for (int l = 0; l < 4; ++l) {
      // Group l (elements 8l..8l+7 of the sub-block) = fields 2l and 2l + 1, adjacent bits.
      static_assert(FieldShift(1, 1) == FieldShift(1, 0) + 7);
      uint64_t pair = t.fields[qs[4 * k + l] | (((qh >> (3 * l)) & 7) << 8)];
      if (negate) pair = (80 | (80 << 7)) - pair;  // no borrow: each field <= 80
      q[k] |= pair << FieldShift(k, 2 * l);
    }
    q[MetaQword(k)] |= static_cast<uint64_t>(qh >> 12) << MetaShift(k);  // scale | sign << 3
  }
  std::memcpy(quads, q, 64);
  std::memcpy(quads + kDOffset, iq1s, 2);  // d: the top byte of qword 0, the bottom of qword 1
}

void UnpackBlock(const uint8_t* quads, uint8_t* iq1s) {
  const GridTables& t = Tables();
  const uint16_t d = DBits(quads);
  std::memcpy(iq1s, &d, 2);
  for (int k = 0; k < 8; ++k) {
    uint16_t qh = static_cast<uint16_t>(Nibble(quads, k) << 12);
    const bool negated = DeltaNegative(quads, k);
    for (int l = 0; l < 4; ++l) {
      uint32_t f0 = Field(quads, k, 2 * l), f1 = Field(quads, k, 2 * l + 1);
      if (negated) f0 = 80 - f0, f1 = 80 - f1;  // only PackBlock output (fields <= 80) is valid
      const int v = static_cast<int>(f0 + 81 * f1);
      // Only PackBlock output is valid input; codes that are no grid point map to index 0.
      const int idx = v < 6561 && t.index[v] >= 0 ? t.index[v] : 0;
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
