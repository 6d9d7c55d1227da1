// Scalar decoders of every supported type. Each formula keeps the float32 operation order of the
// spec (reference/formats.md §2) so that results are bit-identical with llama.cpp's reference
// decoders; this file is compiled with -ffp-contract=off so that no product-sum becomes an FMA.
#include "experts/dequantize.h"

#include <cstdint>
#include <cstring>

#include "base/check.h"
#include "experts/fp16.h"
#include "experts/quant_tables.h"

namespace tritmoe {
namespace {

inline uint16_t LoadU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);  // little-endian host (x86-64 / aarch64)
  return v;
}
inline float LoadFp16(const uint8_t* p) { return Fp16ToFp32(LoadU16(p)); }

// Byte k of a little-endian packed grid entry.
inline uint8_t GridByte(uint64_t entry, int k) { return static_cast<uint8_t>(entry >> (8 * k)); }

void DecodeQ4_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 18, y += 32) {
    const float d = LoadFp16(b);
    const uint8_t* qs = b + 2;
    for (int j = 0; j < 16; ++j) {
      const int x0 = (qs[j] & 0xF) - 8;
      const int x1 = (qs[j] >> 4) - 8;
      y[j] = static_cast<float>(x0) * d;
      y[j + 16] = static_cast<float>(x1) * d;
    }
  }
}

void DecodeQ8_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 34, y += 32) {
    const float d = LoadFp16(b);
    for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
  }
}

void DecodeQ8K(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 292, y += kQK_K) {
    float d;
    std::memcpy(&d, b, 4);
    for (int j = 0; j < kQK_K; ++j) y[j] = d * static_cast<float>(static_cast<int8_t>(b[4 + j]));
  }
}

void DecodeQ2K(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 84) {
    const uint8_t* scales = b;
    const uint8_t* q = b + 16;
    const float d = LoadFp16(b + 80);
    const float dmin = LoadFp16(b + 82);
    int is = 0;
    for (int h = 0; h < 2; ++h, q += 32) {
      for (int j = 0; j < 4; ++j) {
        const int shift = 2 * j;
        for (int p = 0; p < 2; ++p) {
          const uint8_t sc = scales[is++];
          const float dl = d * static_cast<float>(sc & 0xF);
          const float ml = dmin * static_cast<float>(sc >> 4);
          for (int l = 0; l < 16; ++l) {
            const int v = (q[16 * p + l] >> shift) & 3;
            *y++ = dl * static_cast<float>(v) - ml;
          }
        }
      }
    }
  }
}

// The 6-bit (scale, min) pair of sub-block j of a Q4_K block's packed 12 scale bytes.
inline void Q4KScaleMin(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

void DecodeQ4K(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 144) {
    const float d = LoadFp16(b);
    const float dmin = LoadFp16(b + 2);
    const uint8_t* scales = b + 4;
    const uint8_t* q = b + 16;
    for (int c = 0; c < 4; ++c, q += 32) {
      uint8_t sc, m;
      Q4KScaleMin(2 * c, scales, &sc, &m);
      const float d1 = d * static_cast<float>(sc);
      const float m1 = dmin * static_cast<float>(m);
      Q4KScaleMin(2 * c + 1, scales, &sc, &m);
      const float d2 = d * static_cast<float>(sc);
      const float m2 = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    }
  }
}

void DecodeQ6K(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 210) {
    const float d = LoadFp16(b + 208);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b + 64 * h;
      const uint8_t* qh = b + 128 + 32 * h;
      const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192 + 8 * h);
      float* yh = y + 128 * h;
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        yh[l] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
        yh[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        yh[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        yh[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
    }
    y += kQK_K;
  }
}

void DecodeIq2xxs(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 66) {
    const float d = LoadFp16(b);
    for (int ib = 0; ib < 8; ++ib) {
      const uint32_t a0 = LoadU32(b + 2 + 8 * ib);
      const uint32_t a1 = LoadU32(b + 2 + 8 * ib + 4);
      const float db = d * (0.5f + static_cast<float>(a1 >> 28)) * 0.25f;
      for (int l = 0; l < 4; ++l) {
        const uint64_t grid = tables::kIq2xxsGrid[(a0 >> (8 * l)) & 0xFF];
        const uint8_t signs = tables::kSignsIq2xs[(a1 >> (7 * l)) & 127];
        for (int k = 0; k < 8; ++k) {
          const float s = (signs & tables::kMaskIq2xs[k]) ? -1.0f : 1.0f;
          *y++ = db * static_cast<float>(GridByte(grid, k)) * s;
        }
      }
    }
  }
}

// One 8-element group of the IQ1 grids: dl * (g + delta).
inline void DecodeIq1Group(uint32_t idx, float dl, float delta, float* y) {
  const uint64_t grid = tables::kIq1sGrid[idx];
  for (int k = 0; k < 8; ++k) {
    y[k] = dl * (static_cast<float>(static_cast<int8_t>(GridByte(grid, k))) + delta);
  }
}

constexpr float kIq1Delta = 0.125f;

void DecodeIq1s(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 50) {
    const float d = LoadFp16(b);
    const uint8_t* qs = b + 2;
    for (int ib = 0; ib < 8; ++ib) {
      const uint16_t qh = LoadU16(b + 34 + 2 * ib);
      const float dl = d * static_cast<float>(2 * ((qh >> 12) & 7) + 1);
      const float delta = (qh & 0x8000) ? -kIq1Delta : kIq1Delta;
      for (int l = 0; l < 4; ++l, y += 8) {
        DecodeIq1Group(qs[4 * ib + l] | (((qh >> (3 * l)) & 7) << 8), dl, delta, y);
      }
    }
  }
}

void DecodeIq1m(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 56) {
    const uint8_t* qs = b;
    const uint8_t* qh = b + 32;
    uint16_t sc[4];
    for (int k = 0; k < 4; ++k) sc[k] = LoadU16(b + 48 + 2 * k);
    const uint16_t dbits = static_cast<uint16_t>((sc[0] >> 12) | ((sc[1] >> 8) & 0x00F0) |
                                                 ((sc[2] >> 4) & 0x0F00) | (sc[3] & 0xF000));
    const float d = Fp16ToFp32(dbits);
    for (int ib = 0; ib < 8; ++ib) {
      const int shift = 6 * (ib % 2);
      const float dl1 = d * static_cast<float>(2 * ((sc[ib / 2] >> shift) & 7) + 1);
      const float dl2 = d * static_cast<float>(2 * ((sc[ib / 2] >> (shift + 3)) & 7) + 1);
      for (int l = 0; l < 4; ++l, y += 8) {
        const uint8_t h = qh[2 * ib + l / 2];
        // Even groups use the low nibble of h, odd groups the high nibble.
        const int nib = (l % 2) ? (h >> 4) : (h & 0xF);
        const uint32_t idx = qs[4 * ib + l] | ((nib & 7) << 8);
        const float delta = (nib & 8) ? -kIq1Delta : kIq1Delta;
        DecodeIq1Group(idx, l < 2 ? dl1 : dl2, delta, y);
      }
    }
  }
}

// Base-3 digit n (0 = most significant) of a TQ1_0 byte.
inline int Trit(uint8_t byte, int n) {
  const uint8_t q = static_cast<uint8_t>(byte * tables::kPow3Tq[n]);
  return (static_cast<uint16_t>(q) * 3) >> 8;
}

void DecodeTq1(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 54) {
    const float d = LoadFp16(b + 52);
    for (int n = 0; n < 5; ++n) {
      for (int m = 0; m < 32; ++m) *y++ = static_cast<float>(Trit(b[m], n) - 1) * d;
    }
    for (int n = 0; n < 5; ++n) {
      for (int m = 0; m < 16; ++m) *y++ = static_cast<float>(Trit(b[32 + m], n) - 1) * d;
    }
    for (int n = 0; n < 4; ++n) {
      for (int j = 0; j < 4; ++j) *y++ = static_cast<float>(Trit(b[48 + j], n) - 1) * d;
    }
  }
}

void DecodeTq2(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 66) {
    const float d = LoadFp16(b + 64);
    for (int h = 0; h < 2; ++h) {
      for (int l = 0; l < 4; ++l) {
        for (int m = 0; m < 32; ++m) {
          const int q = (b[32 * h + m] >> (2 * l)) & 3;
          *y++ = static_cast<float>(q - 1) * d;
        }
      }
    }
  }
}

}  // namespace

void DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n) {
  const TypeTraits& t = GetTypeTraits(type);
  TM_CHECK(n % t.block_elems == 0)
      << t.name << ": n=" << n << " not a multiple of " << t.block_elems;
  const auto* b = static_cast<const uint8_t*>(src);
  const int64_t nb = n / t.block_elems;
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = Fp16ToFp32(LoadU16(b + 2 * i));
      return;
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFp32(LoadU16(b + 2 * i));
      return;
    case GgmlType::kQ4_0:
      return DecodeQ4_0(b, dst, nb);
    case GgmlType::kQ8_0:
      return DecodeQ8_0(b, dst, nb);
    case GgmlType::kQ8_K:
      return DecodeQ8K(b, dst, nb);
    case GgmlType::kQ2_K:
      return DecodeQ2K(b, dst, nb);
    case GgmlType::kQ4_K:
      return DecodeQ4K(b, dst, nb);
    case GgmlType::kQ6_K:
      return DecodeQ6K(b, dst, nb);
    case GgmlType::kIQ2_XXS:
      return DecodeIq2xxs(b, dst, nb);
    case GgmlType::kIQ1_S:
      return DecodeIq1s(b, dst, nb);
    case GgmlType::kIQ1_M:
      return DecodeIq1m(b, dst, nb);
    case GgmlType::kTQ1_0:
      return DecodeTq1(b, dst, nb);
    case GgmlType::kTQ2_0:
      return DecodeTq2(b, dst, nb);
  }
}

}  // namespace tritmoe
