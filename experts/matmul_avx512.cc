// AVX-512 (F/BW/VL/DQ + VNNI + VBMI) dot products.
//
// The routed-expert types get fused kernels with their own activation layouts: the activation is
// packed once per call and reused by every weight row, so reordering it to fit the weight bits
// costs nothing per row.
//   TQ2_0: four 2-bit planes of the 64 qs bytes are the four vectors of codes (vpsrlw + vpand),
//          activation bytes reordered to match; vpdpbusd(code 0..3, q8) − Σq8.
//   TQ1_0: single token: two vpdpbusd chains over the packed bytes times powers of 3 (no digit
//          tables, see Tq1::Rows); several tokens: the 52 packed bytes are turned into their five
//          base-3 digits by 256-entry byte tables (two vpermi2b + a blend per digit), shared by
//          the tokens. Activations reordered to the digit planes.
//   IQ1_S quads (the CPU layout of experts/matmul_iq1s_quads.h): vpmultishiftqb + 4 vpermi2b
//          decode 64 fields into 4 code planes; sub-block scales per 4-byte lane via vpmulld.
// TQ1_0, TQ2_0 and quads have tile kernels: single-token products take up to 8 rows per call (one
// after the other, one shuffle tree per four sums; see TernaryTile).
//   IQ1_S: the 32 grid indices of a block are built in vector registers and looked up with two
//          16-lane gathers in the nibble-packed grid (value + 1 per nibble); the activation is
//          split into the matching "low 4 / high 4 of each group of 8" planes. Sub-block scales
//          go through vpdpwssd, the ±1/8 delta through the per-32 activation sums.
// The other quantized types decode a block into unsigned codes (matmul_x86_common.h) and use
// vpmaddubsw + vpdpwssd with the sub-block scales. Float types: FMA with masked tails.
#define TRITMOE_X86_NS avx512
// GCC 12 reports the _mm512_undefined_* placeholders inside its own intrinsic wrappers as
// uninitialized once they are inlined at -O3; they are not.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <algorithm>
#include <array>

#include "experts/matmul_x86_common.h"
#include "experts/quantize.h"

namespace tritmoe::matmul_internal {
namespace avx512 {
namespace {

inline __m512i Load512(const void* p) { return _mm512_loadu_si512(p); }

inline __m512i Widen256(const uint8_t* p) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(Load256(p)), Load256(p + 32), 1);
}

// ---- Generic: decoded block x standard Q8_K ----------------------------------------------------

template <typename Dec>
struct GenericQ8K {
  template <int NT>
  static void Run(int64_t n, const uint8_t* w, const uint8_t* act, int64_t stride, float* out) {
    // Word lane L of chunk c (64 elements) takes the scale of sub-block 4c + L / 8.
    __m512i pick[4];
    for (int c = 0; c < 4; ++c) {
      alignas(64) int16_t idx[32];
      for (int l = 0; l < 32; ++l) idx[l] = static_cast<int16_t>(4 * c + l / 8);
      pick[c] = _mm512_load_si512(idx);
    }
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    DecodedBlock db;
    for (int64_t i = 0; i < n / kQK_K; ++i) {
      Dec::Decode(w + i * Dec::kBlockBytes, &db);
      __m512i u[4], scv[4];
      const __m512i sc16 = _mm512_castsi256_si512(db.sc);
      for (int c = 0; c < 4; ++c) {
        u[c] = Widen256(db.u + 64 * c);
        scv[c] = _mm512_permutexvar_epi16(pick[c], sc16);
      }
      const __m256i msc = db.msc;
      for (int t = 0; t < NT; ++t) {
        const BlockQ8K* a = reinterpret_cast<const BlockQ8K*>(act + t * stride) + i;
        __m512i isum = _mm512_setzero_si512();
        for (int c = 0; c < 4; ++c) {
          isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(u[c], Load512(a->qs + 64 * c)),
                                     scv[c]);
        }
        const __m512i corr = _mm512_zextsi256_si512(_mm256_madd_epi16(Load256(a->bsums), msc));
        if constexpr (Dec::kSeparateMin) {
          acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(db.d * a->d), acc[t]);
          acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(corr), _mm512_set1_ps(db.dm * a->d), acc[t]);
        } else {
          acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(isum, corr)),
                                   _mm512_set1_ps(db.d * a->d), acc[t]);
        }
      }
    }
    for (int t = 0; t < NT; ++t) out[t] = _mm512_reduce_add_ps(acc[t]);
  }
};

// QuantizeRowQ8K for one block, bit for bit (see QuantizeBlockQ8KAvx2 for the argument).
inline void QuantizeBlockQ8K(const float* x, BlockQ8K* y) {
  __m512 v[16];
  __m512 amax_v = _mm512_setzero_ps();
  for (int j = 0; j < 16; ++j) {
    v[j] = _mm512_loadu_ps(x + 16 * j);
    amax_v = _mm512_max_ps(amax_v, _mm512_abs_ps(v[j]));
  }
  const float amax = _mm512_reduce_max_ps(amax_v);
  if (!(amax > 0)) {
    std::memset(y, 0, sizeof(*y));
    return;
  }
  float max = 0;
  const __m512 amax_b = _mm512_set1_ps(amax);
  for (int j = 0; j < 16; ++j) {
    const __mmask16 m = _mm512_cmp_ps_mask(_mm512_abs_ps(v[j]), amax_b, _CMP_EQ_OQ);
    if (m != 0) {
      max = x[16 * j + __builtin_ctz(static_cast<unsigned>(m))];
      break;
    }
  }
  const float iscale = -127.0f / max;
  const __m512 is = _mm512_set1_ps(iscale);
  const __m512i lim = _mm512_set1_epi32(127);
  const __m512i ones = _mm512_set1_epi8(1);
  // Lanes 0, 4, 8, 12 of two vectors (the 16-element sums) into lanes 0..7.
  const __m512i pick4 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0);
  __m512i sums[4];
  for (int c = 0; c < 4; ++c) {
    __m128i q[4];
    for (int k = 0; k < 4; ++k) {
      q[k] = _mm512_cvtepi32_epi8(
          _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(is, v[4 * c + k])), lim));
    }
    const __m512i q8 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set_m128i(q[1], q[0])),
                                          _mm256_set_m128i(q[3], q[2]), 1);
    _mm512_storeu_si512(y->qs + 64 * c, q8);
    // Σ of 4 bytes per lane, then of 4 lanes: lane 4g holds the sum of group g.
    __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, q8);
    p = _mm512_add_epi32(p, _mm512_srli_epi64(p, 32));
    sums[c] = _mm512_add_epi32(p, _mm512_bsrli_epi128(p, 8));
  }
  const __m512i lo = _mm512_permutex2var_epi32(sums[0], pick4, sums[1]);
  const __m512i hi = _mm512_permutex2var_epi32(sums[2], pick4, sums[3]);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(y->bsums),
                      _mm512_cvtepi32_epi16(_mm512_inserti64x4(lo, _mm512_castsi512_si256(hi), 1)));
  y->d = 1 / iscale;
}

void PackQ8K(const float* x, int64_t n, void* dst) {
  auto* y = static_cast<BlockQ8K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i) QuantizeBlockQ8K(x + i * kQK_K, y + i);
}
void PackQ8_0(const float* x, int64_t n, void* dst) { QuantizeRowQ8_0Avx2(x, n, dst); }

template <typename Dec>
TypeKernels GenericKernels() {
  return {TiledDot<GenericQ8K<Dec>>, PackQ8K, kQK_K, static_cast<int>(sizeof(BlockQ8K))};
}

// Sum of the 16 bsums of a Q8_K block.
inline int32_t BlockSum(const BlockQ8K& q) {
  int32_t s = 0;
  for (int j = 0; j < 16; ++j) s += q.bsums[j];
  return s;
}

// ---- Shared by the tile kernels -----------------------------------------------------------------

// Keeps v in a register: GCC otherwise folds a vector used twice into both instructions as a
// memory operand, and the 512-bit load ports (2 per cycle) become the limit of the tile kernels.
inline void InRegister(__m512i& v) { __asm__("" : "+v"(v)); }

// out[r] (=|+=) Σ lanes of acc[r] for r < n_rows (<= 4): the four sums share one shuffle tree.
inline void StoreRowSums4(const __m512* acc, int n_rows, float* out, bool accumulate) {
  const __m512 zero = _mm512_setzero_ps();
  const __m512 a0 = acc[0], a1 = n_rows > 1 ? acc[1] : zero;
  const __m512 a2 = n_rows > 2 ? acc[2] : zero, a3 = n_rows > 3 ? acc[3] : zero;
  // 128-bit quarters: [a0.q0+q2, a0.q1+q3, a1.q0+q2, a1.q1+q3], the same for a2, a3.
  const __m512 s01 =
      _mm512_add_ps(_mm512_shuffle_f32x4(a0, a1, 0x44), _mm512_shuffle_f32x4(a0, a1, 0xEE));
  const __m512 s23 =
      _mm512_add_ps(_mm512_shuffle_f32x4(a2, a3, 0x44), _mm512_shuffle_f32x4(a2, a3, 0xEE));
  // Quarter r = four partial sums of row r.
  __m512 v =
      _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, 0x88), _mm512_shuffle_f32x4(s01, s23, 0xDD));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4E));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1));
  __m128 sums = _mm512_castps512_ps128(
      _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), v));
  const __mmask8 m = static_cast<__mmask8>((1u << n_rows) - 1);
  if (accumulate) sums = _mm_add_ps(sums, _mm_maskz_loadu_ps(m, out));
  _mm_mask_storeu_ps(out, m, sums);
}

inline void StoreRowSums(const __m512* acc, int n_rows, float* out, bool accumulate) {
  for (int r = 0; r < n_rows; r += 4)
    StoreRowSums4(acc + r, std::min(4, n_rows - r), out + r, accumulate);
}

inline void StoreSum(__m512 acc, float* out, bool accumulate) {
  const float s = _mm512_reduce_add_ps(acc);
  *out = accumulate ? *out + s : s;
}

// Runs Tokens<NT>(args, row, token) for every row and token of a multi-token tile, in pieces of
// 8, 4, 2 and 1 tokens.
template <typename K>
void ForTokenTiles(const TileArgs& a) {
  for (int r = 0; r < a.n_rows; ++r) {
    int t = 0;
    while (t < a.n_tok) {
      const int left = a.n_tok - t;
      if (left >= 8) {
        K::template Tokens<8>(a, r, t);
        t += 8;
      } else if (left >= 4) {
        K::template Tokens<4>(a, r, t);
        t += 4;
      } else if (left >= 2) {
        K::template Tokens<2>(a, r, t);
        t += 2;
      } else {
        K::template Tokens<1>(a, r, t);
        t += 1;
      }
    }
  }
}

// Single-token tiles go to Rows, the rest to ForTokenTiles. Rows takes the tile's rows one after
// the other (each row's bytes in memory order, each block's scale read with the block), so the
// hardware prefetcher sees one sequential stream; only call overheads and the final reductions
// (four rows per shuffle tree) are shared. Interleaving the rows block by block halves the
// activation loads and is ~25% faster with the weights in cache, but 10-30% slower when they
// stream from memory (measured on Zen 5, docs/PERF.md), as is computing the block scales of a row
// ahead of its blocks.
template <typename K>
void TernaryTile(const TileArgs& a) {
  if (a.n_tok != 1) return ForTokenTiles<K>(a);
  K::Rows(a);
}

// The activation block of token t (rows act_stride bytes apart) and its block scale.
template <typename Act>
inline const Act* ActBlock(const TileArgs& a, int t, int64_t i) {
  return reinterpret_cast<const Act*>(a.act + t * a.act_stride) + i;
}
inline float ActScale(const TileArgs& a, int t, int64_t i) {
  return reinterpret_cast<const float*>(reinterpret_cast<const uint8_t*>(a.act_scale) +
                                        t * a.act_stride)[i];
}

// ---- TQ2_0 -------------------------------------------------------------------------------------

struct alignas(64) ActTq2 {
  int8_t q[4][64];  // q[l][32h + m] = element 128h + 32l + m
  int32_t off[16];  // lane 0 = -Σ q over the block (the codes carry +1), lanes 1..15 = 0
};
static_assert(sizeof(ActTq2) == 320);

void PackTq2(const float* x, int64_t n, void* dst) {
  auto* out = static_cast<ActTq2*>(dst);
  float* scales = reinterpret_cast<float*>(out + n / kQK_K);
  BlockQ8K q;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    QuantizeBlockQ8K(x + i * kQK_K, &q);
    ActTq2& o = out[i];
    for (int h = 0; h < 2; ++h) {
      for (int l = 0; l < 4; ++l) std::memcpy(&o.q[l][32 * h], q.qs + 128 * h + 32 * l, 32);
    }
    std::memset(o.off, 0, sizeof(o.off));
    o.off[0] = -BlockSum(q);
    scales[i] = q.d;
  }
}

struct Tq2 {
  static constexpr int kBlockBytes = 66;

  // One token, the tile's rows: Σ_l vpdpbusd(code plane l, activation plane l) from the offset
  // lane.
  static void Rows(const TileArgs& a) {
    const __m512i m3 = _mm512_set1_epi8(3);
    const ActTq2* act = reinterpret_cast<const ActTq2*>(a.act);
    __m512 acc[kMaxRowTile];
    for (int r = 0; r < a.n_rows; ++r) {
      const uint8_t* w = a.w + r * a.w_stride;
      __m512 acc0 = _mm512_setzero_ps();
      for (int64_t i = 0; i < a.n_blocks; ++i) {
        const uint8_t* p = w + i * kBlockBytes;
        const ActTq2& x = act[i];
        __m512i q = Load512(p);
        InRegister(q);  // else each plane re-loads the block, split across two cache lines
        __m512i s = _mm512_dpbusd_epi32(_mm512_load_si512(x.off), _mm512_and_si512(q, m3),
                                        _mm512_load_si512(x.q[0]));
        s = _mm512_dpbusd_epi32(s, _mm512_and_si512(_mm512_srli_epi16(q, 2), m3),
                                _mm512_load_si512(x.q[1]));
        s = _mm512_dpbusd_epi32(s, _mm512_and_si512(_mm512_srli_epi16(q, 4), m3),
                                _mm512_load_si512(x.q[2]));
        s = _mm512_dpbusd_epi32(s, _mm512_and_si512(_mm512_srli_epi16(q, 6), m3),
                                _mm512_load_si512(x.q[3]));
        acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s),
                               _mm512_set1_ps(LoadFp16(p + 64) * a.act_scale[i]), acc0);
      }
      acc[r] = acc0;
    }
    StoreRowSums(acc, a.n_rows, a.out, a.accumulate);
  }

  // One row, NT tokens: the codes decoded once per block.
  template <int NT>
  static void Tokens(const TileArgs& a, int r, int t0) {
    const __m512i m3 = _mm512_set1_epi8(3);
    const uint8_t* w = a.w + r * a.w_stride;
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < a.n_blocks; ++i) {
      const uint8_t* b = w + kBlockBytes * i;
      __m512i q = Load512(b);
      InRegister(q);
      const __m512i u0 = _mm512_and_si512(q, m3);
      const __m512i u1 = _mm512_and_si512(_mm512_srli_epi16(q, 2), m3);
      const __m512i u2 = _mm512_and_si512(_mm512_srli_epi16(q, 4), m3);
      const __m512i u3 = _mm512_and_si512(_mm512_srli_epi16(q, 6), m3);
      const float dw = LoadFp16(b + 64);
      for (int t = 0; t < NT; ++t) {
        const ActTq2* x = ActBlock<ActTq2>(a, t0 + t, i);
        __m512i s0 = _mm512_dpbusd_epi32(_mm512_load_si512(x->off), u0, Load512(x->q[0]));
        __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u1, Load512(x->q[1]));
        s0 = _mm512_dpbusd_epi32(s0, u2, Load512(x->q[2]));
        s1 = _mm512_dpbusd_epi32(s1, u3, Load512(x->q[3]));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)),
                                 _mm512_set1_ps(dw * ActScale(a, t0 + t, i)), acc[t]);
      }
    }
    for (int t = 0; t < NT; ++t)
      StoreSum(acc[t], a.out + (t0 + t) * a.out_stride + r, a.accumulate);
  }
};

// ---- TQ1_0 -------------------------------------------------------------------------------------

struct alignas(64) ActTq1 {
  // q[n][m] (m < 32) = element 32n + m; q[n][32 + m] (m < 16) = element 160 + 16n + m;
  // q[n][48 + j] (j < 4, n < 4) = element 240 + 4n + j; every other byte 0.
  int8_t q[5][64];
  int32_t off[16];  // lane 0 = -128 Σ q over the block, lanes 1..15 = 0 (see Tq1::Rows)
};
static_assert(sizeof(ActTq1) == 384);

void PackTq1(const float* x, int64_t n, void* dst) {
  auto* out = static_cast<ActTq1*>(dst);
  float* scales = reinterpret_cast<float*>(out + n / kQK_K);
  BlockQ8K q;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    QuantizeBlockQ8K(x + i * kQK_K, &q);
    ActTq1& o = out[i];
    // Plane nd = 32 bytes at 32·nd, 16 at 160 + 16·nd, 4 at 240 + 4·nd (nd < 4), zeros.
    for (int nd = 0; nd < 5; ++nd) {
      const __m128i tail = nd < 4 ? _mm_cvtsi32_si128(static_cast<int>(LoadU32(
                                        reinterpret_cast<const uint8_t*>(q.qs) + 240 + 4 * nd)))
                                  : _mm_setzero_si128();
      const __m256i hi =
          _mm256_inserti128_si256(_mm256_castsi128_si256(Load128(q.qs + 160 + 16 * nd)), tail, 1);
      _mm512_store_si512(
          o.q[nd], _mm512_inserti64x4(_mm512_castsi256_si512(Load256(q.qs + 32 * nd)), hi, 1));
    }
    _mm512_store_si512(o.off, _mm512_maskz_set1_epi32(1, -128 * BlockSum(q)));
    scales[i] = q.d;
  }
}

// kTq1Digits[n][b] = base-3 digit n of packed byte b: ((b * 3^n mod 256) * 3) >> 8.
constexpr std::array<std::array<uint8_t, 256>, 5> MakeTq1Digits() {
  std::array<std::array<uint8_t, 256>, 5> t{};
  for (int n = 0; n < 5; ++n) {
    for (int b = 0; b < 256; ++b) {
      t[n][b] = static_cast<uint8_t>((static_cast<uint8_t>(b * tables::kPow3Tq[n]) * 3) >> 8);
    }
  }
  return t;
}
alignas(64) constexpr std::array<std::array<uint8_t, 256>, 5> kTq1Digits = MakeTq1Digits();

struct Tq1 {
  static constexpr int kBlockBytes = 54;

  // One token, the tile's rows, without digit tables. With y_n = b·3^n mod 256 (so y_{n+1} = 3·y_n
  // mod 256, two byte adds), digit n of b is (3·y_n - y_{n+1}) / 256 exactly. Hence per block
  //   Σ (digit - 1)·q = (3·Σ_n y_n·q_n - Σ_n y_{n+1}·q_n) / 256 - Σ q,
  // two vpdpbusd chains over the raw bytes (unsigned y, signed q): 10 vpdpbusd + 10 vpaddb per
  // block instead of 10 vpermi2b + 5 blends + 5 vpdpbusd. Both chains start from the offset lane
  // -128·Σq, which contributes (3 - 1)·(-128·Σq)/256 = -Σq. The chains are scaled and summed in
  // float, each into its own accumulator (3/256 and -1/256 applied once per row), which costs
  // fewer vector ops than combining them as integers. The 64-byte loads read 10 bytes past the
  // block (lanes 13..15, whose activation bytes are 0), except at the end of the matrix.
  static void Rows(const TileArgs& a) {
    constexpr __mmask64 kBlockMask = (__mmask64{1} << 54) - 1;
    const ActTq1* act = reinterpret_cast<const ActTq1*>(a.act);
    __m512 acc[kMaxRowTile];
    for (int r = 0; r < a.n_rows; ++r) {
      const uint8_t* w = a.w + r * a.w_stride;
      __m512 acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps();
      for (int64_t i = 0; i < a.n_blocks; ++i) {
        const uint8_t* p = w + i * kBlockBytes;
        const ActTq1& x = act[i];
        __m512i y = p + 64 <= a.w_end ? Load512(p) : _mm512_maskz_loadu_epi8(kBlockMask, p);
        __m512i s1 = _mm512_load_si512(x.off), s2 = s1;
        for (int n = 0; n < 5; ++n) {
          __m512i av = _mm512_load_si512(x.q[n]);
          InRegister(av);
          s1 = _mm512_dpbusd_epi32(s1, y, av);
          y = _mm512_add_epi8(_mm512_add_epi8(y, y), y);
          s2 = _mm512_dpbusd_epi32(s2, y, av);
        }
        const __m512 ds = _mm512_set1_ps(LoadFp16(p + 52) * a.act_scale[i]);
        acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s1), ds, acc1);
        acc2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s2), ds, acc2);
      }
      acc[r] = _mm512_fmadd_ps(acc1, _mm512_set1_ps(3.0f / 256),
                               _mm512_mul_ps(acc2, _mm512_set1_ps(-1.0f / 256)));
    }
    StoreRowSums(acc, a.n_rows, a.out, a.accumulate);
  }

  // One row, NT tokens: the 52 packed bytes are turned into their five base-3 digits once per
  // block by 256-entry byte tables (two vpermi2b + a blend per digit), shared by the tokens.
  template <int NT>
  static void Tokens(const TileArgs& a, int r, int t0) {
    constexpr __mmask64 kCodeBytes = (__mmask64{1} << 52) - 1;  // qs[48] + qh[4]
    const uint8_t* w = a.w + r * a.w_stride;
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < a.n_blocks; ++i) {
      const uint8_t* b = w + kBlockBytes * i;
      const __m512i q = _mm512_maskz_loadu_epi8(kCodeBytes, b);
      const __mmask64 top = _mm512_movepi8_mask(q);
      __m512i u[5];
      for (int nd = 0; nd < 5; ++nd) {
        const uint8_t* tab = kTq1Digits[nd].data();
        const __m512i lo = _mm512_permutex2var_epi8(Load512(tab), q, Load512(tab + 64));
        const __m512i hi = _mm512_permutex2var_epi8(Load512(tab + 128), q, Load512(tab + 192));
        u[nd] = _mm512_mask_blend_epi8(top, lo, hi);
      }
      const float dw = LoadFp16(b + 52);
      for (int t = 0; t < NT; ++t) {
        const ActTq1* x = ActBlock<ActTq1>(a, t0 + t, i);
        // -Σq in lane 0: the digits carry +1.
        __m512i s0 = _mm512_dpbusd_epi32(_mm512_srai_epi32(_mm512_load_si512(x->off), 7), u[0],
                                         Load512(x->q[0]));
        __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[1], Load512(x->q[1]));
        s0 = _mm512_dpbusd_epi32(s0, u[2], Load512(x->q[2]));
        s1 = _mm512_dpbusd_epi32(s1, u[3], Load512(x->q[3]));
        s0 = _mm512_dpbusd_epi32(s0, u[4], Load512(x->q[4]));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)),
                                 _mm512_set1_ps(dw * ActScale(a, t0 + t, i)), acc[t]);
      }
    }
    for (int t = 0; t < NT; ++t)
      StoreSum(acc[t], a.out + (t0 + t) * a.out_stride + r, a.accumulate);
  }
};

// ---- IQ1_S quads (experts/matmul_iq1s_quads.h)
// ---------------------------------------------------

struct alignas(64) ActQuads {
  int8_t q[4][64];  // q[n][p] = element 4p + n: digit plane n of the fields
  int32_t off[16];  // lane m: -7·Σ q over elements 16m..16m+15 (the codes read as 8u' - 7)
};
static_assert(sizeof(ActQuads) == 320);

void PackQuads(const float* x, int64_t n, void* dst) {
  auto* out = static_cast<ActQuads*>(dst);
  float* scales = reinterpret_cast<float*>(out + n / kQK_K);
  // Within each 64-byte quarter: byte 16n + p' <- byte 4p' + n (the four planes of 16 fields).
  alignas(64) uint8_t idx[64];
  for (int n = 0; n < 4; ++n) {
    for (int p = 0; p < 16; ++p) idx[16 * n + p] = static_cast<uint8_t>(4 * p + n);
  }
  const __m512i gather = _mm512_load_si512(idx);
  BlockQ8K q;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    QuantizeBlockQ8K(x + i * kQK_K, &q);
    ActQuads& o = out[i];
    __m512i v[4];
    for (int c = 0; c < 4; ++c) v[c] = _mm512_permutexvar_epi8(gather, Load512(q.qs + 64 * c));
    // 4 x 4 transpose of 128-bit quarters: plane n = quarter n of v[0..3].
    const __m512i t0 = _mm512_shuffle_i64x2(v[0], v[1], 0x44),
                  t1 = _mm512_shuffle_i64x2(v[0], v[1], 0xEE);
    const __m512i t2 = _mm512_shuffle_i64x2(v[2], v[3], 0x44),
                  t3 = _mm512_shuffle_i64x2(v[2], v[3], 0xEE);
    _mm512_store_si512(o.q[0], _mm512_shuffle_i64x2(t0, t2, 0x88));
    _mm512_store_si512(o.q[1], _mm512_shuffle_i64x2(t0, t2, 0xDD));
    _mm512_store_si512(o.q[2], _mm512_shuffle_i64x2(t1, t3, 0x88));
    _mm512_store_si512(o.q[3], _mm512_shuffle_i64x2(t1, t3, 0xDD));
    _mm512_store_si512(
        o.off, _mm512_mullo_epi32(_mm512_cvtepi16_epi32(Load256(q.bsums)), _mm512_set1_epi32(-7)));
    scales[i] = q.d * 0.125f;  // the kernels' sums carry a factor 8 (exact: a power of two)
  }
}

// 8 × digit n (0..3) of a 7-bit field v < 81 (0 above): 128-entry tables for vpermi2b.
constexpr std::array<std::array<uint8_t, 128>, 4> MakeQuadDigits() {
  std::array<std::array<uint8_t, 128>, 4> t{};
  for (int n = 0; n < 4; ++n) {
    for (int v = 0; v < 81; ++v) {
      int x = v;
      for (int k = 0; k < n; ++k) x /= 3;
      t[n][v] = static_cast<uint8_t>(8 * (x % 3));
    }
  }
  return t;
}
alignas(64) constexpr std::array<std::array<uint8_t, 128>, 4> kQuadDigits = MakeQuadDigits();

// Multiplier of a sub-block's meta nibble (scale s | delta-sign << 3): 2s + 1, negated with the
// sign bit (the sub-block's codes are stored negated, matmul_iq1s_quads.h).
constexpr std::array<int32_t, 16> MakeQuadScales() {
  std::array<int32_t, 16> t{};
  for (int v = 0; v < 16; ++v) t[v] = (v & 8 ? -1 : 1) * (2 * (v & 7) + 1);
  return t;
}
alignas(64) constexpr std::array<int32_t, 16> kQuadScales = MakeQuadScales();

struct Quads {
  static constexpr int kBlockBytes = 64;
  // vpmultishiftqb selectors: byte j of qword k <- bits FieldShift(k, j) + 0..7 (field j plus one
  // stray bit, which vpermi2b ignores: it reads 7 index bits).
  static __m512i FieldSelect() {
    constexpr long long kPlain = 0x312A231C150E0700LL, kQword1 = 0x39322B241D160F08LL;
    static_assert(iq1s_quads::FieldShift(1, 0) == 8 && iq1s_quads::FieldShift(0, 1) == 7);
    return _mm512_set_epi64(kPlain, kPlain, kPlain, kPlain, kPlain, kPlain, kQword1, kPlain);
  }

  // Per 4-byte lane m (sub-block k = m / 2): the multiplier of kQuadScales for the sub-block's
  // nibble (qword MetaQword(k), bit MetaShift(k)): the high dword of that qword moved to the lane
  // and shifted so that the nibble is in bits 0..3, the index bits vpermd reads.
  static __m512i ScaleWords(__m512i blk, __m512i table) {
    static_assert(iq1s_quads::MetaQword(0) == 2 && iq1s_quads::MetaQword(1) == 3 &&
                  iq1s_quads::MetaShift(0) == 60 && iq1s_quads::MetaShift(2) == 56);
    const __m512i dword = _mm512_setr_epi32(5, 5, 7, 7, 5, 5, 7, 7, 9, 9, 11, 11, 13, 13, 15, 15);
    const __m512i shift =
        _mm512_setr_epi32(28, 28, 28, 28, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24);
    return _mm512_permutexvar_epi32(_mm512_srlv_epi32(_mm512_permutexvar_epi32(dword, blk), shift),
                                    table);
  }

  // One token, the tile's rows. Per block: 64 fields -> 4 planes of 8u' (vpmultishiftqb, 4
  // vpermi2b), one vpdpbusd chain over the planes from the offset lanes -7·Σq: lane m = Σ (8u' -
  // 7)·q = 8·Σ (g' + 1/8)·q over elements 16m..16m+15 (|.| < 2^16), then one vpmulld by ±(2s+1).
  // The factor 8 is taken out in the activation scale.
  static void Rows(const TileArgs& a) {
    const __m512i select = FieldSelect();
    const __m512i scale_table = _mm512_load_si512(kQuadScales.data());
    __m512i tlo[4], thi[4];
    for (int n = 0; n < 4; ++n) {
      tlo[n] = _mm512_load_si512(kQuadDigits[n].data());
      thi[n] = _mm512_load_si512(kQuadDigits[n].data() + 64);
    }
    const ActQuads* act = reinterpret_cast<const ActQuads*>(a.act);
    __m512 acc[kMaxRowTile];
    for (int r = 0; r < a.n_rows; ++r) {
      const uint8_t* w = a.w + r * a.w_stride;
      __m512 acc0 = _mm512_setzero_ps();
      for (int64_t i = 0; i < a.n_blocks; ++i) {
        const uint8_t* p = w + i * kBlockBytes;
        const ActQuads& x = act[i];
        __m512i blk = Load512(p);
        InRegister(blk);
        const __m512i f = _mm512_multishift_epi64_epi8(select, blk);
        __m512i e = _mm512_dpbusd_epi32(_mm512_load_si512(x.off),
                                        _mm512_permutex2var_epi8(tlo[0], f, thi[0]),
                                        _mm512_load_si512(x.q[0]));
        e = _mm512_dpbusd_epi32(e, _mm512_permutex2var_epi8(tlo[1], f, thi[1]),
                                _mm512_load_si512(x.q[1]));
        e = _mm512_dpbusd_epi32(e, _mm512_permutex2var_epi8(tlo[2], f, thi[2]),
                                _mm512_load_si512(x.q[2]));
        e = _mm512_dpbusd_epi32(e, _mm512_permutex2var_epi8(tlo[3], f, thi[3]),
                                _mm512_load_si512(x.q[3]));
        const __m512i sum = _mm512_mullo_epi32(e, ScaleWords(blk, scale_table));
        // d·(activation scale / 8): vcvtph2ps and vmulss straight from memory (the 8 bytes from d
        // lie inside the block), one broadcast.
        const __m128 dv = _mm_cvtph_ps(
            _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + iq1s_quads::kDOffset)));
        acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum),
                               _mm512_broadcastss_ps(_mm_mul_ss(dv, _mm_load_ss(a.act_scale + i))),
                               acc0);
      }
      acc[r] = acc0;
    }
    StoreRowSums(acc, a.n_rows, a.out, a.accumulate);
  }

  // One row, NT tokens: planes and scale words decoded once per block.
  template <int NT>
  static void Tokens(const TileArgs& a, int r, int t0) {
    const __m512i select = FieldSelect();
    const __m512i scale_table = _mm512_load_si512(kQuadScales.data());
    const uint8_t* w = a.w + r * a.w_stride;
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < a.n_blocks; ++i) {
      const uint8_t* b = w + kBlockBytes * i;
      __m512i blk = Load512(b);
      InRegister(blk);
      const __m512i f = _mm512_multishift_epi64_epi8(select, blk);
      __m512i u[4];
      for (int n = 0; n < 4; ++n) {
        u[n] = _mm512_permutex2var_epi8(Load512(kQuadDigits[n].data()), f,
                                        Load512(kQuadDigits[n].data() + 64));
      }
      const __m512i sw = ScaleWords(blk, scale_table);
      const float dw = LoadFp16(b + iq1s_quads::kDOffset);
      for (int t = 0; t < NT; ++t) {
        const ActQuads* x = ActBlock<ActQuads>(a, t0 + t, i);
        __m512i e = _mm512_dpbusd_epi32(Load512(x->off), u[0], Load512(x->q[0]));
        for (int n = 1; n < 4; ++n) e = _mm512_dpbusd_epi32(e, u[n], Load512(x->q[n]));
        const __m512i s = _mm512_mullo_epi32(e, sw);
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(dw * ActScale(a, t0 + t, i)),
                                 acc[t]);
      }
    }
    for (int t = 0; t < NT; ++t)
      StoreSum(acc[t], a.out + (t0 + t) * a.out_stride + r, a.accumulate);
  }
};

// ---- IQ1_S, IQ1_M, IQ2_XXS: grid lookups -----------------------------------------------------

// Eight 8-byte grid entries as one vector: one merge-masked broadcast load per entry (cheaper
// than vmovq/vpinsrq/vinserti assembly, and than vpgatherqq, on the CPUs measured; docs/PERF.md).
template <typename Index>
inline __m512i Lookup8(const uint64_t* grid, const Index* idx) {
  __m512i v = _mm512_set1_epi64(static_cast<long long>(grid[idx[0]]));
  for (int l = 1; l < 8; ++l) {
    v = _mm512_mask_set1_epi64(v, static_cast<__mmask8>(1u << l),
                               static_cast<long long>(grid[idx[l]]));
  }
  return v;
}

// The 11-bit grid indices of IQ1_S sub-blocks 2c and 2c + 1 (formats.md §2.9): pdep spreads the
// four low bytes and the four 3-bit high parts into four 16-bit fields at once.
inline void Iq1sIndices(const uint8_t* b, int c, uint32_t* idx) {
  for (int s = 0; s < 2; ++s) {
    const int ib = 2 * c + s;
    const uint64_t x = _pdep_u64(LoadU32(b + 2 + 4 * ib), 0x00FF00FF00FF00FFULL) |
                       _pdep_u64(LoadU16(b + 34 + 2 * ib), 0x0700070007000700ULL);
    for (int l = 0; l < 4; ++l) idx[4 * s + l] = static_cast<uint16_t>(x >> (16 * l));
  }
}

// The same for IQ1_M (formats.md §2.10): the high parts are nibbles of qh whose top bit (the
// delta sign) is masked off.
inline void Iq1mIndices(const uint8_t* b, int c, uint32_t* idx) {
  for (int s = 0; s < 2; ++s) {
    const int ib = 2 * c + s;
    const uint64_t x =
        _pdep_u64(LoadU32(b + 4 * ib), 0x00FF00FF00FF00FFULL) |
        (_pdep_u64(LoadU16(b + 32 + 2 * ib), 0x0F000F000F000F00ULL) & 0x0700070007000700ULL);
    for (int l = 0; l < 4; ++l) idx[4 * s + l] = static_cast<uint16_t>(x >> (16 * l));
  }
}

// int32 lanes of vpdpbusd over 64 elements hold 4 elements each. Lane pattern "sub-block of 32
// per 8 lanes" (IQ1_S) and "sub-block of 16 per 4 lanes" (IQ1_M) for chunk c.
inline __m512i Spread32(int c) {
  return _mm512_setr_epi32(2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c + 1,
                           2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1,
                           2 * c + 1);
}
inline __m512i Spread16(int c) {
  const int t = 4 * c;
  return _mm512_setr_epi32(t, t, t, t, t + 1, t + 1, t + 1, t + 1, t + 2, t + 2, t + 2, t + 2,
                           t + 3, t + 3, t + 3, t + 3);
}

// IQ1_S: codes u = (g + 1)(2s + 1) <= 30, pre-multiplied by the sub-block scale so that one
// vpdpbusd chain per token covers the whole block. Per sub-block Σ(g + δ)q = Σ(g + 1)q − (1 − δ)Σq
// with δ = ±1/8, so 8·dot = 8·Σ u q − Σ (2s + 1)(8 − 8δ)·bsums, scaled by d / 8.
struct Iq1sDot {
  template <int NT>
  static void Run(int64_t n, const uint8_t* w, const uint8_t* act, int64_t stride, float* out) {
    // Word lane m of chunk c (elements 2m, 2m + 1) belongs to sub-block 2c + m / 16.
    __m512i pick[4];
    for (int c = 0; c < 4; ++c) {
      alignas(64) uint16_t q[32];
      for (int m = 0; m < 32; ++m) q[m] = static_cast<uint16_t>(2 * c + m / 16);
      pick[c] = _mm512_load_si512(q);
    }
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / kQK_K; ++i) {
      const uint8_t* b = w + 50 * i;
      const __m128i qh = Load128(b + 34);
      const __m128i ls = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(qh, 11), _mm_set1_epi16(14)),
                                      _mm_set1_epi16(1));
      const __m512i lsz = _mm512_castsi128_si512(ls);
      __m512i u[4];
      for (int c = 0; c < 4; ++c) {
        uint32_t idx[8];
        Iq1sIndices(b, c, idx);
        // Byte products in 16-bit lanes: (g + 1) * ls <= 30 never carries into the next byte.
        u[c] = _mm512_mullo_epi16(Lookup8(kIq1sGridPlus1.data(), idx),
                                  _mm512_permutexvar_epi16(pick[c], lsz));
      }
      const __m256i cdelta = DupPairs16(_mm_mullo_epi16(
          ls, _mm_add_epi16(_mm_set1_epi16(7), _mm_slli_epi16(_mm_srli_epi16(qh, 15), 1))));
      const float dw = LoadFp16(b) * 0.125f;
      for (int t = 0; t < NT; ++t) {
        const BlockQ8K* a = reinterpret_cast<const BlockQ8K*>(act + t * stride) + i;
        __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[0], Load512(a->qs));
        for (int c = 1; c < 4; ++c) dot = _mm512_dpbusd_epi32(dot, u[c], Load512(a->qs + 64 * c));
        const __m512i s =
            _mm512_sub_epi32(_mm512_slli_epi32(dot, 3),
                             _mm512_zextsi256_si512(_mm256_madd_epi16(Load256(a->bsums), cdelta)));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(dw * a->d), acc[t]);
      }
    }
    for (int t = 0; t < NT; ++t) out[t] = _mm512_reduce_add_ps(acc[t]);
  }
};

// IQ1_M: u = 8(g + 1) + 2·[δ = +1/8] = 8g + 9 + 8δ in 0..18; Σ(g + δ)q = (Σ u q − 9 Σ q) / 8.
// Sub-blocks of 16 with scale 2s + 1: 4 vpdpbusd lanes each.
struct Iq1mDot {
  template <int NT>
  static void Run(int64_t n, const uint8_t* w, const uint8_t* act, int64_t stride, float* out) {
    // Word lane j = group j: its qh byte is j / 2; even groups use the low nibble, odd the high.
    alignas(64) static constexpr uint16_t kShiftDelta[32] = {3, 7, 3, 7, 3, 7, 3, 7, 3, 7, 3,
                                                             7, 3, 7, 3, 7, 3, 7, 3, 7, 3, 7,
                                                             3, 7, 3, 7, 3, 7, 3, 7, 3, 7};
    const __m512i shift_delta = _mm512_load_si512(kShiftDelta);
    __m512i halve, pick[4], bytes8[4];
    {
      alignas(64) uint16_t h[32];
      for (int j = 0; j < 32; ++j) h[j] = static_cast<uint16_t>(j / 2);
      halve = _mm512_load_si512(h);
      for (int c = 0; c < 4; ++c) {
        alignas(64) uint8_t p[64];
        for (int l = 0; l < 64; ++l) p[l] = static_cast<uint8_t>(8 * c + l / 8);
        bytes8[c] = _mm512_load_si512(p);
        pick[c] = Spread16(c);
      }
    }
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / kQK_K; ++i) {
      const uint8_t* b = w + 56 * i;
      const __m512i qh = _mm512_permutexvar_epi16(
          halve, _mm512_cvtepu8_epi16(_mm256_castsi128_si256(Load128(b + 32))));
      // 2 where the group's delta bit is clear (δ = +1/8), else 0; one byte per group.
      const __m256i off = _mm512_cvtepi16_epi8(_mm512_andnot_si512(
          _mm512_slli_epi16(_mm512_srlv_epi16(qh, shift_delta), 1), _mm512_set1_epi16(2)));
      const __m512i offz = _mm512_castsi256_si512(off);
      __m512i u[4];
      for (int c = 0; c < 4; ++c) {
        uint32_t idx[8];
        Iq1mIndices(b, c, idx);
        const __m512i g1 = Lookup8(kIq1sGridPlus1.data(), idx);
        // (g + 1) <= 2, so the 16-bit shift cannot carry into the neighbouring byte.
        u[c] = _mm512_add_epi8(_mm512_slli_epi16(g1, 3), _mm512_permutexvar_epi8(bytes8[c], offz));
      }
      const uint16_t sc0 = LoadU16(b + 48), sc1 = LoadU16(b + 50), sc2 = LoadU16(b + 52),
                     sc3 = LoadU16(b + 54);
      const uint16_t d_bits = static_cast<uint16_t>((sc0 >> 12) | ((sc1 >> 8) & 0x00F0) |
                                                    ((sc2 >> 4) & 0x0F00) | (sc3 & 0xF000));
      // Word t = scale word t / 4, its bits 3(t % 4).. moved to the top and shifted down.
      const __m256i words =
          _mm256_shuffle_epi8(_mm256_set1_epi64x(static_cast<long long>(LoadU32(b + 48)) |
                                                 (static_cast<long long>(LoadU32(b + 52)) << 32)),
                              _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 4, 5,
                                               4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7));
      const __m256i s3 = _mm256_srli_epi16(
          _mm256_mullo_epi16(
              words, _mm256_setr_epi16(1 << 13, 1 << 10, 1 << 7, 1 << 4, 1 << 13, 1 << 10, 1 << 7,
                                       1 << 4, 1 << 13, 1 << 10, 1 << 7, 1 << 4, 1 << 13, 1 << 10,
                                       1 << 7, 1 << 4)),
          13);
      const __m256i ls = _mm256_or_si256(_mm256_slli_epi16(s3, 1), _mm256_set1_epi16(1));
      const __m256i msc = _mm256_mullo_epi16(ls, _mm256_set1_epi16(9));
      const __m512i ls32 = _mm512_cvtepu16_epi32(ls);
      __m512i scale[4];
      for (int c = 0; c < 4; ++c) scale[c] = _mm512_permutexvar_epi32(pick[c], ls32);
      const float dw = _cvtsh_ss(d_bits) * 0.125f;
      for (int t = 0; t < NT; ++t) {
        const BlockQ8K* a = reinterpret_cast<const BlockQ8K*>(act + t * stride) + i;
        // |lane| <= 4 * 18 * 127 fits the low 16 bits.
        __m512i s =
            _mm512_sub_epi32(_mm512_setzero_si512(),
                             _mm512_zextsi256_si512(_mm256_madd_epi16(Load256(a->bsums), msc)));
        for (int c = 0; c < 4; ++c) {
          s = _mm512_dpwssd_epi32(
              s, _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[c], Load512(a->qs + 64 * c)),
              scale[c]);
        }
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(dw * a->d), acc[t]);
      }
    }
    for (int t = 0; t < NT; ++t) out[t] = _mm512_reduce_add_ps(acc[t]);
  }
};

// IQ2_XXS: grid values g in {8, 25, 43} with signs; u = ±g + 43 in 0..86, so
// Σ(±g)q = Σ u q − 43 Σ q. vpmaddubsw pairs (<= 2 * 86 * 127) then vpdpwssd with the 32-element
// scale 2ls + 1; the result is scaled by d / 8.
struct Iq2xxsDot {
  template <int NT>
  static void Run(int64_t n, const uint8_t* w, const uint8_t* act, int64_t stride, float* out) {
    // Each 8-byte (a0, a1) pair is one qword; multishift picks the four 7-bit sign fields of a1
    // (bits 32 + 7l) into bytes 0..3 of the qword.
    const __m512i sign_fields = _mm512_set1_epi64(0x00000000352E2720LL);
    const __m512i sign_tab_lo = Load512(tables::kSignsIq2xs);
    const __m512i sign_tab_hi = Load512(tables::kSignsIq2xs + 64);
    const __m512i bit_select = _mm512_set1_epi64(static_cast<long long>(0x8040201008040201ULL));
    const __m512i offset = _mm512_set1_epi8(43);
    __m512i spread[4], pick[4];
    for (int c = 0; c < 4; ++c) {
      alignas(64) uint8_t p[64];
      alignas(64) uint16_t q[32];
      // Byte lane 8g + k of chunk c belongs to group g (0..7): sub-block 2c + g / 4, field g % 4.
      for (int l = 0; l < 64; ++l) p[l] = static_cast<uint8_t>(8 * (2 * c + l / 32) + (l / 8) % 4);
      // Word lane m (elements 2m, 2m+1) of chunk c: sub-block 2c + m / 16, whose scale is in
      // word 4 of its qword.
      for (int m = 0; m < 32; ++m) q[m] = static_cast<uint16_t>(4 * (2 * c + m / 16));
      spread[c] = _mm512_load_si512(p);
      pick[c] = _mm512_load_si512(q);
    }
    alignas(32) uint16_t mpick_words[16];
    for (int j = 0; j < 16; ++j) mpick_words[j] = static_cast<uint16_t>(4 * (j / 2));
    const __m512i mpick = _mm512_castsi256_si512(Load256(mpick_words));
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / kQK_K; ++i) {
      const uint8_t* b = w + 66 * i;
      const __m512i q = Load512(b + 2);
      const __m512i signs = _mm512_permutex2var_epi8(
          sign_tab_lo, _mm512_multishift_epi64_epi8(sign_fields, q), sign_tab_hi);
      const __m512i ls =
          _mm512_or_si512(_mm512_slli_epi64(_mm512_srli_epi64(q, 60), 1), _mm512_set1_epi64(1));
      __m512i u[4], scale[4];
      for (int c = 0; c < 4; ++c) {
        // Grid bytes of groups 2c·4 .. : a0 of sub-blocks 2c and 2c + 1.
        alignas(8) uint8_t gi[8];
        std::memcpy(gi, b + 2 + 16 * c, 4);
        std::memcpy(gi + 4, b + 2 + 16 * c + 8, 4);
        const __m512i g = Lookup8(tables::kIq2xxsGrid, gi);
        const __mmask64 neg =
            _mm512_test_epi8_mask(_mm512_permutexvar_epi8(spread[c], signs), bit_select);
        u[c] = _mm512_add_epi8(_mm512_mask_sub_epi8(g, neg, _mm512_setzero_si512(), g), offset);
        scale[c] = _mm512_permutexvar_epi16(pick[c], ls);
      }
      const __m256i msc = _mm256_mullo_epi16(
          _mm512_castsi512_si256(_mm512_permutexvar_epi16(mpick, ls)), _mm256_set1_epi16(43));
      const float dw = LoadFp16(b) * 0.125f;
      for (int t = 0; t < NT; ++t) {
        const BlockQ8K* a = reinterpret_cast<const BlockQ8K*>(act + t * stride) + i;
        __m512i s =
            _mm512_sub_epi32(_mm512_setzero_si512(),
                             _mm512_zextsi256_si512(_mm256_madd_epi16(Load256(a->bsums), msc)));
        for (int c = 0; c < 4; ++c) {
          s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(u[c], Load512(a->qs + 64 * c)), scale[c]);
        }
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(dw * a->d), acc[t]);
      }
    }
    for (int t = 0; t < NT; ++t) out[t] = _mm512_reduce_add_ps(acc[t]);
  }
};

// ---- Float weights -----------------------------------------------------------------------------

inline __m512 LoadF32x16(const uint8_t* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 LoadF16x16(const uint8_t* p, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}
inline __m512 LoadBf16x16(const uint8_t* p, __mmask16 m) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

template <__m512 (*kLoad16)(const uint8_t*, __mmask16), int kElemBytes>
struct FloatDot {
  template <int NT>
  static void Run(int64_t n, const uint8_t* w, const uint8_t* act, int64_t stride, float* out) {
    constexpr int U = NT == 1 ? 4 : (NT == 2 ? 2 : 1);  // independent FMA chains per token
    __m512 acc[NT][U];
    for (int t = 0; t < NT; ++t) {
      for (int u = 0; u < U; ++u) acc[t][u] = _mm512_setzero_ps();
    }
    int64_t i = 0;
    for (; i + 16 * U <= n; i += 16 * U) {
      for (int u = 0; u < U; ++u) {
        const __m512 wv = kLoad16(w + (i + 16 * u) * kElemBytes, 0xFFFF);
        for (int t = 0; t < NT; ++t) {
          const float* x = reinterpret_cast<const float*>(act + t * stride);
          acc[t][u] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + i + 16 * u), acc[t][u]);
        }
      }
    }
    for (; i < n; i += 16) {
      const __mmask16 m = n - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (n - i)) - 1);
      const __m512 wv = kLoad16(w + i * kElemBytes, m);
      for (int t = 0; t < NT; ++t) {
        const float* x = reinterpret_cast<const float*>(act + t * stride);
        acc[t][0] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + i), acc[t][0]);
      }
    }
    for (int t = 0; t < NT; ++t) {
      for (int u = 1; u < U; ++u) acc[t][0] = _mm512_add_ps(acc[t][0], acc[t][u]);
      out[t] = _mm512_reduce_add_ps(acc[t][0]);
    }
  }
};

}  // namespace
}  // namespace avx512

void FillAvx512Kernels(KernelTable* table) {
  using namespace avx512;  // NOLINT: the kernels of this file
  table->isa = MatmulIsa::kAvx512;
  table->For(GgmlType::kF32).dot = TiledDot<FloatDot<LoadF32x16, 4>>;
  table->For(GgmlType::kF16).dot = TiledDot<FloatDot<LoadF16x16, 2>>;
  table->For(GgmlType::kBF16).dot = TiledDot<FloatDot<LoadBf16x16, 2>>;
  table->For(GgmlType::kQ4_0).dot = TiledDot<Q8_0Dot<Q4_0Weights, 18>>;
  table->For(GgmlType::kQ8_0).dot = TiledDot<Q8_0Dot<Q8_0Weights, 34>>;
  table->For(GgmlType::kQ4_0).pack = PackQ8_0;
  table->For(GgmlType::kQ8_0).pack = PackQ8_0;
  table->For(GgmlType::kQ2_K) = GenericKernels<DecodeQ2K>();
  table->For(GgmlType::kQ4_K) = GenericKernels<DecodeQ4K>();
  table->For(GgmlType::kQ6_K) = GenericKernels<DecodeQ6K>();
  table->For(GgmlType::kIQ2_XXS) = {TiledDot<Iq2xxsDot>, PackQ8K, kQK_K,
                                    static_cast<int>(sizeof(BlockQ8K))};
  table->For(GgmlType::kIQ1_M) = {TiledDot<Iq1mDot>, PackQ8K, kQK_K,
                                  static_cast<int>(sizeof(BlockQ8K))};
  table->For(GgmlType::kIQ1_S) = {TiledDot<Iq1sDot>, PackQ8K, kQK_K,
                                  static_cast<int>(sizeof(BlockQ8K))};
  table->For(GgmlType::kTQ1_0) = {
      nullptr, PackTq1, kQK_K, static_cast<int>(sizeof(ActTq1)), TernaryTile<Tq1>, true};
  table->For(GgmlType::kTQ2_0) = {
      nullptr, PackTq2, kQK_K, static_cast<int>(sizeof(ActTq2)), TernaryTile<Tq2>, true};
  table->iq1s_quads = {
      nullptr, PackQuads, kQK_K, static_cast<int>(sizeof(ActQuads)), TernaryTile<Quads>, true};
}

}  // namespace tritmoe::matmul_internal
