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

#include <array>
#include <cstdint>
#include <cstring>

#include "experts/matmul_iq1s_quads.h"
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

// u lives in memory (written and read back with whole-vector moves); the scales are built in
// registers, since element-wise stores read back as a vector would defeat store forwarding.
struct alignas(64) DecodedBlock {
  uint8_t u[256];
  __m256i sc;   // 16 x int16
  __m256i msc;  // 16 x int16
  float d;
  float dm;
};

// 8 int16 values, each repeated twice, as 16 int16 lanes.
inline __m256i DupPairs16(__m128i v) {
  const __m256i x = _mm256_cvtepu16_epi32(v);
  return _mm256_or_si256(x, _mm256_slli_epi32(x, 16));
}

// Per-lane trit digit: for each byte b with multiplier p (3^n), ((b * p mod 256) * 3) >> 8.
// p_even / p_odd: the multipliers of the even / odd bytes as 16-bit lanes. With the byte in the
// high half of a 16-bit lane, mullo leaves (b * p mod 256) << 8 and mulhi by 3 gives the digit.
inline __m256i TritDigits(__m256i b, __m256i p_even, __m256i p_odd) {
  const __m256i hi_mask = _mm256_set1_epi16(static_cast<int16_t>(0xFF00));
  const __m256i m_even = _mm256_mullo_epi16(_mm256_slli_epi16(b, 8), p_even);
  const __m256i m_odd = _mm256_mullo_epi16(_mm256_and_si256(b, hi_mask), p_odd);
  const __m256i t_even = _mm256_mulhi_epu16(m_even, _mm256_set1_epi16(3));
  const __m256i t_odd = _mm256_and_si256(_mm256_mulhi_epu16(m_odd, _mm256_set1_epi16(3 << 8)),
                                         hi_mask);  // (m * 3) with its high byte = the digit
  return _mm256_or_si256(t_even, t_odd);
}

inline void FillScales(DecodedBlock* db, int16_t sc, int16_t msc) {
  db->sc = _mm256_set1_epi16(sc);
  db->msc = _mm256_set1_epi16(msc);
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
    db->sc = _mm256_and_si256(s, _mm256_set1_epi16(0xF));
    db->msc = _mm256_srli_epi16(s, 4);
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
    // The 8 six-bit scales and mins (formats.md §2.6), four per 32-bit word.
    const uint32_t w0 = LoadU32(b + 4), w1 = LoadU32(b + 8), w2 = LoadU32(b + 12);
    const uint32_t sc_lo = w0 & 0x3F3F3F3F;
    const uint32_t m_lo = w1 & 0x3F3F3F3F;
    const uint32_t sc_hi = (w2 & 0x0F0F0F0F) | (((w0 >> 6) & 0x03030303) << 4);
    const uint32_t m_hi = ((w2 >> 4) & 0x0F0F0F0F) | (((w1 >> 6) & 0x03030303) << 4);
    const __m128i v = _mm_setr_epi32(static_cast<int>(sc_lo), static_cast<int>(sc_hi),
                                     static_cast<int>(m_lo), static_cast<int>(m_hi));
    db->sc = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(v, v));  // each 32-element scale twice
    db->msc = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(v, v));
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
    db->sc = s;
    db->msc = _mm256_slli_epi16(s, 5);  // codes carry +32
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
    }
    // The second word of each sub-block (odd dwords of qs) holds the 4-bit scale on top.
    const __m256 lo = _mm256_castsi256_ps(Load256(b + 2));
    const __m256 hi = _mm256_castsi256_ps(Load256(b + 34));
    const __m256i a1 = _mm256_permute4x64_epi64(
        _mm256_castps_si256(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1))),
        _MM_SHUFFLE(3, 1, 2, 0));
    const __m256i ls =
        _mm256_or_si256(_mm256_slli_epi32(_mm256_srli_epi32(a1, 28), 1), _mm256_set1_epi32(1));
    db->sc = _mm256_or_si256(ls, _mm256_slli_epi32(ls, 16));
    db->msc = _mm256_mullo_epi16(db->sc, _mm256_set1_epi16(43));
    db->d = db->dm = LoadFp16(b) * 0.125f;
  }
};

// kIq1sGrid with 1 added to each byte: the grid values as unsigned codes g + 1 in {0, 1, 2}.
constexpr std::array<uint64_t, 2048> MakeIq1sGridPlus1() {
  std::array<uint64_t, 2048> t{};
  for (int i = 0; i < 2048; ++i) {
    uint64_t v = 0;
    for (int k = 0; k < 8; ++k) {
      const int g = static_cast<int8_t>(tables::kIq1sGrid[i] >> (8 * k));
      v |= static_cast<uint64_t>(g + 1) << (8 * k);
    }
    t[i] = v;
  }
  return t;
}
alignas(64) inline constexpr std::array<uint64_t, 2048> kIq1sGridPlus1 = MakeIq1sGridPlus1();
inline uint64_t Iq1sGridPlus1(uint32_t idx) { return kIq1sGridPlus1[idx]; }

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
    }
    const __m128i qh = Load128(b + 34);
    const __m128i ls =
        _mm_or_si128(_mm_and_si128(_mm_srli_epi16(qh, 11), _mm_set1_epi16(14)), _mm_set1_epi16(1));
    db->sc = DupPairs16(_mm_slli_epi16(ls, 3));
    db->msc = DupPairs16(_mm_mullo_epi16(
        ls, _mm_add_epi16(_mm_set1_epi16(7), _mm_slli_epi16(_mm_srli_epi16(qh, 15), 1))));
    db->d = db->dm = LoadFp16(b) * 0.125f;
  }
};

// IQ1_S quads (experts/matmul_iq1s_quads.h): a base-3 field of 4 codes -> 4 code bytes.
constexpr std::array<uint32_t, 128> MakeQuadCodes() {
  std::array<uint32_t, 128> t{};
  for (uint32_t v = 0; v < 81; ++v) {
    t[v] = (v % 3) | ((v / 3 % 3) << 8) | ((v / 9 % 3) << 16) | ((v / 27) << 24);
  }
  return t;
}
alignas(64) inline constexpr std::array<uint32_t, 128> kQuadCodes = MakeQuadCodes();

// IQ1_S quads: the same codes u = g + 1 and scales as DecodeIq1s, read from the fields (a table
// per field; the AVX-512 kernel decodes 64 fields at once instead). The fields of a sub-block with
// δ = -1/8 hold the codes negated (80 - field), undone here so that every lane's integer sum is
// the one of the GGUF layout's kernel.
struct DecodeIq1sQuads {
  static constexpr int kBlockBytes = 64;
  static constexpr bool kSeparateMin = false;  // dm == d
  static void Decode(const uint8_t* b, DecodedBlock* db) {
    alignas(16) int16_t ls[8], c[8];
    uint64_t q[8];
    std::memcpy(q, b, 64);
    for (int k = 0; k < 8; ++k) {
      const uint32_t nibble = (q[iq1s_quads::MetaQword(k)] >> iq1s_quads::MetaShift(k)) & 15;
      const bool negated = (nibble & 8) != 0;
      for (int j = 0; j < 8; ++j) {
        uint32_t field = (q[k] >> iq1s_quads::FieldShift(k, j)) & 127;
        if (negated) field = (80 - field) & 127;  // & 127: in the table for any bytes
        std::memcpy(db->u + 32 * k + 4 * j, &kQuadCodes[field], 4);
      }
      ls[k] = static_cast<int16_t>(2 * (nibble & 7) + 1);
      c[k] = static_cast<int16_t>(negated ? 9 : 7);
    }
    const __m128i lsv = _mm_load_si128(reinterpret_cast<const __m128i*>(ls));
    db->sc = DupPairs16(_mm_slli_epi16(lsv, 3));
    db->msc = DupPairs16(_mm_mullo_epi16(lsv, _mm_load_si128(reinterpret_cast<const __m128i*>(c))));
    db->d = db->dm = LoadFp16(b + iq1s_quads::kDOffset) * 0.125f;
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
    // Word t = sc[t / 4], then bits 3(t % 4).. moved to the top by a multiply and shifted down.
    const __m256i words =
        _mm256_shuffle_epi8(_mm256_set1_epi64x(static_cast<long long>(LoadU32(b + 48)) |
                                               (static_cast<long long>(LoadU32(b + 52)) << 32)),
                            _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 4, 5,
                                             4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7));
    const __m256i s3 = _mm256_srli_epi16(
        _mm256_mullo_epi16(
            words,
            _mm256_setr_epi16(1 << 13, 1 << 10, 1 << 7, 1 << 4, 1 << 13, 1 << 10, 1 << 7, 1 << 4,
                              1 << 13, 1 << 10, 1 << 7, 1 << 4, 1 << 13, 1 << 10, 1 << 7, 1 << 4)),
        13);
    db->sc = _mm256_or_si256(_mm256_slli_epi16(s3, 1), _mm256_set1_epi16(1));
    db->msc = _mm256_mullo_epi16(db->sc, _mm256_set1_epi16(9));
    db->d = db->dm = _cvtsh_ss(d_bits) * 0.125f;
  }
};

struct DecodeTq1 {
  static constexpr int kBlockBytes = 54;
  static constexpr bool kSeparateMin = false;  // dm == d
  // The 256 trits (0..2) in element order, 32 per vector.
  static void Codes(const uint8_t* b, __m256i* u) {
    const __m256i q = Load256(b);
    for (int n = 0; n < 5; ++n) {
      const __m256i p = _mm256_set1_epi16(tables::kPow3Tq[n]);
      u[n] = TritDigits(q, p, p);
    }
    // qs[32..47] in both halves: digit 2k in the low half, 2k + 1 in the high half.
    const __m128i q2 = Load128(b + 32);
    const __m256i qq = _mm256_set_m128i(q2, q2);
    for (int k = 0; k < 2; ++k) {
      const __m256i p = _mm256_set_m128i(_mm_set1_epi16(tables::kPow3Tq[2 * k + 1]),
                                         _mm_set1_epi16(tables::kPow3Tq[2 * k]));
      u[5 + k] = TritDigits(qq, p, p);
    }
    // Elements 224..239: digit 4 of qs[32..47]; 240..255: element 240 + 4n + j = digit n of qh[j].
    const __m128i qh = _mm_set1_epi32(static_cast<int>(LoadU32(b + 48)));
    const __m256i last = _mm256_set_m128i(qh, q2);
    const __m256i p_even =
        _mm256_set_epi16(27, 27, 9, 9, 3, 3, 1, 1, 81, 81, 81, 81, 81, 81, 81, 81);
    u[7] = TritDigits(last, p_even, p_even);
  }
  static float Scale(const uint8_t* b) { return LoadFp16(b + 52); }
  static void Decode(const uint8_t* b, DecodedBlock* db) {
    __m256i u[8];
    Codes(b, u);
    for (int c = 0; c < 8; ++c) Store256(db->u + 32 * c, u[c]);
    FillScales(db, 1, 1);
    db->d = db->dm = Scale(b);
  }
};

struct DecodeTq2 {
  static constexpr int kBlockBytes = 66;
  static constexpr bool kSeparateMin = false;  // dm == d
  // The 256 codes (0..3) in element order, 32 per vector.
  static void Codes(const uint8_t* b, __m256i* u) {
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; ++h) {
      const __m256i q = Load256(b + 32 * h);
      for (int l = 0; l < 4; ++l) u[4 * h + l] = _mm256_and_si256(_mm256_srli_epi16(q, 2 * l), m3);
    }
  }
  static float Scale(const uint8_t* b) { return LoadFp16(b + 64); }
  static void Decode(const uint8_t* b, DecodedBlock* db) {
    __m256i u[8];
    Codes(b, u);
    for (int c = 0; c < 8; ++c) Store256(db->u + 32 * c, u[c]);
    FillScales(db, 1, 1);
    db->d = db->dm = Scale(b);
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

// Runs K::Run<NT> over the token tile in pieces of 8, 4, 2 and 1 tokens.
template <typename K>
void TiledDot(int64_t n, const void* w, const void* act, int64_t stride, int n_tok, float* out) {
  const auto* wb = static_cast<const uint8_t*>(w);
  const auto* a = static_cast<const uint8_t*>(act);
  int t = 0;
  while (t < n_tok) {
    const int left = n_tok - t;
    if (left >= 8) {
      K::template Run<8>(n, wb, a + t * stride, stride, out + t);
      t += 8;
    } else if (left >= 4) {
      K::template Run<4>(n, wb, a + t * stride, stride, out + t);
      t += 4;
    } else if (left >= 2) {
      K::template Run<2>(n, wb, a + t * stride, stride, out + t);
      t += 2;
    } else {
      K::template Run<1>(n, wb, a + t * stride, stride, out + t);
      t += 1;
    }
  }
}

// Q4_0 / Q8_0 weights against Q8_0 activations, 32 elements per block.
template <__m256i (*kWeights)(const uint8_t*), int kBlockBytes>
struct Q8_0Dot {
  template <int NT>
  static void Run(int64_t n, const uint8_t* w, const uint8_t* act, int64_t stride, float* out) {
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 32; ++i) {
      const uint8_t* b = w + i * kBlockBytes;
      const __m256i wv = kWeights(b);
      const float dw = LoadFp16(b);
      for (int t = 0; t < NT; ++t) {
        const BlockQ8_0* a = reinterpret_cast<const BlockQ8_0*>(act + t * stride) + i;
        const __m256i s = DotI8x32(wv, Load256(a->qs));
        acc[t] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dw * _cvtsh_ss(a->d)), acc[t]);
      }
    }
    for (int t = 0; t < NT; ++t) out[t] = HSum256(acc[t]);
  }
};

// ---- Activation quantizers, bit-identical to QuantizeRowQ8K / QuantizeRowQ8_0 ----------------
// Both use only exactly rounded operations in the reference's order: the absolute maximum (its
// first occurrence decides the sign for Q8_K), one float division, float products rounded to
// nearest-even (Q8_K, cvtps with the default MXCSR) or half away from zero (Q8_0, roundf).

inline float HMax256(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// One 256-element Q8_K block (formats.md §2.4).
inline void QuantizeBlockQ8KAvx2(const float* x, BlockQ8K* y) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 amax_v = _mm256_setzero_ps();
  for (int j = 0; j < 32; ++j) {
    amax_v = _mm256_max_ps(amax_v, _mm256_and_ps(_mm256_loadu_ps(x + 8 * j), abs_mask));
  }
  const float amax = HMax256(amax_v);
  if (!(amax > 0)) {
    std::memset(y, 0, sizeof(*y));
    return;
  }
  float max = 0;
  const __m256 amax_b = _mm256_set1_ps(amax);
  for (int j = 0; j < 32; ++j) {
    const int m = _mm256_movemask_ps(
        _mm256_cmp_ps(_mm256_and_ps(_mm256_loadu_ps(x + 8 * j), abs_mask), amax_b, _CMP_EQ_OQ));
    if (m != 0) {
      max = x[8 * j + __builtin_ctz(static_cast<unsigned>(m))];
      break;
    }
  }
  const float iscale = -127.0f / max;
  const __m256 is = _mm256_set1_ps(iscale);
  const __m256i lim = _mm256_set1_epi32(127);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i bias = _mm256_set1_epi8(static_cast<char>(0x80));
  for (int c = 0; c < 8; ++c) {
    __m256i q[4];
    for (int k = 0; k < 4; ++k) {
      q[k] = _mm256_min_epi32(
          _mm256_cvtps_epi32(_mm256_mul_ps(is, _mm256_loadu_ps(x + 32 * c + 8 * k))), lim);
    }
    const __m256i q16a = _mm256_packs_epi32(q[0], q[1]);
    const __m256i q16b = _mm256_packs_epi32(q[2], q[3]);
    const __m256i q8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q16a, q16b), order);
    Store256(y->qs + 32 * c, q8);
    // Σ of each 8 bytes (+128 each) in 64-bit lanes; two lanes make one 16-element sum.
    const __m256i sad = _mm256_sad_epu8(_mm256_xor_si256(q8, bias), _mm256_setzero_si256());
    alignas(32) int64_t s[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(s), sad);
    y->bsums[2 * c] = static_cast<int16_t>(s[0] + s[1] - 2048);
    y->bsums[2 * c + 1] = static_cast<int16_t>(s[2] + s[3] - 2048);
  }
  y->d = 1 / iscale;
}

inline void QuantizeRowQ8KAvx2(const float* x, int64_t n, void* dst) {
  auto* y = static_cast<BlockQ8K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i) QuantizeBlockQ8KAvx2(x + i * kQK_K, y + i);
}

// roundf: round half away from zero, exactly (trunc, then step out when the rest is >= 0.5).
inline __m256 RoundHalfAway(__m256 v) {
  const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 rest = _mm256_and_ps(_mm256_sub_ps(v, t), abs_mask);
  const __m256 step = _mm256_or_ps(_mm256_andnot_ps(abs_mask, v), _mm256_set1_ps(1.0f));
  return _mm256_add_ps(t,
                       _mm256_and_ps(_mm256_cmp_ps(rest, _mm256_set1_ps(0.5f), _CMP_GE_OQ), step));
}

// Q8_0 activation blocks (formats.md §2.2).
inline void QuantizeRowQ8_0Avx2(const float* x, int64_t n, void* dst) {
  auto* y = static_cast<BlockQ8_0*>(dst);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t i = 0; i < n / 32; ++i, x += 32) {
    __m256 v[4];
    __m256 amax_v = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_loadu_ps(x + 8 * k);
      amax_v = _mm256_max_ps(amax_v, _mm256_and_ps(v[k], abs_mask));
    }
    const float amax = HMax256(amax_v);
    const float d = amax / 127;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
    const __m256 idv = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) q[k] = _mm256_cvttps_epi32(RoundHalfAway(_mm256_mul_ps(v[k], idv)));
    const __m256i q8 = _mm256_permutevar8x32_epi32(
        _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3])), order);
    Store256(y[i].qs, q8);
  }
}

}  // namespace tritmoe::matmul_internal::TRITMOE_X86_NS
