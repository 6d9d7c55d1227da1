// AVX2 + FMA + F16C dot products. Quantized types: each weight block is decoded once into
// unsigned codes and integer scales (matmul_x86_common.h), then multiplied with every token of the
// tile using maddubs (u8 x s8 pairs) and madd (x sub-block scale). Float types: vector FMA.
#define TRITMOE_X86_NS avx2
#include "experts/matmul_x86_common.h"

#include "experts/quantize.h"

namespace tritmoe::matmul_internal {
namespace avx2 {
namespace {

template <typename Dec>
struct GenericQ8K {
  template <int NT>
  static void Run(int64_t n, const uint8_t* w, const uint8_t* act, int64_t stride, float* out) {
    // Lanes 0-7 take the first sub-block's scale, lanes 8-15 the second's.
    const __m256i pick = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2,
                                          3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    DecodedBlock db;
    for (int64_t i = 0; i < n / kQK_K; ++i) {
      Dec::Decode(w + i * Dec::kBlockBytes, &db);
      const __m256i sc16 = db.sc;
      const __m256i msc = db.msc;
      __m256i scv[8];
      for (int c = 0; c < 8; ++c) {
        scv[c] = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(sc16, _mm256_set1_epi32(c)), pick);
      }
      for (int t = 0; t < NT; ++t) {
        const BlockQ8K* a = reinterpret_cast<const BlockQ8K*>(act + t * stride) + i;
        __m256i isum = _mm256_setzero_si256();
        for (int c = 0; c < 8; ++c) {
          const __m256i p = _mm256_maddubs_epi16(Load256(db.u + 32 * c), Load256(a->qs + 32 * c));
          isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scv[c]));
        }
        const __m256i corr = _mm256_madd_epi16(Load256(a->bsums), msc);
        if constexpr (Dec::kSeparateMin) {
          acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(db.d * a->d), acc[t]);
          acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(corr), _mm256_set1_ps(db.dm * a->d), acc[t]);
        } else {
          acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(isum, corr)),
                                   _mm256_set1_ps(db.d * a->d), acc[t]);
        }
      }
    }
    for (int t = 0; t < NT; ++t) out[t] = HSum256(acc[t]);
  }
};

// TQ1_0 / TQ2_0: one scale per block, codes u = value + 1. The int16 pair sums of all eight
// vectors (<= 8 * 2 * 3 * 127) fit 16 bits, as does subtracting the 16 bsums (Σq = the +1).
template <typename Dec>
struct TernaryDot {
  template <int NT>
  static void Run(int64_t n, const uint8_t* w, const uint8_t* act, int64_t stride, float* out) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / kQK_K; ++i) {
      const uint8_t* b = w + i * Dec::kBlockBytes;
      __m256i u[8];
      Dec::Codes(b, u);
      const float dw = Dec::Scale(b);
      for (int t = 0; t < NT; ++t) {
        const BlockQ8K* a = reinterpret_cast<const BlockQ8K*>(act + t * stride) + i;
        __m256i s16 =
            _mm256_sub_epi16(_mm256_maddubs_epi16(u[0], Load256(a->qs)), Load256(a->bsums));
        for (int c = 1; c < 8; ++c) {
          s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(u[c], Load256(a->qs + 32 * c)));
        }
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(s16, ones)),
                                 _mm256_set1_ps(dw * a->d), acc[t]);
      }
    }
    for (int t = 0; t < NT; ++t) out[t] = HSum256(acc[t]);
  }
};

// IQ1_S: codes (g + 1)(2s + 1) <= 30 pre-multiplied by the sub-block scale; the ±1/8 delta via
// the bsums, all times 8 (see the AVX-512 kernel for the algebra).
struct Iq1sDot {
  template <int NT>
  static void Run(int64_t n, const uint8_t* w, const uint8_t* act, int64_t stride, float* out) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / kQK_K; ++i) {
      const uint8_t* b = w + 50 * i;
      const uint8_t* qs = b + 2;
      __m256i u[8];
      for (int ib = 0; ib < 8; ++ib) {
        const uint32_t qh = LoadU16(b + 34 + 2 * ib);
        const uint8_t* q = qs + 4 * ib;
        const __m256i g =
            _mm256_setr_epi64x(static_cast<long long>(Iq1sGridPlus1(q[0] | ((qh << 8) & 0x700))),
                               static_cast<long long>(Iq1sGridPlus1(q[1] | ((qh << 5) & 0x700))),
                               static_cast<long long>(Iq1sGridPlus1(q[2] | ((qh << 2) & 0x700))),
                               static_cast<long long>(Iq1sGridPlus1(q[3] | ((qh >> 1) & 0x700))));
        // Byte products in 16-bit lanes: (g + 1) * ls <= 30 never carries into the next byte.
        u[ib] = _mm256_mullo_epi16(
            g, _mm256_set1_epi16(static_cast<int16_t>(2 * ((qh >> 12) & 7) + 1)));
      }
      const __m128i qh = Load128(b + 34);
      const __m128i ls = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(qh, 11), _mm_set1_epi16(14)),
                                      _mm_set1_epi16(1));
      const __m256i cdelta = DupPairs16(_mm_mullo_epi16(
          ls, _mm_add_epi16(_mm_set1_epi16(7), _mm_slli_epi16(_mm_srli_epi16(qh, 15), 1))));
      const float dw = LoadFp16(b) * 0.125f;
      for (int t = 0; t < NT; ++t) {
        const BlockQ8K* a = reinterpret_cast<const BlockQ8K*>(act + t * stride) + i;
        __m256i dot = _mm256_setzero_si256();
        for (int c = 0; c < 8; c += 2) {  // two pair sums <= 2 * 2 * 30 * 127 fit 16 bits
          const __m256i p =
              _mm256_add_epi16(_mm256_maddubs_epi16(u[c], Load256(a->qs + 32 * c)),
                               _mm256_maddubs_epi16(u[c + 1], Load256(a->qs + 32 * c + 32)));
          dot = _mm256_add_epi32(dot, _mm256_madd_epi16(p, ones));
        }
        const __m256i s = _mm256_sub_epi32(_mm256_slli_epi32(dot, 3),
                                           _mm256_madd_epi16(Load256(a->bsums), cdelta));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dw * a->d), acc[t]);
      }
    }
    for (int t = 0; t < NT; ++t) out[t] = HSum256(acc[t]);
  }
};

inline __m256 LoadF32x8(const uint8_t* p) {
  return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
}
inline __m256 LoadF16x8(const uint8_t* p) { return _mm256_cvtph_ps(Load128(p)); }
inline __m256 LoadBf16x8(const uint8_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(Load128(p)), 16));
}
inline float F32At(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, 4);
  return f;
}
inline float F16At(const uint8_t* p) { return LoadFp16(p); }
inline float Bf16At(const uint8_t* p) {
  const uint32_t u = static_cast<uint32_t>(LoadU16(p)) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <__m256 (*kLoad8)(const uint8_t*), float (*kLoad1)(const uint8_t*), int kElemBytes>
struct FloatDot {
  template <int NT>
  static void Run(int64_t n, const uint8_t* w, const uint8_t* act, int64_t stride, float* out) {
    constexpr int U = NT == 1 ? 4 : (NT == 2 ? 2 : 1);  // independent FMA chains per token
    __m256 acc[NT][U];
    for (int t = 0; t < NT; ++t) {
      for (int u = 0; u < U; ++u) acc[t][u] = _mm256_setzero_ps();
    }
    int64_t i = 0;
    for (; i + 8 * U <= n; i += 8 * U) {
      for (int u = 0; u < U; ++u) {
        const __m256 wv = kLoad8(w + (i + 8 * u) * kElemBytes);
        for (int t = 0; t < NT; ++t) {
          const float* x = reinterpret_cast<const float*>(act + t * stride);
          acc[t][u] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i + 8 * u), acc[t][u]);
        }
      }
    }
    for (int t = 0; t < NT; ++t) {
      for (int u = 1; u < U; ++u) acc[t][0] = _mm256_add_ps(acc[t][0], acc[t][u]);
      float s = HSum256(acc[t][0]);
      const float* x = reinterpret_cast<const float*>(act + t * stride);
      for (int64_t j = i; j < n; ++j) s += kLoad1(w + j * kElemBytes) * x[j];
      out[t] = s;
    }
  }
};

void PackQ8K(const float* x, int64_t n, void* dst) { QuantizeRowQ8KAvx2(x, n, dst); }
void PackQ8_0(const float* x, int64_t n, void* dst) { QuantizeRowQ8_0Avx2(x, n, dst); }

template <typename Dec>
TypeKernels Q8KKernels() {
  return {TiledDot<GenericQ8K<Dec>>, PackQ8K, kQK_K, static_cast<int>(sizeof(BlockQ8K))};
}

}  // namespace
}  // namespace avx2

void FillAvx2Kernels(KernelTable* table) {
  using namespace avx2;  // NOLINT: the kernels of this file
  table->isa = MatmulIsa::kAvx2;
  for (GgmlType t : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16}) {
    TypeKernels& k = table->For(t);
    k.dot = t == GgmlType::kF32   ? TiledDot<FloatDot<LoadF32x8, F32At, 4>>
            : t == GgmlType::kF16 ? TiledDot<FloatDot<LoadF16x8, F16At, 2>>
                                  : TiledDot<FloatDot<LoadBf16x8, Bf16At, 2>>;
  }
  table->For(GgmlType::kQ4_0).dot = TiledDot<Q8_0Dot<Q4_0Weights, 18>>;
  table->For(GgmlType::kQ8_0).dot = TiledDot<Q8_0Dot<Q8_0Weights, 34>>;
  table->For(GgmlType::kQ4_0).pack = PackQ8_0;
  table->For(GgmlType::kQ8_0).pack = PackQ8_0;
  table->For(GgmlType::kQ2_K) = Q8KKernels<DecodeQ2K>();
  table->For(GgmlType::kQ4_K) = Q8KKernels<DecodeQ4K>();
  table->For(GgmlType::kQ6_K) = Q8KKernels<DecodeQ6K>();
  table->For(GgmlType::kIQ2_XXS) = Q8KKernels<DecodeIq2xxs>();
  table->For(GgmlType::kIQ1_S).dot = TiledDot<Iq1sDot>;
  table->For(GgmlType::kIQ1_M) = Q8KKernels<DecodeIq1m>();
  table->For(GgmlType::kTQ1_0) = Q8KKernels<DecodeTq1>();
  table->For(GgmlType::kTQ2_0) = Q8KKernels<DecodeTq2>();
  table->For(GgmlType::kTQ1_0).dot = TiledDot<TernaryDot<DecodeTq1>>;
  table->For(GgmlType::kTQ2_0).dot = TiledDot<TernaryDot<DecodeTq2>>;
  table->iq1s_quads = Q8KKernels<DecodeIq1sQuads>();
}

}  // namespace tritmoe::matmul_internal
