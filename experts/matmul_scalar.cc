// Portable dot products: one weight row against Q8_K / Q8_0 / float32 activations, written
// directly from the integer formulations of reference/formats.md §2 (llama.cpp's generic CPU
// code computes the same integer sums). These are the reference for the vector kernels.
#include <cstdint>
#include <cstring>

#include "experts/fp16.h"
#include "experts/matmul_iq1s_quads.h"
#include "experts/matmul_kernels.h"
#include "experts/quant_tables.h"
#include "experts/quantize.h"

namespace tritmoe::matmul_internal {
namespace {

inline uint16_t LoadU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline float LoadFp16(const uint8_t* p) { return Fp16ToFp32(LoadU16(p)); }
inline int8_t GridI8(uint64_t entry, int k) { return static_cast<int8_t>(entry >> (8 * k)); }

float DotQ4_0(int64_t n, const uint8_t* w, const BlockQ8_0* a) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / 32; ++i, w += 18) {
    const uint8_t* qs = w + 2;
    int sumi = 0;
    for (int j = 0; j < 16; ++j) {
      sumi += ((qs[j] & 0xF) - 8) * a[i].qs[j] + ((qs[j] >> 4) - 8) * a[i].qs[j + 16];
    }
    sum += static_cast<float>(sumi) * (LoadFp16(w) * Fp16ToFp32(a[i].d));
  }
  return sum;
}

float DotQ8_0(int64_t n, const uint8_t* w, const BlockQ8_0* a) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / 32; ++i, w += 34) {
    int sumi = 0;
    for (int j = 0; j < 32; ++j) sumi += static_cast<int8_t>(w[2 + j]) * a[i].qs[j];
    sum += static_cast<float>(sumi) * (LoadFp16(w) * Fp16ToFp32(a[i].d));
  }
  return sum;
}

float DotQ2K(int64_t n, const uint8_t* w, const BlockQ8K* a) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i, w += 84) {
    const uint8_t* scales = w;
    const uint8_t* qs = w + 16;
    const int8_t* q8 = a[i].qs;
    int summs = 0;
    for (int j = 0; j < 16; ++j) summs += (scales[j] >> 4) * a[i].bsums[j];
    int isum = 0;
    for (int h = 0; h < 2; ++h) {
      for (int j = 0; j < 4; ++j) {
        for (int p = 0; p < 2; ++p) {
          const int sc = scales[8 * h + 2 * j + p] & 0xF;
          int s = 0;
          for (int l = 0; l < 16; ++l) {
            s += ((qs[32 * h + 16 * p + l] >> (2 * j)) & 3) * q8[128 * h + 32 * j + 16 * p + l];
          }
          isum += sc * s;
        }
      }
    }
    const float dall = a[i].d * LoadFp16(w + 80);
    const float dmin = a[i].d * LoadFp16(w + 82);
    sum += dall * static_cast<float>(isum) - dmin * static_cast<float>(summs);
  }
  return sum;
}

// The 6-bit (scale, min) of sub-block j from Q4_K's 12 packed bytes (formats.md §2.6).
inline void Q4KScaleMin(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

float DotQ4K(int64_t n, const uint8_t* w, const BlockQ8K* a) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i, w += 144) {
    const uint8_t* qs = w + 16;
    const int8_t* q8 = a[i].qs;
    int isum = 0, summs = 0;
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      Q4KScaleMin(j, w + 4, &sc, &m);
      summs += m * (a[i].bsums[2 * j] + a[i].bsums[2 * j + 1]);
      const int c = j / 2, shift = 4 * (j % 2);
      int s = 0;
      for (int l = 0; l < 32; ++l) s += ((qs[32 * c + l] >> shift) & 0xF) * q8[32 * j + l];
      isum += sc * s;
    }
    const float d = a[i].d * LoadFp16(w);
    const float dmin = a[i].d * LoadFp16(w + 2);
    sum += d * static_cast<float>(isum) - dmin * static_cast<float>(summs);
  }
  return sum;
}

float DotQ6K(int64_t n, const uint8_t* w, const BlockQ8K* a) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i, w += 210) {
    const int8_t* q8 = a[i].qs;
    int isum = 0;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* L = w + 64 * h;
      const uint8_t* H = w + 128 + 32 * h;
      const int8_t* S = reinterpret_cast<const int8_t*>(w + 192 + 8 * h);
      for (int k = 0; k < 4; ++k) {
        for (int half = 0; half < 2; ++half) {
          int s = 0;
          for (int l = 16 * half; l < 16 * half + 16; ++l) {
            // k = 0, 1: low nibbles of L[l], L[l + 32]; k = 2, 3: their high nibbles.
            const uint8_t lb = L[l + (k % 2) * 32];
            const int low4 = k < 2 ? (lb & 0xF) : (lb >> 4);
            const int q = (low4 | (((H[l] >> (2 * k)) & 3) << 4)) - 32;
            s += q * q8[128 * h + 32 * k + l];
          }
          isum += S[2 * k + half] * s;
        }
      }
    }
    sum += a[i].d * LoadFp16(w + 208) * static_cast<float>(isum);
  }
  return sum;
}

float DotIq2xxs(int64_t n, const uint8_t* w, const BlockQ8K* a) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i, w += 66) {
    const int8_t* q8 = a[i].qs;
    int bsum = 0;
    for (int ib = 0; ib < 8; ++ib) {
      const uint32_t a0 = LoadU32(w + 2 + 8 * ib);
      const uint32_t a1 = LoadU32(w + 2 + 8 * ib + 4);
      int s = 0;
      for (int l = 0; l < 4; ++l) {
        const uint64_t g = tables::kIq2xxsGrid[(a0 >> (8 * l)) & 0xFF];
        const uint8_t signs = tables::kSignsIq2xs[(a1 >> (7 * l)) & 127];
        for (int k = 0; k < 8; ++k) {
          const int v = static_cast<uint8_t>(g >> (8 * k));
          s += ((signs >> k) & 1 ? -v : v) * q8[32 * ib + 8 * l + k];
        }
      }
      bsum += static_cast<int>(2 * (a1 >> 28) + 1) * s;
    }
    sum += LoadFp16(w) * a[i].d * static_cast<float>(bsum);
  }
  return 0.125f * sum;
}

float DotIq1s(int64_t n, const uint8_t* w, const BlockQ8K* a) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i, w += 50) {
    const uint8_t* qs = w + 2;
    const int8_t* q8 = a[i].qs;
    int sumi = 0, sumi1 = 0;
    for (int ib = 0; ib < 8; ++ib) {
      const uint16_t qh = LoadU16(w + 34 + 2 * ib);
      const int ls = 2 * ((qh >> 12) & 7) + 1;
      int s = 0;
      for (int l = 0; l < 4; ++l) {
        const uint64_t g = tables::kIq1sGrid[qs[4 * ib + l] | (((qh >> (3 * l)) & 7) << 8)];
        for (int k = 0; k < 8; ++k) s += GridI8(g, k) * q8[32 * ib + 8 * l + k];
      }
      sumi += ls * s;
      sumi1 += ls * (qh & 0x8000 ? -1 : 1) * (a[i].bsums[2 * ib] + a[i].bsums[2 * ib + 1]);
    }
    sum += LoadFp16(w) * a[i].d * (static_cast<float>(sumi) + 0.125f * static_cast<float>(sumi1));
  }
  return sum;
}

// IQ1_S repacked as quads: the same integer sums as DotIq1s, codes read from the base-3 fields.
float DotIq1sQuads(int64_t n, const uint8_t* w, const BlockQ8K* a) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i, w += iq1s_quads::kBlockBytes) {
    const int8_t* q8 = a[i].qs;
    int sumi = 0, sumi1 = 0;
    for (int ib = 0; ib < 8; ++ib) {
      const int ls = 2 * iq1s_quads::Scale(w, ib) + 1;
      int s = 0;
      for (int e = 0; e < 32; ++e) s += (iq1s_quads::Code(w, 32 * ib + e) - 1) * q8[32 * ib + e];
      sumi += ls * s;
      sumi1 += ls * (iq1s_quads::DeltaNegative(w, ib) ? -1 : 1) *
               (a[i].bsums[2 * ib] + a[i].bsums[2 * ib + 1]);
    }
    sum += Fp16ToFp32(iq1s_quads::DBits(w)) * a[i].d *
           (static_cast<float>(sumi) + 0.125f * static_cast<float>(sumi1));
  }
  return sum;
}

float DotIq1m(int64_t n, const uint8_t* w, const BlockQ8K* a) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i, w += 56) {
    const uint8_t* qs = w;
    const uint8_t* qh = w + 32;
    uint16_t sc[4];
    for (int k = 0; k < 4; ++k) sc[k] = LoadU16(w + 48 + 2 * k);
    const uint16_t d_bits = static_cast<uint16_t>((sc[0] >> 12) | ((sc[1] >> 8) & 0x00F0) |
                                                  ((sc[2] >> 4) & 0x0F00) | (sc[3] & 0xF000));
    const int8_t* q8 = a[i].qs;
    int sumi = 0, sumi1 = 0;  // sumi1 counts delta terms in units of 1/8
    for (int ib = 0; ib < 8; ++ib) {
      const int ls1 = 2 * ((sc[ib / 2] >> (6 * (ib % 2))) & 7) + 1;
      const int ls2 = 2 * ((sc[ib / 2] >> (6 * (ib % 2) + 3)) & 7) + 1;
      for (int l = 0; l < 4; ++l) {
        const uint8_t h = qh[2 * ib + l / 2];
        const int idx = qs[4 * ib + l] | (l % 2 == 0 ? (h << 8) & 0x700 : (h << 4) & 0x700);
        const int delta = (h & (l % 2 == 0 ? 0x08 : 0x80)) ? -1 : 1;
        const uint64_t g = tables::kIq1sGrid[idx];
        int s = 0, s8 = 0;
        for (int k = 0; k < 8; ++k) {
          s += GridI8(g, k) * q8[32 * ib + 8 * l + k];
          s8 += q8[32 * ib + 8 * l + k];
        }
        const int ls = l < 2 ? ls1 : ls2;
        sumi += ls * s;
        sumi1 += ls * delta * s8;
      }
    }
    sum += Fp16ToFp32(d_bits) * a[i].d *
           (static_cast<float>(sumi) + 0.125f * static_cast<float>(sumi1));
  }
  return sum;
}

inline int Trit(uint8_t b, int n) {
  return ((static_cast<uint8_t>(b * tables::kPow3Tq[n])) * 3) >> 8;
}

float DotTq1(int64_t n, const uint8_t* w, const BlockQ8K* a) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i, w += 54) {
    const uint8_t* qs = w;
    const uint8_t* qh = w + 48;
    const int8_t* q8 = a[i].qs;
    int s = 0;
    for (int nd = 0; nd < 5; ++nd) {
      for (int m = 0; m < 32; ++m) s += (Trit(qs[m], nd) - 1) * q8[32 * nd + m];
      for (int m = 0; m < 16; ++m) s += (Trit(qs[32 + m], nd) - 1) * q8[160 + 16 * nd + m];
    }
    for (int nd = 0; nd < 4; ++nd) {
      for (int j = 0; j < 4; ++j) s += (Trit(qh[j], nd) - 1) * q8[240 + 4 * nd + j];
    }
    sum += static_cast<float>(s) * (LoadFp16(w + 52) * a[i].d);
  }
  return sum;
}

float DotTq2(int64_t n, const uint8_t* w, const BlockQ8K* a) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i, w += 66) {
    const int8_t* q8 = a[i].qs;
    int s = 0;
    for (int h = 0; h < 2; ++h) {
      for (int l = 0; l < 4; ++l) {
        for (int m = 0; m < 32; ++m) {
          s += (((w[32 * h + m] >> (2 * l)) & 3) - 1) * q8[128 * h + 32 * l + m];
        }
      }
    }
    sum += static_cast<float>(s) * (LoadFp16(w + 64) * a[i].d);
  }
  return sum;
}

float DotF32(int64_t n, const uint8_t* w, const float* x) {
  const float* wf = reinterpret_cast<const float*>(w);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += wf[i] * x[i];
  return sum;
}

float DotF16(int64_t n, const uint8_t* w, const float* x) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += LoadFp16(w + 2 * i) * x[i];
  return sum;
}

float DotBf16(int64_t n, const uint8_t* w, const float* x) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += Bf16ToFp32(LoadU16(w + 2 * i)) * x[i];
  return sum;
}

// Adapts a one-token dot to the multi-token kernel signature.
template <typename Act, float (*kDot)(int64_t, const uint8_t*, const Act*)>
void MultiDot(int64_t n, const void* w, const void* act, int64_t act_stride, int n_tok,
              float* out) {
  const auto* a = static_cast<const uint8_t*>(act);
  for (int t = 0; t < n_tok; ++t) {
    out[t] =
        kDot(n, static_cast<const uint8_t*>(w), reinterpret_cast<const Act*>(a + t * act_stride));
  }
}

void PackQ8K(const float* x, int64_t n, void* dst) { QuantizeRowQ8K(x, dst, n); }
void PackQ8_0(const float* x, int64_t n, void* dst) { QuantizeRowQ8_0(x, dst, n); }
void PackF32(const float* x, int64_t n, void* dst) { std::memcpy(dst, x, n * sizeof(float)); }

template <float (*kDot)(int64_t, const uint8_t*, const BlockQ8K*)>
TypeKernels Q8KKernels() {
  return {MultiDot<BlockQ8K, kDot>, PackQ8K, kQK_K, static_cast<int>(sizeof(BlockQ8K))};
}
template <float (*kDot)(int64_t, const uint8_t*, const BlockQ8_0*)>
TypeKernels Q8_0Kernels() {
  return {MultiDot<BlockQ8_0, kDot>, PackQ8_0, 32, static_cast<int>(sizeof(BlockQ8_0))};
}
template <float (*kDot)(int64_t, const uint8_t*, const float*)>
TypeKernels FloatKernels() {
  return {MultiDot<float, kDot>, PackF32, 1, 4};
}

}  // namespace

void FillScalarKernels(KernelTable* table) {
  table->isa = MatmulIsa::kScalar;
  table->For(GgmlType::kF32) = FloatKernels<DotF32>();
  table->For(GgmlType::kF16) = FloatKernels<DotF16>();
  table->For(GgmlType::kBF16) = FloatKernels<DotBf16>();
  table->For(GgmlType::kQ4_0) = Q8_0Kernels<DotQ4_0>();
  table->For(GgmlType::kQ8_0) = Q8_0Kernels<DotQ8_0>();
  table->For(GgmlType::kQ2_K) = Q8KKernels<DotQ2K>();
  table->For(GgmlType::kQ4_K) = Q8KKernels<DotQ4K>();
  table->For(GgmlType::kQ6_K) = Q8KKernels<DotQ6K>();
  table->For(GgmlType::kIQ2_XXS) = Q8KKernels<DotIq2xxs>();
  table->For(GgmlType::kIQ1_S) = Q8KKernels<DotIq1s>();
  table->For(GgmlType::kIQ1_M) = Q8KKernels<DotIq1m>();
  table->For(GgmlType::kTQ1_0) = Q8KKernels<DotTq1>();
  table->For(GgmlType::kTQ2_0) = Q8KKernels<DotTq2>();
  table->iq1s_quads = Q8KKernels<DotIq1sQuads>();
}

}  // namespace tritmoe::matmul_internal
