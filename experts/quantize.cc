// Reference quantizers of the non-IQ types (reference/formats.md §2.1-2.7, 2.11-2.13), ported
// from the spec's description of llama.cpp's scalar C code in the same float evaluation order
// (built with -ffp-contract=off) so that the output bytes match llama.cpp's.
#include "experts/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "experts/fp16.h"
#include "experts/quant_helpers.h"
#include "experts/quantize_iq.h"

namespace tritmoe {
namespace {

inline void StoreU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
inline void StoreFp16(uint8_t* p, float f) { StoreU16(p, Fp32ToFp16(f)); }
inline float RoundTripFp16(const uint8_t* p) {
  return Fp16ToFp32(static_cast<uint16_t>(p[0] | (p[1] << 8)));
}

// ---- Q8_0 / Q4_0 (32-element blocks) ----

void QuantizeQ8_0(const float* x, uint8_t* y, int64_t n) {
  for (int64_t i = 0; i < n / 32; ++i, x += 32, y += 34) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    StoreFp16(y, d);
    for (int j = 0; j < 32; ++j) {
      y[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::roundf(x[j] * id)));
    }
  }
}

void QuantizeQ4_0Plain(const float* x, uint8_t* y, int64_t n) {
  for (int64_t i = 0; i < n / 32; ++i, x += 32, y += 18) {
    float amax = 0;
    float max = 0;
    for (int j = 0; j < 32; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    StoreFp16(y, d);
    for (int j = 0; j < 16; ++j) {
      // C truncation toward zero of x*id + 8.5 (non-negative up to rounding, so a floor).
      const int xi0 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
      const int xi1 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 8.5f)));
      y[2 + j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  }
}

void QuantizeQ4_0Weighted(const float* x, uint8_t* y, int64_t n, const float* qw) {
  float sum_x2 = 0;
  for (int64_t j = 0; j < n; ++j) sum_x2 += x[j] * x[j];
  const float sigma2 = sum_x2 / static_cast<float>(n);
  float weight[32];
  int8_t L[32];
  for (int64_t ib = 0; ib < n / 32; ++ib, y += 18) {
    const float* xb = x + 32 * ib;
    const float* qb = qw + 32 * ib;
    for (int j = 0; j < 32; ++j) weight[j] = qb[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
    const float d = MakeQxQuants(32, 8, xb, L, 1, weight);
    StoreFp16(y, d);
    for (int j = 0; j < 16; ++j) y[2 + j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  }
}

// ---- Q2_K: 16 sub-blocks of 16, 2-bit levels, 4-bit scales and mins ----

void PackQ2K(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK_K; j += 128) {
    for (int l = 0; l < 32; ++l) {
      qs[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                           (L[j + l + 96] << 6));
    }
  }
}

// Requantizes every sub-block whose stored scale is non-zero with the rounded (d, dmin).
void RequantizeQ2K(const float* x, const uint8_t* scales, float dm, float mm, uint8_t* L) {
  for (int j = 0; j < 16; ++j) {
    const float d = dm * static_cast<float>(scales[j] & 0xF);
    if (d == 0) continue;
    const float m = mm * static_cast<float>(scales[j] >> 4);
    for (int ii = 0; ii < 16; ++ii) {
      const int l = NearestInt((x[16 * j + ii] + m) / d);
      L[16 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(3, l)));
    }
  }
}

void QuantizeQ2KPlain(const float* x, uint8_t* y, int64_t n) {
  uint8_t L[kQK_K];
  uint8_t Laux[16];
  float weights[16];
  float mins[16];
  float scales[16];
  const float q4scale = 15.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K, y += 84) {
    uint8_t* sc = y;
    float max_scale = 0;
    float max_min = 0;
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = MakeQkx2Quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f,
                                 0.1f, 15, true);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
      const float iscale = q4scale / max_scale;
      for (int j = 0; j < 16; ++j) sc[j] = static_cast<uint8_t>(NearestInt(iscale * scales[j]));
      StoreFp16(y + 80, max_scale / q4scale);
    } else {
      std::fill(sc, sc + 16, 0);
      StoreFp16(y + 80, 0.0f);
    }
    if (max_min > 0) {
      const float iscale = q4scale / max_min;
      for (int j = 0; j < 16; ++j) {
        sc[j] = static_cast<uint8_t>(sc[j] | (NearestInt(iscale * mins[j]) << 4));
      }
      StoreFp16(y + 82, max_min / q4scale);
    } else {
      StoreFp16(y + 82, 0.0f);
    }
    RequantizeQ2K(x, sc, RoundTripFp16(y + 80), RoundTripFp16(y + 82), L);
    PackQ2K(L, y + 16);
  }
}

void QuantizeQ2KWeighted(const float* x, uint8_t* y, int64_t n, const float* qw) {
  uint8_t L[kQK_K];
  uint8_t Laux[16];
  float mins[16];
  float scales[16];
  float sw[16];
  float weight[16];
  uint8_t Ls[16], Lm[16];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K, y += 84) {
    float sumx2 = 0;
    for (int j = 0; j < kQK_K; ++j) sumx2 += x[j] * x[j];
    const float sigma2 = sumx2 / kQK_K;
    for (int j = 0; j < 16; ++j) {
      const float* q = qw + kQK_K * i + 16 * j;
      for (int l = 0; l < 16; ++l) {
        weight[l] = q[l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      }
      sw[j] = 0;
      for (int l = 0; l < 16; ++l) sw[j] += weight[l];
      scales[j] = MakeQkx3Quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f,
                                 0.05f, 36, false);
    }
    const float dm = MakeQpQuants(16, 15, scales, Ls, sw);
    const float mm = MakeQpQuants(16, 15, mins, Lm, sw);
    StoreFp16(y + 80, dm);
    StoreFp16(y + 82, mm);
    for (int j = 0; j < 16; ++j) y[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
    RequantizeQ2K(x, y, RoundTripFp16(y + 80), RoundTripFp16(y + 82), L);
    PackQ2K(L, y + 16);
  }
}

// ---- Q4_K: 8 sub-blocks of 32, 4-bit levels, 6-bit scales and mins ----

void PackQ4KScales(const uint8_t* ls, const uint8_t* lm, uint8_t* s) {
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      s[j] = ls[j];
      s[j + 4] = lm[j];
    } else {
      s[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      s[j - 4] = static_cast<uint8_t>(s[j - 4] | ((ls[j] >> 4) << 6));
      s[j] = static_cast<uint8_t>(s[j] | ((lm[j] >> 4) << 6));
    }
  }
}

void ScaleMinQ4K(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Requantizes with the stored scales and packs the nibbles; y is the whole block.
void FinishQ4K(const float* x, uint8_t* L, uint8_t* y) {
  const float d_all = RoundTripFp16(y);
  const float m_all = RoundTripFp16(y + 2);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    ScaleMinQ4K(j, y + 4, &sc, &m);
    const float d = d_all * static_cast<float>(sc);
    if (d == 0) continue;
    const float dm = m_all * static_cast<float>(m);
    for (int ii = 0; ii < 32; ++ii) {
      const int l = NearestInt((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(15, l)));
    }
  }
  uint8_t* q = y + 16;
  for (int j = 0; j < kQK_K; j += 64, q += 32) {
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
  }
}

void QuantizeQ4KPlain(const float* x, uint8_t* y, int64_t n) {
  uint8_t L[kQK_K];
  uint8_t Laux[32];
  float weights[32];
  float mins[8];
  float scales[8];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K, y += 144) {
    float max_scale = 0;
    float max_min = 0;
    for (int j = 0; j < 8; ++j) {
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
      scales[j] = MakeQkx2Quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.0f,
                                 0.1f, 20, false);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; ++j) {
      // The reference stores nearest_int into a uint8 before capping at 63.
      ls[j] = std::min<uint8_t>(63, static_cast<uint8_t>(NearestInt(inv_scale * scales[j])));
      lm[j] = std::min<uint8_t>(63, static_cast<uint8_t>(NearestInt(inv_min * mins[j])));
    }
    PackQ4KScales(ls, lm, y + 4);
    StoreFp16(y, max_scale / 63.0f);
    StoreFp16(y + 2, max_min / 63.0f);
    FinishQ4K(x, L, y);
  }
}

void QuantizeQ4KWeighted(const float* x, uint8_t* y, int64_t n, const float* qw) {
  uint8_t L[kQK_K];
  uint8_t Laux[32];
  uint8_t Ls[8], Lm[8];
  float weights[32];
  float sw[8];
  float mins[8];
  float scales[8];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K, y += 144) {
    float sum_x2 = 0;
    for (int l = 0; l < kQK_K; ++l) sum_x2 += x[l] * x[l];
    const float sigma2 = 2 * sum_x2 / kQK_K;
    for (int j = 0; j < 8; ++j) {
      const float* q = qw + kQK_K * i + 32 * j;
      for (int l = 0; l < 32; ++l) {
        weights[l] = q[l] * std::sqrt(sigma2 + x[32 * j + l] * x[32 * j + l]);
      }
      float sumw = 0;
      for (int l = 0; l < 32; ++l) sumw += weights[l];
      sw[j] = sumw;
      scales[j] = MakeQkx3Quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f,
                                 0.05f, 36, false);
    }
    const float d_block = MakeQpQuants(8, 63, scales, Ls, sw);
    const float m_block = MakeQpQuants(8, 63, mins, Lm, sw);
    PackQ4KScales(Ls, Lm, y + 4);
    StoreFp16(y, d_block);
    StoreFp16(y + 2, m_block);
    FinishQ4K(x, L, y);
  }
}

// ---- Q6_K: 16 sub-blocks of 16, 6-bit levels, int8 scales ----

void QuantizeQ6K(const float* x, uint8_t* y, int64_t n, const float* qw) {
  int8_t L[kQK_K];
  float scales[16];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K, y += 210) {
    float max_scale = 0;
    float max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
      const float* q = qw ? qw + kQK_K * i + 16 * ib : nullptr;
      const float scale = MakeQxQuants(16, 32, x + 16 * ib, L + 16 * ib, 1, q);
      scales[ib] = scale;
      if (std::fabs(scale) > max_abs_scale) {
        max_abs_scale = std::fabs(scale);
        max_scale = scale;
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(y, 0, 210);
      continue;
    }
    const float iscale = -128.0f / max_scale;
    StoreFp16(y + 208, 1 / iscale);
    int8_t* sc = reinterpret_cast<int8_t*>(y + 192);
    for (int ib = 0; ib < 16; ++ib) {
      sc[ib] = static_cast<int8_t>(std::min(127, NearestInt(iscale * scales[ib])));
    }
    const float d_all = RoundTripFp16(y + 208);
    for (int j = 0; j < 16; ++j) {
      const float d = d_all * static_cast<float>(sc[j]);
      if (d == 0) continue;
      for (int ii = 0; ii < 16; ++ii) {
        const int l = std::max(-32, std::min(31, NearestInt(x[16 * j + ii] / d)));
        L[16 * j + ii] = static_cast<int8_t>(l + 32);
      }
    }
    uint8_t* ql = y;
    uint8_t* qh = y + 128;
    for (int j = 0; j < kQK_K; j += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        const int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
        ql[l] = static_cast<uint8_t>((q1 & 0xF) | ((q3 & 0xF) << 4));
        ql[l + 32] = static_cast<uint8_t>((q2 & 0xF) | ((q4 & 0xF) << 4));
        qh[l] = static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) |
                                     ((q4 >> 4) << 6));
      }
    }
  }
}

// ---- TQ1_0 / TQ2_0: ternary absmax rounding ----

// Maximum |x| of one 256 block, its fp16 scale stored at `d_out`, and 1/d (0 when d is 0).
float TernaryScale(const float* x, uint8_t* d_out) {
  float amax = 0;
  for (int j = 0; j < kQK_K; ++j) amax = std::max(amax, std::fabs(x[j]));
  StoreFp16(d_out, amax);
  return amax != 0 ? 1.0f / amax : 0.0f;
}

inline int Ternary(float v, float id) { return static_cast<int>(std::lroundf(v * id)) + 1; }

// Base-3 digits t0..t(k-1) (t0 most significant) scaled into a byte by ceiling division.
inline uint8_t PackTrits(uint8_t v) {
  return static_cast<uint8_t>((static_cast<uint16_t>(v) * 256 + 242) / 243);
}

void QuantizeTq1(const float* x, uint8_t* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; ++i, y += 54) {
    const float id = TernaryScale(x, y + 52);
    for (int m = 0; m < 32; ++m) {
      uint8_t q = 0;
      for (int k = 0; k < 5; ++k) q = static_cast<uint8_t>(q * 3 + Ternary(x[m + 32 * k], id));
      y[m] = PackTrits(q);
    }
    x += 160;
    for (int m = 0; m < 16; ++m) {
      uint8_t q = 0;
      for (int k = 0; k < 5; ++k) q = static_cast<uint8_t>(q * 3 + Ternary(x[m + 16 * k], id));
      y[32 + m] = PackTrits(q);
    }
    x += 80;
    for (int j = 0; j < 4; ++j) {
      uint8_t q = 0;
      for (int k = 0; k < 4; ++k) q = static_cast<uint8_t>(q * 3 + Ternary(x[j + 4 * k], id));
      y[48 + j] = PackTrits(static_cast<uint8_t>(q * 3));  // 5th (least significant) trit = 0
    }
    x += 16;
  }
}

void QuantizeTq2(const float* x, uint8_t* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K, y += 66) {
    const float id = TernaryScale(x, y + 64);
    for (int h = 0; h < 2; ++h) {
      for (int m = 0; m < 32; ++m) {
        int q = 0;
        for (int k = 0; k < 4; ++k) q += (Ternary(x[128 * h + m + 32 * k], id) & 3) << (2 * k);
        y[32 * h + m] = static_cast<uint8_t>(q);
      }
    }
  }
}

}  // namespace

void QuantizeRowQ8K(const float* x, void* vy, int64_t n) {
  auto* y = static_cast<uint8_t*>(vy);
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K, y += 292) {
    float max = 0;
    float amax = 0;
    for (int j = 0; j < kQK_K; ++j) {
      const float ax = std::fabs(x[j]);
      if (ax > amax) {
        amax = ax;
        max = x[j];
      }
    }
    if (amax == 0) {
      // llama.cpp leaves bsums untouched here; we clear them (they are multiplied by d = 0).
      std::memset(y, 0, 292);
      continue;
    }
    // -127 (not -128) keeps every q in [-127, 127]; d is therefore negative when max > 0.
    const float iscale = -127.0f / max;
    int8_t* qs = reinterpret_cast<int8_t*>(y + 4);
    for (int j = 0; j < kQK_K; ++j) {
      qs[j] = static_cast<int8_t>(std::min(127, NearestInt(iscale * x[j])));
    }
    for (int g = 0; g < 16; ++g) {
      int sum = 0;
      for (int k = 0; k < 16; ++k) sum += qs[16 * g + k];
      const int16_t s = static_cast<int16_t>(sum);
      std::memcpy(y + 260 + 2 * g, &s, 2);
    }
    const float d = 1 / iscale;
    std::memcpy(y, &d, 4);
  }
}

void QuantizeRowQ8_0(const float* x, void* y, int64_t n) {
  QuantizeQ8_0(x, static_cast<uint8_t*>(y), n);
}

absl::Status QuantizeRows(GgmlType type, const float* src, void* dst, int64_t n_rows,
                          int64_t n_per_row, const float* imatrix) {
  const TypeTraits& t = GetTypeTraits(type);
  if (n_per_row <= 0 || n_per_row % t.block_elems != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot quantize to ", t.name, ": row length ",
                                                   n_per_row, " is not a positive multiple of ",
                                                   t.block_elems));
  }
  if (n_rows < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot quantize to ", t.name, ": n_rows ", n_rows));
  }
  if (t.needs_imatrix && imatrix == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantizing to ", t.name, " requires an importance matrix (imatrix)"));
  }
  if (type == GgmlType::kQ8_K) {
    return absl::InvalidArgumentError(
        "Q8_K is an activation-only format: use QuantizeRowQ8K, not QuantizeRows");
  }
  const int64_t row_bytes = RowBytes(type, n_per_row);
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* x = src + r * n_per_row;
    uint8_t* y = static_cast<uint8_t*>(dst) + r * row_bytes;
    const int64_t n = n_per_row;
    switch (type) {
      case GgmlType::kF32:
        std::memcpy(y, x, n * sizeof(float));
        break;
      case GgmlType::kF16:
        for (int64_t j = 0; j < n; ++j) StoreU16(y + 2 * j, Fp32ToFp16(x[j]));
        break;
      case GgmlType::kBF16:
        for (int64_t j = 0; j < n; ++j) StoreU16(y + 2 * j, Fp32ToBf16(x[j]));
        break;
      case GgmlType::kQ8_0:
        QuantizeQ8_0(x, y, n);
        break;
      case GgmlType::kQ4_0:
        if (imatrix) {
          QuantizeQ4_0Weighted(x, y, n, imatrix);
        } else {
          QuantizeQ4_0Plain(x, y, n);
        }
        break;
      case GgmlType::kQ2_K:
        if (imatrix) {
          QuantizeQ2KWeighted(x, y, n, imatrix);
        } else {
          QuantizeQ2KPlain(x, y, n);
        }
        break;
      case GgmlType::kQ4_K:
        if (imatrix) {
          QuantizeQ4KWeighted(x, y, n, imatrix);
        } else {
          QuantizeQ4KPlain(x, y, n);
        }
        break;
      case GgmlType::kQ6_K:
        QuantizeQ6K(x, y, n, imatrix);
        break;
      case GgmlType::kTQ1_0:
        QuantizeTq1(x, y, n);
        break;
      case GgmlType::kTQ2_0:
        QuantizeTq2(x, y, n);
        break;
      case GgmlType::kIQ2_XXS:
        QuantizeRowIq2xxs(x, y, n, imatrix);
        break;
      case GgmlType::kIQ1_S:
        QuantizeRowIq1s(x, y, n, imatrix);
        break;
      case GgmlType::kIQ1_M:
        QuantizeRowIq1m(x, y, n, imatrix);
        break;
      case GgmlType::kQ8_K:
        break;  // rejected above
    }
  }
  return absl::OkStatus();
}

}  // namespace tritmoe
