// Block decoders shared by the AVX2 and AVX-512 kernel files (AVX2 instructions only). Each of
// those files defines TRITMOE_X86_NS before including this header, so every function here is
// compiled once per ISA file with that file's flags and under its own name (no ODR mixing of code
// built for different CPUs).
//
// A decoder turns one 256-element weight block into unsigned 8-bit codes u (in element order) plus
// integer scales, such that for a Q8_K activation block (qs, bsums, d_a):
//   dot = d_a * (d * Σ_j sc[j] * Σ_{i in sub-block j} u_i * qs_i  -  dm * Σ_j msc[j] * bsums[j])
// with 16 sub-blocks of 16 elements. Signed weights are stored with an offset folded into msc.
// kSeparateMin: dm differs from d (K-quant mins); otherwise dm == d and one scaling suffices.
// u < 128 everywhere so that maddubs (u8 x s8 pair sums) cannot saturate.
#pragma once

#ifndef TRITMOE_X86_NS
#error "define TRITMOE_X86_NS before including matmul_x86_common.h"
#endif

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "experts/matmul_kernels.h"
#include "experts/quant_tables.h"

namespace tritmoe::matmul_internal::TRITMOE_X86_NS {

inline float LoadFp16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}
inline uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline __m256i Load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m128i Load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
inline void Store256(void* p, __m256i v) { _mm256_storeu_si256(static_cast<__m256i*>(p), v); }

inline float HSum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

struct alignas(64) DecodedBlock {
  uint8_t u[256];
  int16_t sc[16];
  int16_t msc[16];
  float d;
  float dm;
};

// Per-lane trit digit: for each byte b with multiplier p (3^n), ((b * p mod 256) * 3) >> 8.
// p_even / p_odd: the multipliers of the even / odd bytes as 16-bit lanes.
inline __m256i TritDigits(__m256i b, __m256i p_even, __m256i p_odd) {
  const __m256i lo_mask = _mm256_set1_epi16(0x00FF);
  const __m256i m_even = _mm256_and_si256(_mm256_mullo_epi16(b, p_even), lo_mask);
  const __m256i m_odd =
      _mm256_andnot_si256(lo_mask, _mm256_mullo_epi16(_mm256_andnot_si256(lo_mask, b), p_odd));
  const __m256i m = _mm256_or_si256(m_even, m_odd);
  // (m * 3) >> 8 is 1 for m >= 86 and 2 for m >= 171.
  const __m256i ge1 = _mm256_cmpeq_epi8(_mm256_max_epu8(m, _mm256_set1_epi8(86)), m);
  const __m256i ge2 =
      _mm256_cmpeq_epi8(_mm256_max_epu8(m, _mm256_set1_epi8(static_cast<char>(171))), m);
  return _mm256_sub_epi8(_mm256_sub_epi8(_mm256_setzero_si256(), ge1), ge2);
}

inline void FillScales(DecodedBlock* db, int16_t sc, int16_t msc) {
  for (int j = 0; j < 16; ++j) {
    db->sc[j] = sc;
    db->msc[j] = msc;
  }
}

struct DecodeQ2K {
  static constexpr int kBlockBytes = 84;
  static constexpr bool kSeparateMin = true;
  static void Decode(const uint8_t* b, DecodedBlock* db) {
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; ++h) {
      const __m256i q = Load256(b + 16 + 32 * h);
      for (int j = 0; j < 4; ++j) {
        Store256(db->u + 128 * h + 32 * j, _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3));
      }
    }
    const __m256i s = _mm256_cvtepu8_epi16(Load128(b));
    Store256(db->sc, _mm256_and_si256(s, _mm256_set1_epi16(0xF)));
    Store256(db->msc, _mm256_srli_epi16(s, 4));
    db->d = LoadFp16(b + 80);
    db->dm = LoadFp16(b + 82);
  }
};

struct DecodeQ4K {
  static constexpr int kBlockBytes = 144;
  static constexpr bool kSeparateMin = true;
  static void Decode(const uint8_t* b, DecodedBlock* db) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    for (int c = 0; c < 4; ++c) {
      const __m256i q = Load256(b + 16 + 32 * c);
      Store256(db->u + 64 * c, _mm256_and_si256(q, m4));
      Store256(db->u + 64 * c + 32, _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
    }
    const uint8_t* q = b + 4;
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
      } else {
        sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
      }
      db->sc[2 * j] = db->sc[2 * j + 1] = static_cast<int16_t>(sc);
      db->msc[2 * j] = db->msc[2 * j + 1] = static_cast<int16_t>(m);
    }
    db->d = LoadFp16(b);
    db->dm = LoadFp16(b + 2);
  }
};

struct DecodeQ6K {
  static constexpr int kBlockBytes = 210;
  static constexpr bool kSeparateMin = false;  // dm == d
  static void Decode(const uint8_t* b, DecodedBlock* db) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i m30 = _mm256_set1_epi8(0x30);
    for (int h = 0; h < 2; ++h) {
      const __m256i l0 = Load256(b + 64 * h);
      const __m256i l1 = Load256(b + 64 * h + 32);
      const __m256i hb = Load256(b + 128 + 32 * h);
      uint8_t* u = db->u + 128 * h;
      Store256(u, _mm256_or_si256(_mm256_and_si256(l0, m4),
                                  _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30)));
      Store256(u + 32, _mm256_or_si256(_mm256_and_si256(l1, m4),
                                       _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30)));
      Store256(u + 64, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                       _mm256_and_si256(hb, m30)));
      Store256(u + 96, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                       _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30)));
    }
    const __m256i s = _mm256_cvtepi8_epi16(Load128(b + 192));
    Store256(db->sc, s);
    Store256(db->msc, _mm256_slli_epi16(s, 5));  // codes carry +32
    db->d = db->dm = LoadFp16(b + 208);
  }
};

struct DecodeIq2xxs {
  static constexpr int kBlockBytes = 66;
  static constexpr bool kSeparateMin = false;  // dm == d
  static void Decode(const uint8_t* b, DecodedBlock* db) {
    const __m256i bit_select = _mm256_set1_epi64x(0x8040201008040201LL);
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                            2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i offset = _mm256_set1_epi8(43);
    for (int ib = 0; ib < 8; ++ib) {
      const uint32_t a0 = LoadU32(b + 2 + 8 * ib);
      const uint32_t a1 = LoadU32(b + 6 + 8 * ib);
      const __m256i g =
          _mm256_setr_epi64x(tables::kIq2xxsGrid[a0 & 0xFF], tables::kIq2xxsGrid[(a0 >> 8) & 0xFF],
                             tables::kIq2xxsGrid[(a0 >> 16) & 0xFF], tables::kIq2xxsGrid[a0 >> 24]);
      const uint32_t signs = tables::kSignsIq2xs[a1 & 127] |
                             (tables::kSignsIq2xs[(a1 >> 7) & 127] << 8) |
                             (tables::kSignsIq2xs[(a1 >> 14) & 127] << 16) |
                             (static_cast<uint32_t>(tables::kSignsIq2xs[(a1 >> 21) & 127]) << 24);
      const __m256i sb = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(signs)), spread);
      const __m256i neg = _mm256_cmpeq_epi8(_mm256_and_si256(sb, bit_select), bit_select);
      const __m256i v = _mm256_sub_epi8(_mm256_xor_si256(g, neg), neg);
      Store256(db->u + 32 * ib, _mm256_add_epi8(v, offset));
      const int16_t ls = static_cast<int16_t>(2 * (a1 >> 28) + 1);
      db->sc[2 * ib] = db->sc[2 * ib + 1] = ls;
      db->msc[2 * ib] = db->msc[2 * ib + 1] = static_cast<int16_t>(43 * ls);
    }
    db->d = db->dm = LoadFp16(b) * 0.125f;
  }
};

// Four 8-byte entries of the IQ1_S/IQ1_M grid (values -1, 0, 1) as one vector.
inline __m256i Iq1Grid4(int i0, int i1, int i2, int i3) {
  return _mm256_setr_epi64x(tables::kIq1sGrid[i0], tables::kIq1sGrid[i1], tables::kIq1sGrid[i2],
                            tables::kIq1sGrid[i3]);
}

// u = g + 1; per 32 elements Σ(g + δ)a = Σ u a − (1 − δ) Σ a with δ = ±1/8, all scaled by 8.
struct DecodeIq1s {
  static constexpr int kBlockBytes = 50;
  static constexpr bool kSeparateMin = false;  // dm == d
  static void Decode(const uint8_t* b, DecodedBlock* db) {
    const uint8_t* qs = b + 2;
    const __m256i one = _mm256_set1_epi8(1);
    for (int ib = 0; ib < 8; ++ib) {
      const uint16_t qh = LoadU16(b + 34 + 2 * ib);
      const __m256i g =
          Iq1Grid4(qs[4 * ib] | ((qh << 8) & 0x700), qs[4 * ib + 1] | ((qh << 5) & 0x700),
                   qs[4 * ib + 2] | ((qh << 2) & 0x700), qs[4 * ib + 3] | ((qh >> 1) & 0x700));
      Store256(db->u + 32 * ib, _mm256_add_epi8(g, one));
      const int ls = 2 * ((qh >> 12) & 7) + 1;
      db->sc[2 * ib] = db->sc[2 * ib + 1] = static_cast<int16_t>(8 * ls);
      db->msc[2 * ib] = db->msc[2 * ib + 1] = static_cast<int16_t>(ls * (qh & 0x8000 ? 9 : 7));
    }
    db->d = db->dm = LoadFp16(b) * 0.125f;
  }
};

// u = 8g + 8δ + 9 (δ = ±1/8 per 8 elements), so Σ(g + δ)a = (Σ u a − 9 Σ a) / 8.
struct DecodeIq1m {
  static constexpr int kBlockBytes = 56;
  static constexpr bool kSeparateMin = false;  // dm == d
  static void Decode(const uint8_t* b, DecodedBlock* db) {
    const uint8_t* qs = b;
    const uint8_t* qh = b + 32;
    uint16_t sc[4];
    for (int k = 0; k < 4; ++k) sc[k] = LoadU16(b + 48 + 2 * k);
    const uint16_t d_bits = static_cast<uint16_t>((sc[0] >> 12) | ((sc[1] >> 8) & 0x00F0) |
                                                  ((sc[2] >> 4) & 0x0F00) | (sc[3] & 0xF000));
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                            2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    for (int ib = 0; ib < 8; ++ib) {
      const int h0 = qh[2 * ib], h1 = qh[2 * ib + 1];
      const __m256i g =
          Iq1Grid4(qs[4 * ib] | ((h0 << 8) & 0x700), qs[4 * ib + 1] | ((h0 << 4) & 0x700),
                   qs[4 * ib + 2] | ((h1 << 8) & 0x700), qs[4 * ib + 3] | ((h1 << 4) & 0x700));
      // Per-group offset 9 + 8δ: 8 when the delta bit is set (δ = -1/8), else 10.
      const uint32_t offs = (h0 & 0x08 ? 8u : 10u) | ((h0 & 0x80 ? 8u : 10u) << 8) |
                            ((h1 & 0x08 ? 8u : 10u) << 16) | ((h1 & 0x80 ? 8u : 10u) << 24);
      const __m256i off = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(offs)), spread);
      const __m256i g2 = _mm256_add_epi8(g, g);
      const __m256i g8 = _mm256_add_epi8(_mm256_add_epi8(g2, g2), _mm256_add_epi8(g2, g2));
      Store256(db->u + 32 * ib, _mm256_add_epi8(g8, off));
    }
    for (int t = 0; t < 16; ++t) {
      const int ls = 2 * ((sc[t / 4] >> (3 * (t % 4))) & 7) + 1;
      db->sc[t] = static_cast<int16_t>(ls);
      db->msc[t] = static_cast<int16_t>(9 * ls);
    }
    db->d = db->dm = _cvtsh_ss(d_bits) * 0.125f;
  }
};

struct DecodeTq1 {
  static constexpr int kBlockBytes = 54;
  static constexpr bool kSeparateMin = false;  // dm == d
  static void Decode(const uint8_t* b, DecodedBlock* db) {
    const __m256i q = Load256(b);
    for (int n = 0; n < 5; ++n) {
      const __m256i p = _mm256_set1_epi16(tables::kPow3Tq[n]);
      Store256(db->u + 32 * n, TritDigits(q, p, p));
    }
    // qs[32..47] in both halves: digit 2k in the low half, 2k + 1 in the high half.
    const __m128i q2 = Load128(b + 32);
    const __m256i qq = _mm256_set_m128i(q2, q2);
    for (int k = 0; k < 2; ++k) {
      const __m256i p = _mm256_set_m128i(_mm_set1_epi16(tables::kPow3Tq[2 * k + 1]),
                                         _mm_set1_epi16(tables::kPow3Tq[2 * k]));
      Store256(db->u + 160 + 32 * k, TritDigits(qq, p, p));
    }
    // Elements 224..239: digit 4 of qs[32..47]; 240..255: element 240 + 4n + j = digit n of qh[j].
    const __m128i qh = _mm_set1_epi32(static_cast<int>(LoadU32(b + 48)));
    const __m256i last = _mm256_set_m128i(qh, q2);
    const __m256i p_even =
        _mm256_set_epi16(27, 27, 9, 9, 3, 3, 1, 1, 81, 81, 81, 81, 81, 81, 81, 81);
    Store256(db->u + 224, TritDigits(last, p_even, p_even));
    FillScales(db, 1, 1);
    db->d = db->dm = LoadFp16(b + 52);
  }
};

struct DecodeTq2 {
  static constexpr int kBlockBytes = 66;
  static constexpr bool kSeparateMin = false;  // dm == d
  static void Decode(const uint8_t* b, DecodedBlock* db) {
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; ++h) {
      const __m256i q = Load256(b + 32 * h);
      for (int l = 0; l < 4; ++l) {
        Store256(db->u + 128 * h + 32 * l, _mm256_and_si256(_mm256_srli_epi16(q, 2 * l), m3));
      }
    }
    FillScales(db, 1, 1);
    db->d = db->dm = LoadFp16(b + 64);
  }
};

// Signed 32-element int8 dot (w, a) as 8 int32 lanes, via the sign trick.
inline __m256i DotI8x32(__m256i w, __m256i a) {
  const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

// Weights of a 32-element Q4_0 / Q8_0 block as signed bytes.
inline __m256i Q4_0Weights(const uint8_t* b) {
  const __m128i q = Load128(b + 2);
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
  return _mm256_sub_epi8(_mm256_and_si256(both, _mm256_set1_epi8(0xF)), _mm256_set1_epi8(8));
}
inline __m256i Q8_0Weights(const uint8_t* b) { return Load256(b + 2); }

}  // namespace tritmoe::matmul_internal::TRITMOE_X86_NS
