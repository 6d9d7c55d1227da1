// Quantized GEMV / small-batch GEMM kernels for decode: y[t][r] = sum_c W[r][c] * x[t][c] for up
// to 8 activation rows per MMA, weights in the tiled GPU layout (quant_gemv_launch.h).
//
// Design (see the notes in experts/cuda/README.md):
// * Activations are quantized once per call to int8 per 256 columns (one float scale, like
//   llama.cpp's Q8_K) and laid out in MMA-fragment order.
// * Each warp owns a 16-row tile column; per 32-column sub-block it decodes its fragment of the
//   weights to int8 in registers and issues one mma.sync.m16n8k32 (s8/u8 x s8 -> s32) with the 8
//   activation rows as N. Sub-block scales are folded into the integer operand where they fit
//   (IQ1_S) or applied to the int32 result per sub-block; offsets (IQ1_S's +1/8 shift and grid
//   bias, Q4_K's mins) are rank-8 terms computed by two extra MMAs per tile against the
//   per-sub-block activation sums.
// * Two kernels share the per-type decoders. Split-K (GemvKernel): a CTA of W warps works on
//   one (expert, 8-token chunk, 16-row group) item, its warps taking different column blocks
//   (register double-buffering) and reducing through shared memory; best when there are few
//   items (dense decode GEMVs) and for the 4.5+ bpw types. Pipelined (GemvPipelinedKernel): a
//   CTA owns W row groups (one per warp) and walks all column blocks, with weight tiles and
//   activation records streamed into shared-memory stages by cp.async and the activations
//   shared by the warps; used for low-bit types when there are many items (grouped experts).
//   Both loop over items (grid = resident CTAs), so lookup tables reach shared memory once per
//   CTA.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "experts/cuda/act_quant.cuh"
#include "experts/cuda/quant_gemv_launch.h"
#include "experts/quant_tables.h"

namespace tritmoe::gpu_internal {
namespace {

// ---------------------------------------------------------------------------------------------
// Lookup tables in device memory, initialised at compile time from the host constexpr tables.

template <size_t... I>
__device__ const uint32_t kIq1sGridGpuDev[sizeof...(I)] = {tables::kIq1sGridGpu[I]...};
template <size_t... I>
__device__ __forceinline__ const uint32_t* Iq1sGridGpuDev(std::index_sequence<I...>) {
  return kIq1sGridGpuDev<I...>;
}
template <size_t... I>
__device__ const uint64_t kIq2xxsGridDev[sizeof...(I)] = {tables::kIq2xxsGrid[I]...};
template <size_t... I>
__device__ __forceinline__ const uint64_t* Iq2xxsGridDev(std::index_sequence<I...>) {
  return kIq2xxsGridDev<I...>;
}

// ---------------------------------------------------------------------------------------------
// Small device helpers.

// Where a tile's bytes are read from: global memory (the register-prefetch kernel) or a
// shared-memory stage filled by cp.async (the pipelined kernel).
struct GlobalLd {
  __device__ static uint4 L16(const void* p) { return __ldg(static_cast<const uint4*>(p)); }
  __device__ static uint2 L8(const void* p) { return __ldg(static_cast<const uint2*>(p)); }
  __device__ static uint32_t L4(const void* p) { return __ldg(static_cast<const uint32_t*>(p)); }
  __device__ static uint32_t L2(const void* p) { return __ldg(static_cast<const uint16_t*>(p)); }
};
struct SharedLd {
  __device__ static uint4 L16(const void* p) { return *static_cast<const uint4*>(p); }
  __device__ static uint2 L8(const void* p) { return *static_cast<const uint2*>(p); }
  __device__ static uint32_t L4(const void* p) { return *static_cast<const uint32_t*>(p); }
  __device__ static uint32_t L2(const void* p) { return *static_cast<const uint16_t*>(p); }
};

__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;"); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending));
}

// D = A(16x32, row) * B(32x8, col) + D with A unsigned or signed bytes and B signed bytes.
// Fragments (g = lane / 4, t = lane % 4): a0 = A[g][4t..4t+3], a1 = A[g+8][4t..],
// a2 = A[g][16+4t..], a3 = A[g+8][16+4t..]; b0 = B[4t..4t+3][g], b1 = B[16+4t..][g];
// d0,d1 = D[g][2t, 2t+1], d2,d3 = D[g+8][2t, 2t+1].
__device__ __forceinline__ void MmaU8S8(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                        uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void MmaS8S8(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                        uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float HalfLo(uint32_t v) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(v & 0xFFFF)));
}
__device__ __forceinline__ float HalfHi(uint32_t v) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(v >> 16)));
}

// Calls f(std::integral_constant<int, i>) for i = 0..N-1, so that i can index templates.
template <class F, int... I>
__device__ __forceinline__ void StaticForImpl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
__device__ __forceinline__ void StaticFor(F&& f) {
  StaticForImpl(f, std::make_integer_sequence<int, N>{});
}

// Bits [kPos, kPos + kLen) of a little-endian bit string held in 32-bit words (kLen <= 25).
template <int kPos, int kLen, int kWords>
__device__ __forceinline__ uint32_t Bits(const uint32_t (&w)[kWords]) {
  constexpr int k = kPos / 32, sh = kPos % 32;
  constexpr uint32_t mask = (1u << kLen) - 1;
  if constexpr (sh + kLen <= 32) {
    return (w[k] >> sh) & mask;
  } else {
    return __funnelshift_r(w[k], w[k + 1], sh) & mask;
  }
}

// The correction term of a tile: K[r][tok] = sum_ib coef(r, ib) * qsum(tok, ib), from the
// correction A operands (row g and g+8: bytes {c0(2t), c1(2t), c0(2t+1), c1(2t+1)}, the term for
// sub-block ib being (c0 + c1) * qsum_ib) and the activation's qs bytes (lo, hi halves).
__device__ __forceinline__ void CorrectionMma(int (&k)[4], uint32_t a_r0, uint32_t a_r1,
                                              uint32_t b_lo, uint32_t b_hi) {
  int lo[4] = {0, 0, 0, 0}, hi[4] = {0, 0, 0, 0};
  MmaS8S8(lo, a_r0, a_r1, 0, 0, b_lo, 0);
  MmaS8S8(hi, a_r0, a_r1, 0, 0, b_hi, 0);
#pragma unroll
  for (int i = 0; i < 4; ++i) k[i] = lo[i] + 128 * hi[i];
}

// The activation side of one tile, as seen by lane (g, t).
struct ActFrag {
  uint32_t q[16];  // B operands of token slot g: q[2ib] = b0, q[2ib + 1] = b1 of sub-block ib
  float d[2];      // scales of token slots 2t, 2t+1 (the lane's D columns)
  int sum[2];      // sums of q over the 256 columns for slots 2t, 2t+1
  uint32_t corr_lo, corr_hi;  // correction B operands of slot g
};

struct Lane {
  int lane, g, t;
};

// ---------------------------------------------------------------------------------------------
// Per-type tile decoders. Each provides the lane's weight registers (W), how to load them from a
// tile, and how to multiply a tile with an ActFrag, adding to acc[4] (the lane's D elements:
// rows g, g, g+8, g+8 x token slots 2t, 2t+1, 2t, 2t+1).

// IQ1_S tile (800 B): [0,512) lane*16, [512,640) lane*4, [640,704) lane*2: the lane's 176-bit
// string of 16 grid indices (index n = 2*ib + rsel at bits 11n..11n+10, rsel 0: row g, 1: row
// g+8; group t of each sub-block); [704,768) group*8: 16 nibbles s | sigma<<3 (nibble n as
// above); [768,800) group*4: fp16 d of rows g (low half) and g+8.
// Weight = d * (2s+1) * (grid + (sigma ? -1/8 : 1/8)). The grid comes from iq1s_grid_gpu
// (nibbles grid+1), so A = (2s+1) * (grid+1) fits a u8 and the offset
// (2s+1) * (delta - 1) = ((2s+1) * (-8 +- 1)) / 8 goes to the correction MMA.
struct Iq1s {
  static constexpr int kTileBytes = 800;
  static constexpr int kTableBytes = 2048 * 4;
  static constexpr bool kPrefetch = true;
  static constexpr bool kNeedCorr = true;
  struct W {
    uint32_t s[6];
    uint2 sc;
    uint32_t d;
  };
  __device__ static void LoadTable(uint8_t* smem) {
    const uint32_t* src = Iq1sGridGpuDev(std::make_index_sequence<2048>());
    auto* dst = reinterpret_cast<uint32_t*>(smem);
    for (int i = threadIdx.x; i < 2048; i += blockDim.x) dst[i] = src[i];
  }
  template <class Ld>
  __device__ static void Load(W& w, const uint8_t* tile, const Lane& l) {
    const uint4 a = Ld::L16(tile + l.lane * 16);
    w.s[0] = a.x;
    w.s[1] = a.y;
    w.s[2] = a.z;
    w.s[3] = a.w;
    w.s[4] = Ld::L4(tile + 512 + l.lane * 4);
    w.s[5] = Ld::L2(tile + 640 + l.lane * 2);
    w.sc = Ld::L8(tile + 704 + l.g * 8);
    w.d = Ld::L4(tile + 768 + l.g * 4);
  }
  // Byte offset of the grid entry of index n in the shared table.
  template <int n>
  __device__ static uint32_t Offset(const W& w) {
    constexpr int bit = 11 * n, k = bit / 32, sh = bit % 32;
    if constexpr (sh < 2) {
      return (w.s[k] << (2 - sh)) & 0x1FFC;
    } else if constexpr (sh + 11 <= 32) {
      return (w.s[k] >> (sh - 2)) & 0x1FFC;
    } else {
      return __funnelshift_r(w.s[k], w.s[k + 1], sh - 2) & 0x1FFC;
    }
  }
  // 2s + 1 of nibble n, from the nibble words with every nibble already turned into 2s + 1.
  template <int n>
  __device__ static uint32_t Scale(uint32_t m_lo, uint32_t m_hi) {
    return ((n < 8 ? m_lo : m_hi) >> (4 * (n % 8))) & 0xF;
  }
  // Correction operand of one row: {-8m, +-m} for sub-blocks 2t and 2t+1.
  __device__ static uint32_t CorrA(const W& w, int t, int rsel) {
    const uint32_t v = (t < 2 ? w.sc.x : w.sc.y) >> (16 * (t & 1) + 4 * rsel);
    uint32_t out = 0;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t nib = (v >> (8 * h)) & 0xF;
      const int m = 2 * static_cast<int>(nib & 7) + 1;
      const int c0 = -8 * m;
      const int c1 = (nib & 8) ? -m : m;
      out |= ((static_cast<uint32_t>(c0) & 0xFF) | ((static_cast<uint32_t>(c1) & 0xFF) << 8))
             << (16 * h);
    }
    return out;
  }
  __device__ static void Compute(const W& w, const ActFrag& a, const uint8_t* smem, const Lane& l,
                                 float (&acc)[4]) {
    int c[4] = {0, 0, 0, 0};
    const uint32_t m_lo = ((w.sc.x << 1) & 0xEEEEEEEE) | 0x11111111;  // 8 x (2s + 1)
    const uint32_t m_hi = ((w.sc.y << 1) & 0xEEEEEEEE) | 0x11111111;
    StaticFor<8>([&](auto ib_c) {
      constexpr int ib = decltype(ib_c)::value;
      const uint32_t e0 = *reinterpret_cast<const uint32_t*>(smem + Offset<2 * ib>(w));
      const uint32_t e1 = *reinterpret_cast<const uint32_t*>(smem + Offset<2 * ib + 1>(w));
      const uint32_t m0 = Scale<2 * ib>(m_lo, m_hi), m1 = Scale<2 * ib + 1>(m_lo, m_hi);
      MmaU8S8(c, (e0 & 0x0F0F0F0F) * m0, (e1 & 0x0F0F0F0F) * m1, ((e0 >> 4) & 0x0F0F0F0F) * m0,
              ((e1 >> 4) & 0x0F0F0F0F) * m1, a.q[2 * ib], a.q[2 * ib + 1]);
    });
    int k[4];
    CorrectionMma(k, CorrA(w, l.t, 0), CorrA(w, l.t, 1), a.corr_lo, a.corr_hi);
    const float d0 = HalfLo(w.d) * 0.125f, d1 = HalfHi(w.d) * 0.125f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      acc[i] += static_cast<float>(8 * c[i] + k[i]) * ((i < 2 ? d0 : d1) * a.d[i & 1]);
    }
  }
};

// IQ1_S, lean decoder (the default; same tile as Iq1s). The nibble decoder above spends most of
// its ~430 warp instructions per tile on ALU work (ncu: ALU pipe 65%, HBM 22%). Here:
// * the scale 2s + 1 of all 16 (row, sub-block) pairs is formed once per tile with byte SIMD (8
//   ops for 16 values), then one byte extract per lookup instead of a shift and a mask;
// * the correction operand {-8m, +-m} of both rows comes from a 256-entry shared table indexed by
//   a scale byte (two lookups and two byte permutes per tile instead of ~48 scalar ops);
// * the grid lookup stays a 4-byte nibble entry: an 8-byte u8 entry would save two ALU ops per
//   lookup but double the shared-memory wavefronts of the random lookups, which already take
//   ~56 of the ~80 wavefronts a warp spends per tile.
// Exactly the same integers as Iq1s: A = (2s+1)(grid+1) per byte, K = correction, 8C + K.
struct Iq1sLean {
  static constexpr int kTileBytes = Iq1s::kTileBytes;
  static constexpr int kGridBytes = 2048 * 4;
  // Correction table: entry b (a scale byte: low nibble = s | sigma << 3 of row g, high nibble =
  // the same of row g+8, one sub-block) = bytes {-8m_g, +-m_g, -8m_g8, +-m_g8}.
  static constexpr int kTableBytes = kGridBytes + 256 * 4;
  static constexpr bool kPrefetch = true;
  static constexpr bool kNeedCorr = true;
  using W = Iq1s::W;
  __device__ static void LoadTable(uint8_t* smem) {
    Iq1s::LoadTable(smem);
    auto* corr = reinterpret_cast<uint32_t*>(smem + kGridBytes);
    for (int b = threadIdx.x; b < 256; b += blockDim.x) {
      uint32_t v = 0;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int nib = (b >> (4 * h)) & 0xF;
        const int m = 2 * (nib & 7) + 1;
        const int c1 = (nib & 8) ? -m : m;
        v |= ((static_cast<uint32_t>(-8 * m) & 0xFF) | ((static_cast<uint32_t>(c1) & 0xFF) << 8))
             << (16 * h);
      }
      corr[b] = v;
    }
  }
  template <class Ld>
  __device__ static void Load(W& w, const uint8_t* tile, const Lane& l) {
    Iq1s::Load<Ld>(w, tile, l);
  }
  // Byte k of v, zero-extended.
  template <int k>
  __device__ static uint32_t Byte(uint32_t v) {
    if constexpr (k == 0) {
      return v & 0xFF;
    } else if constexpr (k == 3) {
      return v >> 24;
    } else {
      return __byte_perm(v, 0, 0x4440 | k);
    }
  }
  // kN tiles (row groups) times one activation fragment, interleaved sub-block by sub-block so
  // that the warp has kN independent lookup -> MMA chains to issue from.
  template <int kN>
  __device__ static void ComputeN(const W (&w)[kN], const ActFrag& a, const uint8_t* smem,
                                  const Lane& l, float (*acc)[4]) {
    // mg[n][h] byte j = 2s + 1 of row g, sub-block 4h + j (even nibbles); m8: row g + 8 (odd).
    uint32_t mg[kN][2], m8[kN][2];
    int c[kN][4];
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      mg[n][0] = ((w[n].sc.x << 1) & 0x0E0E0E0E) | 0x01010101;
      m8[n][0] = ((w[n].sc.x >> 3) & 0x0E0E0E0E) | 0x01010101;
      mg[n][1] = ((w[n].sc.y << 1) & 0x0E0E0E0E) | 0x01010101;
      m8[n][1] = ((w[n].sc.y >> 3) & 0x0E0E0E0E) | 0x01010101;
#pragma unroll
      for (int i = 0; i < 4; ++i) c[n][i] = 0;
    }
    StaticFor<8>([&](auto ib_c) {
      constexpr int ib = decltype(ib_c)::value;
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        const uint32_t e0 = *reinterpret_cast<const uint32_t*>(smem + Iq1s::Offset<2 * ib>(w[n]));
        const uint32_t e1 =
            *reinterpret_cast<const uint32_t*>(smem + Iq1s::Offset<2 * ib + 1>(w[n]));
        const uint32_t m0 = Byte<ib % 4>(mg[n][ib / 4]), m1 = Byte<ib % 4>(m8[n][ib / 4]);
        MmaU8S8(c[n], (e0 & 0x0F0F0F0F) * m0, (e1 & 0x0F0F0F0F) * m1, ((e0 >> 4) & 0x0F0F0F0F) * m0,
                ((e1 >> 4) & 0x0F0F0F0F) * m1, a.q[2 * ib], a.q[2 * ib + 1]);
      }
    });
    const uint32_t* corr = reinterpret_cast<const uint32_t*>(smem + kGridBytes);
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      // Scale bytes of sub-blocks 2t and 2t + 1 (low nibble row g, high nibble row g + 8).
      const uint32_t v = (l.t < 2 ? w[n].sc.x : w[n].sc.y) >> (16 * (l.t & 1));
      const uint32_t k0 = corr[v & 0xFF], k1 = corr[(v >> 8) & 0xFF];
      int k[4];
      CorrectionMma(k, __byte_perm(k0, k1, 0x5410), __byte_perm(k0, k1, 0x7632), a.corr_lo,
                    a.corr_hi);
      const float d0 = HalfLo(w[n].d) * 0.125f, d1 = HalfHi(w[n].d) * 0.125f;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        acc[n][i] += static_cast<float>(8 * c[n][i] + k[i]) * ((i < 2 ? d0 : d1) * a.d[i & 1]);
      }
    }
  }
  __device__ static void Compute(const W& w, const ActFrag& a, const uint8_t* smem, const Lane& l,
                                 float (&acc)[4]) {
    const W ws[1] = {w};
    ComputeN<1>(ws, a, smem, l, &acc);
  }
  // A tile decoded once for several token chunks (GemvMultiKernel): the A operands, correction
  // operands and row scales ComputeN forms, so Apply gives bit-identical sums.
  struct D {
    uint32_t a[8][4];
    uint32_t ca0, ca1;
    float d0, d1;
  };
  __device__ static void Decode(const W& w, const uint8_t* smem, const Lane& l, D& d) {
    const uint32_t mg[2] = {((w.sc.x << 1) & 0x0E0E0E0E) | 0x01010101,
                            ((w.sc.y << 1) & 0x0E0E0E0E) | 0x01010101};
    const uint32_t m8[2] = {((w.sc.x >> 3) & 0x0E0E0E0E) | 0x01010101,
                            ((w.sc.y >> 3) & 0x0E0E0E0E) | 0x01010101};
    StaticFor<8>([&](auto ib_c) {
      constexpr int ib = decltype(ib_c)::value;
      const uint32_t e0 = *reinterpret_cast<const uint32_t*>(smem + Iq1s::Offset<2 * ib>(w));
      const uint32_t e1 = *reinterpret_cast<const uint32_t*>(smem + Iq1s::Offset<2 * ib + 1>(w));
      const uint32_t m0 = Byte<ib % 4>(mg[ib / 4]), m1 = Byte<ib % 4>(m8[ib / 4]);
      d.a[ib][0] = (e0 & 0x0F0F0F0F) * m0;
      d.a[ib][1] = (e1 & 0x0F0F0F0F) * m1;
      d.a[ib][2] = ((e0 >> 4) & 0x0F0F0F0F) * m0;
      d.a[ib][3] = ((e1 >> 4) & 0x0F0F0F0F) * m1;
    });
    const uint32_t* corr = reinterpret_cast<const uint32_t*>(smem + kGridBytes);
    const uint32_t v = (l.t < 2 ? w.sc.x : w.sc.y) >> (16 * (l.t & 1));
    const uint32_t k0 = corr[v & 0xFF], k1 = corr[(v >> 8) & 0xFF];
    d.ca0 = __byte_perm(k0, k1, 0x5410);
    d.ca1 = __byte_perm(k0, k1, 0x7632);
    d.d0 = HalfLo(w.d) * 0.125f;
    d.d1 = HalfHi(w.d) * 0.125f;
  }
  __device__ static void Apply(const D& d, const ActFrag& a, const Lane&, float (&acc)[4]) {
    int c[4] = {0, 0, 0, 0};
#pragma unroll
    for (int ib = 0; ib < 8; ++ib) {
      MmaU8S8(c, d.a[ib][0], d.a[ib][1], d.a[ib][2], d.a[ib][3], a.q[2 * ib], a.q[2 * ib + 1]);
    }
    int k[4];
    CorrectionMma(k, d.ca0, d.ca1, a.corr_lo, a.corr_hi);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      acc[i] += static_cast<float>(8 * c[i] + k[i]) * ((i < 2 ? d.d0 : d.d1) * a.d[i & 1]);
    }
  }
};

// TQ2_0 tile (1056 B): [0,1024) lane*32: for rows g, g+8 (rsel) and halves h: the 8 qs bytes
// 32h + 8t .. 32h + 8t + 7 at rsel*16 + h*8; [1024,1056) group*4: fp16 d of rows g, g+8.
// Element 128h + 32l + m = ((qs[32h + m] >> 2l) & 3) - 1, so sub-block ib = 4h + l.
struct Tq2 {
  static constexpr int kTileBytes = 1056;
  static constexpr int kTableBytes = 0;
  static constexpr bool kPrefetch = true;
  static constexpr bool kNeedCorr = false;
  struct W {
    uint32_t q[8];
    uint32_t d;
  };
  __device__ static void LoadTable(uint8_t*) {}
  template <class Ld>
  __device__ static void Load(W& w, const uint8_t* tile, const Lane& l) {
    const uint4 a = Ld::L16(tile + l.lane * 32);
    const uint4 b = Ld::L16(tile + l.lane * 32 + 16);
    w.q[0] = a.x;
    w.q[1] = a.y;
    w.q[2] = a.z;
    w.q[3] = a.w;
    w.q[4] = b.x;
    w.q[5] = b.y;
    w.q[6] = b.z;
    w.q[7] = b.w;
    w.d = Ld::L4(tile + 1024 + l.g * 4);
  }
  __device__ static void Compute(const W& w, const ActFrag& a, const uint8_t*, const Lane&,
                                 float (&acc)[4]) {
    // Codes are masked in place (code << 2s, at most 192: still a u8) rather than shifted down,
    // one accumulator per shift s; the exact sums are scaled back by 4^-s once per tile.
    int cs[4][4] = {};
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int sh = 0; sh < 4; ++sh) {
        const int ib = 4 * h + sh;
        const uint32_t m = 0x03030303u << (2 * sh);
        MmaU8S8(cs[sh], w.q[2 * h] & m, w.q[4 + 2 * h] & m, w.q[2 * h + 1] & m, w.q[5 + 2 * h] & m,
                a.q[2 * ib], a.q[2 * ib + 1]);
      }
    }
    int c[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      c[i] = cs[0][i] + (cs[1][i] >> 2) + (cs[2][i] >> 4) + (cs[3][i] >> 6);
    }
    const float d0 = HalfLo(w.d), d1 = HalfHi(w.d);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      acc[i] += static_cast<float>(c[i] - a.sum[i & 1]) * ((i < 2 ? d0 : d1) * a.d[i & 1]);
    }
  }
};

// TQ1_0 tile (864 B), trits re-encoded per lane: for each of rows g, g+8 the lane owns 64 trits
// (its 8 columns of each sub-block), in 16 A registers rho = 2*ib + (j >= 4) of 4 bytes j % 4.
// Base-3 bytes (5 trits, most significant first, byte = ceil(v * 256 / 243) as in TQ1_0):
// word W0 byte k -> registers 0..4 (trit n -> rho = n), W1 -> 5..9, W2 -> 10..14, and one byte X
// of 4 trits -> register 15 (trit n -> byte n).
// [0,512) lane*16: R0.W0, R0.W1, R1.W0, R1.W1; [512,768) lane*8: R0.W2, R1.W2;
// [768,832) lane*2: R0.X, R1.X; [832,864) group*4: fp16 d of rows g, g+8.
struct Tq1 {
  static constexpr int kTileBytes = 864;
  static constexpr int kTableBytes = 0;
  static constexpr bool kPrefetch = true;
  static constexpr bool kNeedCorr = false;
  struct W {
    uint32_t w[6];  // R0.W0, R0.W1, R1.W0, R1.W1, R0.W2, R1.W2
    uint32_t x;     // R0.X | R1.X << 8
    uint32_t d;
  };
  __device__ static void LoadTable(uint8_t*) {}
  template <class Ld>
  __device__ static void Load(W& w, const uint8_t* tile, const Lane& l) {
    const uint4 a = Ld::L16(tile + l.lane * 16);
    const uint2 b = Ld::L8(tile + 512 + l.lane * 8);
    w.w[0] = a.x;
    w.w[1] = a.y;
    w.w[2] = a.z;
    w.w[3] = a.w;
    w.w[4] = b.x;
    w.w[5] = b.y;
    w.x = Ld::L2(tile + 768 + l.lane * 2);
    w.d = Ld::L4(tile + 832 + l.g * 4);
  }
  // Trit registers kBase..kBase+4 of a base-3 word: even/odd bytes in 16-bit lanes so that one
  // multiply by 3 advances two bytes without carries; trit n of byte b is
  // ((b * 3^n mod 256) * 3) >> 8, i.e. byte 1 of each lane after the multiply.
  template <int kBase>
  __device__ static void Trits5(uint32_t word, uint32_t (&r)[16]) {
    uint32_t e = __byte_perm(word, 0, 0x4240), o = __byte_perm(word, 0, 0x4341);
#pragma unroll
    for (int n = 0; n < 5; ++n) {
      const uint32_t ye = e * 3, yo = o * 3;
      r[kBase + n] = __byte_perm(ye, yo, 0x7351);
      e = ye & 0x00FF00FF;
      o = yo & 0x00FF00FF;
    }
  }
  // The 4 trits of one byte, trit n to byte n.
  __device__ static uint32_t Trits4(uint32_t x) {
    const uint32_t y01 = ((x * 0x00030001u) & 0x00FF00FF) * 3;  // x, 3x in 16-bit lanes
    const uint32_t y23 = ((x * 0x001B0009u) & 0x00FF00FF) * 3;  // 9x, 27x
    return __byte_perm(y01, y23, 0x7531);
  }
  // The trits of rows g (r0) and g + 8 (r1) as A registers; decoded once per tile for several
  // token chunks (GemvMultiKernel), or per call by Compute.
  struct D {
    uint32_t r0[16], r1[16];
    float d0, d1;
  };
  __device__ static void Decode(const W& w, const uint8_t*, const Lane&, D& d) {
    Trits5<0>(w.w[0], d.r0);
    Trits5<5>(w.w[1], d.r0);
    Trits5<10>(w.w[4], d.r0);
    d.r0[15] = Trits4(w.x & 0xFF);
    Trits5<0>(w.w[2], d.r1);
    Trits5<5>(w.w[3], d.r1);
    Trits5<10>(w.w[5], d.r1);
    d.r1[15] = Trits4(w.x >> 8);
    d.d0 = HalfLo(w.d);
    d.d1 = HalfHi(w.d);
  }
  __device__ static void Apply(const D& d, const ActFrag& a, const Lane&, float (&acc)[4]) {
    int c[4] = {0, 0, 0, 0};
#pragma unroll
    for (int ib = 0; ib < 8; ++ib) {
      MmaU8S8(c, d.r0[2 * ib], d.r1[2 * ib], d.r0[2 * ib + 1], d.r1[2 * ib + 1], a.q[2 * ib],
              a.q[2 * ib + 1]);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      acc[i] += static_cast<float>(c[i] - a.sum[i & 1]) * ((i < 2 ? d.d0 : d.d1) * a.d[i & 1]);
    }
  }
  __device__ static void Compute(const W& w, const ActFrag& a, const uint8_t* smem, const Lane& l,
                                 float (&acc)[4]) {
    D d;
    Decode(w, smem, l, d);
    Apply(d, a, l, acc);
  }
};

// Q8_0 tile (4352 B): 8 planes of 512 B, plane ib at ib*512 + lane*16: row g's qs[8t..8t+7] of
// block ib, then row g+8's; [4096,4352) group*32: fp16 d of block ib of rows g (word ib, low
// half) and g+8 (high half).
struct Q8 {
  static constexpr int kTileBytes = 4352;
  static constexpr int kTableBytes = 0;
  static constexpr bool kPrefetch = false;
  static constexpr bool kNeedCorr = false;
  struct W {
    uint4 p[8];
    uint4 d[2];
  };
  __device__ static void LoadTable(uint8_t*) {}
  template <class Ld>
  __device__ static void Load(W& w, const uint8_t* tile, const Lane& l) {
#pragma unroll
    for (int i = 0; i < 8; ++i) w.p[i] = Ld::L16(tile + i * 512 + l.lane * 16);
    w.d[0] = Ld::L16(tile + 4096 + l.g * 32);
    w.d[1] = Ld::L16(tile + 4096 + l.g * 32 + 16);
  }
  __device__ static void Compute(const W& w, const ActFrag& a, const uint8_t*, const Lane&,
                                 float (&acc)[4]) {
    // int32 -> float through the exponent bias: |dot| <= 32*127*127 < 2^22.
    constexpr int kBias = 0x4B400000;
    constexpr float kBiasF = 12582912.0f;
    float tile[4] = {0, 0, 0, 0};
#pragma unroll
    for (int ib = 0; ib < 8; ++ib) {
      int c[4] = {kBias, kBias, kBias, kBias};
      MmaS8S8(c, w.p[ib].x, w.p[ib].z, w.p[ib].y, w.p[ib].w, a.q[2 * ib], a.q[2 * ib + 1]);
      const uint32_t dw = (&w.d[ib / 4].x)[ib % 4];
      const float d0 = HalfLo(dw), d1 = HalfHi(dw);
#pragma unroll
      for (int i = 0; i < 4; ++i) tile[i] += (__int_as_float(c[i]) - kBiasF) * (i < 2 ? d0 : d1);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[i] += tile[i] * a.d[i & 1];
  }
};

// Q4_K tile (2304 B): 4 planes of 512 B, plane c at c*512 + lane*16: qs[32c + 8t .. +7] of row g,
// then of row g+8 (low nibbles: sub-block 2c, high: 2c+1); [2048,2304) group*32: the first 16
// bytes of the GGUF block (d, dmin, 12 packed scale bytes) of row g, then of row g+8.
struct Q4k {
  static constexpr int kTileBytes = 2304;
  static constexpr int kTableBytes = 0;
  static constexpr bool kPrefetch = false;
  static constexpr bool kNeedCorr = true;
  struct W {
    uint4 p[4];
    uint4 s[2];
  };
  __device__ static void LoadTable(uint8_t*) {}
  template <class Ld>
  __device__ static void Load(W& w, const uint8_t* tile, const Lane& l) {
#pragma unroll
    for (int i = 0; i < 4; ++i) w.p[i] = Ld::L16(tile + i * 512 + l.lane * 16);
    w.s[0] = Ld::L16(tile + 2048 + l.g * 32);
    w.s[1] = Ld::L16(tile + 2048 + l.g * 32 + 16);
  }
  __device__ static void Compute(const W& w, const ActFrag& a, const uint8_t*, const Lane& l,
                                 float (&acc)[4]) {
    // 6-bit scales and mins as bytes: sc[0..3], sc[4..7], m[0..3], m[4..7] per row.
    uint32_t sc[2][2], mn[2][2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const uint4 s = w.s[r];
      sc[r][0] = s.y & 0x3F3F3F3F;
      sc[r][1] = (s.w & 0x0F0F0F0F) | ((s.y >> 2) & 0x30303030);
      mn[r][0] = s.z & 0x3F3F3F3F;
      mn[r][1] = ((s.w >> 4) & 0x0F0F0F0F) | ((s.z >> 2) & 0x30303030);
    }
    int acc_i[4] = {0, 0, 0, 0};
#pragma unroll
    for (int ib = 0; ib < 8; ++ib) {
      const uint4 p = w.p[ib / 2];
      const int sh = 4 * (ib % 2);
      int c[4] = {0, 0, 0, 0};
      MmaU8S8(c, (p.x >> sh) & 0x0F0F0F0F, (p.z >> sh) & 0x0F0F0F0F, (p.y >> sh) & 0x0F0F0F0F,
              (p.w >> sh) & 0x0F0F0F0F, a.q[2 * ib], a.q[2 * ib + 1]);
      const int s0 = (sc[0][ib / 4] >> (8 * (ib % 4))) & 0xFF;
      const int s1 = (sc[1][ib / 4] >> (8 * (ib % 4))) & 0xFF;
      acc_i[0] += s0 * c[0];
      acc_i[1] += s0 * c[1];
      acc_i[2] += s1 * c[2];
      acc_i[3] += s1 * c[3];
    }
    // Mins: correction operand {m(2t), 0, m(2t+1), 0} per row.
    const uint32_t sel = (2 * (l.t & 1)) | (4 << 4) | ((2 * (l.t & 1) + 1) << 8) | (4 << 12);
    const uint32_t ca0 = __byte_perm(l.t < 2 ? mn[0][0] : mn[0][1], 0, sel);
    const uint32_t ca1 = __byte_perm(l.t < 2 ? mn[1][0] : mn[1][1], 0, sel);
    int k[4];
    CorrectionMma(k, ca0, ca1, a.corr_lo, a.corr_hi);
    const float d[2] = {HalfLo(w.s[0].x), HalfLo(w.s[1].x)};
    const float dmin[2] = {HalfHi(w.s[0].x), HalfHi(w.s[1].x)};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      acc[i] += a.d[i & 1] *
                (d[i / 2] * static_cast<float>(acc_i[i]) - dmin[i / 2] * static_cast<float>(k[i]));
    }
  }
};

// Q6_K tile (3360 B): 6 planes of 512 B, plane 3h + k' at (3h + k')*512 + lane*16, each row g's
// 8 bytes then row g+8's: k' = 0: ql[64h + 8t ..], k' = 1: ql[64h + 32 + 8t ..],
// k' = 2: qh[32h + 8t ..]; [3072,3328) group*32: the 16 int8 scales of row g, then of row g+8;
// [3328,3360) group*4: fp16 d of rows g, g+8.
// Each lane's 8 columns of a sub-block lie in one 16-column scale group (t / 2), so a sub-block
// takes two MMAs, each with half of the lanes' A operands zeroed.
struct Q6k {
  static constexpr int kTileBytes = 3360;
  static constexpr int kTableBytes = 0;
  static constexpr bool kPrefetch = false;
  static constexpr bool kNeedCorr = false;
  struct W {
    uint4 p[6];
    uint4 s[2];
    uint32_t d;
  };
  __device__ static void LoadTable(uint8_t*) {}
  template <class Ld>
  __device__ static void Load(W& w, const uint8_t* tile, const Lane& l) {
#pragma unroll
    for (int i = 0; i < 6; ++i) w.p[i] = Ld::L16(tile + i * 512 + l.lane * 16);
    w.s[0] = Ld::L16(tile + 3072 + l.g * 32);
    w.s[1] = Ld::L16(tile + 3072 + l.g * 32 + 16);
    w.d = Ld::L4(tile + 3328 + l.g * 4);
  }
  // Signed q - 32 of four 6-bit values: (q + 96) ^ 0x80 never carries between bytes.
  __device__ static uint32_t Q6(uint32_t lo_word, int lo_shift, uint32_t hi_word, int hi_shift) {
    const uint32_t q =
        ((lo_word >> lo_shift) & 0x0F0F0F0F) | (((hi_word >> hi_shift) & 0x03030303) << 4);
    return (q + 0x60606060) ^ 0x80808080;
  }
  __device__ static int Scale(const uint4& s, int idx) {
    const uint32_t word = (&s.x)[idx / 4];
    return static_cast<int8_t>(static_cast<uint8_t>(word >> (8 * (idx % 4))));
  }
  __device__ static void Compute(const W& w, const ActFrag& a, const uint8_t*, const Lane& l,
                                 float (&acc)[4]) {
    const uint32_t keep = l.t < 2 ? 0xFFFFFFFFu : 0u;  // lanes of scale group 0
    int acc_i[4] = {0, 0, 0, 0};
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int ib = 4 * h + k;
        const uint4 lo = w.p[3 * h + (k & 1)];
        const uint4 hi = w.p[3 * h + 2];
        const int ls = 4 * (k >> 1), hs = 2 * k;
        const uint32_t a0 = Q6(lo.x, ls, hi.x, hs), a2 = Q6(lo.y, ls, hi.y, hs);
        const uint32_t a1 = Q6(lo.z, ls, hi.z, hs), a3 = Q6(lo.w, ls, hi.w, hs);
        int c0[4] = {0, 0, 0, 0}, c1[4] = {0, 0, 0, 0};
        MmaS8S8(c0, a0 & keep, a1 & keep, a2 & keep, a3 & keep, a.q[2 * ib], a.q[2 * ib + 1]);
        MmaS8S8(c1, a0 & ~keep, a1 & ~keep, a2 & ~keep, a3 & ~keep, a.q[2 * ib], a.q[2 * ib + 1]);
        const int idx = 8 * h + 2 * k;
        const int s00 = Scale(w.s[0], idx), s01 = Scale(w.s[0], idx + 1);
        const int s10 = Scale(w.s[1], idx), s11 = Scale(w.s[1], idx + 1);
        acc_i[0] += s00 * c0[0] + s01 * c1[0];
        acc_i[1] += s00 * c0[1] + s01 * c1[1];
        acc_i[2] += s10 * c0[2] + s11 * c1[2];
        acc_i[3] += s10 * c0[3] + s11 * c1[3];
      }
    }
    const float d0 = HalfLo(w.d), d1 = HalfHi(w.d);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      acc[i] += static_cast<float>(acc_i[i]) * ((i < 2 ? d0 : d1) * a.d[i & 1]);
    }
  }
};

// IQ2_XXS tile (1056 B): [0,512) lane*16: grid index byte n = 2*ib + rsel of the lane's group t;
// [512,768) lane*8, [768,896) lane*4, [896,960) lane*2: the lane's 112-bit string of 7-bit sign
// indices (n at bits 7n..7n+6); [960,1024) group*8: 16 nibbles ls (nibble n); [1024,1056)
// group*4: fp16 d of rows g, g+8. Weight = d * (2ls+1)/8 * grid * sign.
struct Iq2xxs {
  static constexpr int kTileBytes = 1056;
  static constexpr int kTableBytes = 256 * 8;
  static constexpr bool kPrefetch = true;
  static constexpr bool kNeedCorr = false;
  struct W {
    uint32_t gi[4];
    uint32_t sg[4];  // 112-bit sign string (last word 16 bits)
    uint2 ls;
    uint32_t d;
  };
  __device__ static void LoadTable(uint8_t* smem) {
    const uint64_t* src = Iq2xxsGridDev(std::make_index_sequence<256>());
    auto* dst = reinterpret_cast<uint64_t*>(smem);
    for (int i = threadIdx.x; i < 256; i += blockDim.x) dst[i] = src[i];
  }
  template <class Ld>
  __device__ static void Load(W& w, const uint8_t* tile, const Lane& l) {
    const uint4 a = Ld::L16(tile + l.lane * 16);
    w.gi[0] = a.x;
    w.gi[1] = a.y;
    w.gi[2] = a.z;
    w.gi[3] = a.w;
    const uint2 b = Ld::L8(tile + 512 + l.lane * 8);
    w.sg[0] = b.x;
    w.sg[1] = b.y;
    w.sg[2] = Ld::L4(tile + 768 + l.lane * 4);
    w.sg[3] = Ld::L2(tile + 896 + l.lane * 2);
    w.ls = Ld::L8(tile + 960 + l.g * 8);
    w.d = Ld::L4(tile + 1024 + l.g * 4);
  }
  // Signed grid bytes: grid value times (-1 where the sign bit is set), 4 elements.
  __device__ static uint32_t Signed(uint32_t grid, uint32_t bits4) {
    const uint32_t m = ((bits4 * 0x00204081u) & 0x01010101u) * 0xFFu;
    return (grid ^ m) + (m & 0x01010101u);
  }
  template <int n>
  __device__ static void Operands(const W& w, const uint8_t* smem, uint32_t& lo, uint32_t& hi) {
    const uint32_t gi = (w.gi[n / 4] >> (8 * (n % 4))) & 0xFF;
    const uint2 grid = *reinterpret_cast<const uint2*>(smem + gi * 8);
    const uint32_t s7 = Bits<7 * n, 7>(w.sg);
    const uint32_t s8 = s7 | ((__popc(s7) & 1) << 7);  // the 8th sign makes the parity even
    lo = Signed(grid.x, s8 & 0xF);
    hi = Signed(grid.y, s8 >> 4);
  }
  template <int n>
  __device__ static int Scale(const W& w) {
    const uint32_t v = n < 8 ? w.ls.x : w.ls.y;
    return 2 * static_cast<int>((v >> (4 * (n % 8))) & 0xF) + 1;
  }
  __device__ static void Compute(const W& w, const ActFrag& a, const uint8_t* smem, const Lane&,
                                 float (&acc)[4]) {
    int acc_i[4] = {0, 0, 0, 0};
    StaticFor<8>([&](auto ib_c) {
      constexpr int ib = decltype(ib_c)::value;
      uint32_t a0, a1, a2, a3;
      Operands<2 * ib>(w, smem, a0, a2);
      Operands<2 * ib + 1>(w, smem, a1, a3);
      int c[4] = {0, 0, 0, 0};
      MmaS8S8(c, a0, a1, a2, a3, a.q[2 * ib], a.q[2 * ib + 1]);
      const int m0 = Scale<2 * ib>(w), m1 = Scale<2 * ib + 1>(w);
      acc_i[0] += m0 * c[0];
      acc_i[1] += m0 * c[1];
      acc_i[2] += m1 * c[2];
      acc_i[3] += m1 * c[3];
    });
    const float d0 = HalfLo(w.d) * 0.125f, d1 = HalfHi(w.d) * 0.125f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      acc[i] += static_cast<float>(acc_i[i]) * ((i < 2 ? d0 : d1) * a.d[i & 1]);
    }
  }
};

// Every IQ2_XXS grid byte is in [1, 127]: then -g of all 8 bytes of an entry is one 32-bit
// subtraction per word (Iq2xxsLean::Negate) with no borrow between bytes.
constexpr bool Iq2xxsGridBytesInRange() {
  for (uint64_t e : tables::kIq2xxsGrid) {
    for (int k = 0; k < 8; ++k) {
      const uint64_t b = (e >> (8 * k)) & 0xFF;
      if (b < 1 || b > 127) return false;
    }
  }
  return true;
}
static_assert(Iq2xxsGridBytesInRange(), "IQ2_XXS grid bytes must be in [1, 127]");

// IQ2_XXS, lean decoder (the default; same tile as Iq2xxs, same A operands bit for bit). The
// first decoder spends ~25 warp instructions per grid lookup on ALU work: an isolated 8-bit sign
// byte with its parity, then per 4 elements a 4-bit split, a spread multiply, a mask, a second
// multiply to 0xFF bytes, XOR and add. Here per lookup (8 elements):
// * the sign masks (0xFF per negative element) come from two spread multiplies whose shifted
//   copies of the 7-bit sign index occupy disjoint bit ranges (no carries), putting sign k at
//   bit 7 of byte k, and one sign-replicating byte permute each (prmt with selector bit 3); the
//   parity sign (bit 0 of popc) enters through the multiply-add's addend at bit 31;
// * -grid of 4 bytes is one subtraction (every grid byte is in [1, 127], so no borrows) and the
//   signed operand one LOP3 select;
// * the 16 scales 2ls + 1 of a tile are formed once with byte SIMD (as Iq1sLean), one byte
//   extract per sub-block and row instead of a shift, a mask and a multiply-add.
// Shared-memory traffic is unchanged (one 8-byte grid entry per lookup): a sign table would save
// ALU work but add a random-bank lookup per grid lookup, and the lookups' wavefronts are already
// a co-limit of the IQ1_S decoder.
struct Iq2xxsLean {
  static constexpr int kTileBytes = Iq2xxs::kTileBytes;
  static constexpr int kTableBytes = Iq2xxs::kTableBytes;
  static constexpr bool kPrefetch = true;
  static constexpr bool kNeedCorr = false;
  using W = Iq2xxs::W;
  __device__ static void LoadTable(uint8_t* smem) { Iq2xxs::LoadTable(smem); }
  template <class Ld>
  __device__ static void Load(W& w, const uint8_t* tile, const Lane& l) {
    Iq2xxs::Load<Ld>(w, tile, l);
  }
  // Byte k of v, zero-extended.
  template <int k>
  __device__ static uint32_t Byte(uint32_t v) {
    return Iq1sLean::Byte<k>(v);
  }
  // 0xFF in every byte of v whose bit 7 is set, 0x00 elsewhere.
  __device__ static uint32_t SignBytes(uint32_t v) {
    uint32_t r;
    asm("prmt.b32 %0, %1, 0, 0xBA98;" : "=r"(r) : "r"(v));
    return r;
  }
  // -g per byte of a word of grid bytes in [1, 127]: sum_k (256 - g_k) 256^k mod 2^32.
  __device__ static uint32_t Negate(uint32_t g) { return 0x01010100u - g; }
  // The A operands (elements 0..3 and 4..7) of grid lookup n: grid bytes times the signs of the
  // 7-bit sign index s7 and of its parity (element 7).
  template <int n>
  __device__ static void Operands(const W& w, const uint8_t* smem, uint32_t& lo, uint32_t& hi) {
    const uint32_t gi = Byte<n % 4>(w.gi[n / 4]);
    const uint2 grid = *reinterpret_cast<const uint2*>(smem + gi * 8);
    const uint32_t s7 = Bits<7 * n, 7>(w.sg);
    // Bit k of s7 to bit 8k + 7 (k < 4): copies at shifts 7, 14, 21, 28 cover bits 7..13,
    // 14..20, 21..27, 28..31.
    const uint32_t m_lo = SignBytes(s7 * 0x10204080u);
    // Bits 4, 5, 6 to bits 7, 15, 23 (copies at shifts 3, 10, 17: bits 3..9, 10..16, 17..23);
    // the parity (bit 0 of popc) to bit 31.
    const uint32_t m_hi = SignBytes(s7 * 0x00020408u + (static_cast<uint32_t>(__popc(s7)) << 31));
    lo = (grid.x & ~m_lo) | (Negate(grid.x) & m_lo);
    hi = (grid.y & ~m_hi) | (Negate(grid.y) & m_hi);
  }
  // kN tiles (row groups) times one activation fragment, interleaved sub-block by sub-block so
  // that the warp has kN independent lookup -> MMA chains to issue from.
  template <int kN>
  __device__ static void ComputeN(const W (&w)[kN], const ActFrag& a, const uint8_t* smem,
                                  const Lane&, float (*acc)[4]) {
    // mg[n][h] byte j = 2ls + 1 of row g, sub-block 4h + j (even nibbles); m8: row g + 8 (odd).
    uint32_t mg[kN][2], m8[kN][2];
    int acc_i[kN][4];
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      mg[n][0] = ((w[n].ls.x << 1) & 0x1E1E1E1E) | 0x01010101;
      m8[n][0] = ((w[n].ls.x >> 3) & 0x1E1E1E1E) | 0x01010101;
      mg[n][1] = ((w[n].ls.y << 1) & 0x1E1E1E1E) | 0x01010101;
      m8[n][1] = ((w[n].ls.y >> 3) & 0x1E1E1E1E) | 0x01010101;
#pragma unroll
      for (int i = 0; i < 4; ++i) acc_i[n][i] = 0;
    }
    StaticFor<8>([&](auto ib_c) {
      constexpr int ib = decltype(ib_c)::value;
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        uint32_t a0, a1, a2, a3;
        Operands<2 * ib>(w[n], smem, a0, a2);
        Operands<2 * ib + 1>(w[n], smem, a1, a3);
        int c[4] = {0, 0, 0, 0};
        MmaS8S8(c, a0, a1, a2, a3, a.q[2 * ib], a.q[2 * ib + 1]);
        const int m0 = static_cast<int>(Byte<ib % 4>(mg[n][ib / 4]));
        const int m1 = static_cast<int>(Byte<ib % 4>(m8[n][ib / 4]));
        acc_i[n][0] += m0 * c[0];
        acc_i[n][1] += m0 * c[1];
        acc_i[n][2] += m1 * c[2];
        acc_i[n][3] += m1 * c[3];
      }
    });
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      const float d0 = HalfLo(w[n].d) * 0.125f, d1 = HalfHi(w[n].d) * 0.125f;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        acc[n][i] += static_cast<float>(acc_i[n][i]) * ((i < 2 ? d0 : d1) * a.d[i & 1]);
      }
    }
  }
  __device__ static void Compute(const W& w, const ActFrag& a, const uint8_t* smem, const Lane& l,
                                 float (&acc)[4]) {
    const W ws[1] = {w};
    ComputeN<1>(ws, a, smem, l, &acc);
  }
  // A tile decoded once for several token chunks (GemvMultiKernel): ComputeN's A operands and
  // scale bytes, so Apply gives bit-identical sums.
  struct D {
    uint32_t a[8][4];
    uint32_t mg[2], m8[2];
    float d0, d1;
  };
  __device__ static void Decode(const W& w, const uint8_t* smem, const Lane&, D& d) {
    d.mg[0] = ((w.ls.x << 1) & 0x1E1E1E1E) | 0x01010101;
    d.m8[0] = ((w.ls.x >> 3) & 0x1E1E1E1E) | 0x01010101;
    d.mg[1] = ((w.ls.y << 1) & 0x1E1E1E1E) | 0x01010101;
    d.m8[1] = ((w.ls.y >> 3) & 0x1E1E1E1E) | 0x01010101;
    StaticFor<8>([&](auto ib_c) {
      constexpr int ib = decltype(ib_c)::value;
      Operands<2 * ib>(w, smem, d.a[ib][0], d.a[ib][2]);
      Operands<2 * ib + 1>(w, smem, d.a[ib][1], d.a[ib][3]);
    });
    d.d0 = HalfLo(w.d) * 0.125f;
    d.d1 = HalfHi(w.d) * 0.125f;
  }
  __device__ static void Apply(const D& d, const ActFrag& a, const Lane&, float (&acc)[4]) {
    int acc_i[4] = {0, 0, 0, 0};
    StaticFor<8>([&](auto ib_c) {
      constexpr int ib = decltype(ib_c)::value;
      int c[4] = {0, 0, 0, 0};
      MmaS8S8(c, d.a[ib][0], d.a[ib][1], d.a[ib][2], d.a[ib][3], a.q[2 * ib], a.q[2 * ib + 1]);
      const int m0 = static_cast<int>(Byte<ib % 4>(d.mg[ib / 4]));
      const int m1 = static_cast<int>(Byte<ib % 4>(d.m8[ib / 4]));
      acc_i[0] += m0 * c[0];
      acc_i[1] += m0 * c[1];
      acc_i[2] += m1 * c[2];
      acc_i[3] += m1 * c[3];
    });
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      acc[i] += static_cast<float>(acc_i[i]) * ((i < 2 ? d.d0 : d.d1) * a.d[i & 1]);
    }
  }
};

// A weight tile as GemvMultiKernel multiplies it with several token chunks. Types whose decode
// is most of a tile's work (grid lookups, base-3 trits) define D / Decode / Apply and are decoded
// once per tile; for the others the loaded registers are kept and Apply is T::Compute, which
// re-derives its cheap operands (masks and shifts) per chunk.
template <class T, class = void>
struct Decoded {
  typename T::W w;
  __device__ void Decode(const typename T::W& in, const uint8_t*, const Lane&) { w = in; }
  __device__ void Apply(const ActFrag& a, const uint8_t* smem, const Lane& l,
                        float (&acc)[4]) const {
    T::Compute(w, a, smem, l, acc);
  }
};
template <class T>
struct Decoded<T, std::void_t<typename T::D>> {
  typename T::D d;
  __device__ void Decode(const typename T::W& in, const uint8_t* smem, const Lane& l) {
    T::Decode(in, smem, l, d);
  }
  __device__ void Apply(const ActFrag& a, const uint8_t*, const Lane& l, float (&acc)[4]) const {
    T::Apply(d, a, l, acc);
  }
};

// ---------------------------------------------------------------------------------------------
// The GEMV kernel.

struct KernelParams {
  const uint8_t* w;
  int64_t expert_stride;
  int rows, nkb, n_rg;
  int n_experts, max_chunks, n_tokens;
  const int32_t* offsets;
  const int32_t* x_rows;
  const int32_t* y_rows;
  const int32_t* expert_slot;  // [n_experts]: where expert e's weights are, -1 = skip; or null
  const uint8_t* act;
  float* y;
  int64_t y_stride;
};

// The weight index of expert e (its slot through expert_slot), or -1 when the launch skips it.
__device__ __forceinline__ int WeightIndex(const KernelParams& p, int e) {
  return p.expert_slot != nullptr ? __ldg(p.expert_slot + e) : e;
}

// The output row of pair `pair`.
__device__ __forceinline__ int64_t OutRow(const KernelParams& p, int pair) {
  return p.y_rows != nullptr ? __ldg(p.y_rows + pair) : pair;
}

template <bool kNeedCorr>
__device__ __forceinline__ void LoadAct(ActFrag& a, const KernelParams& p, int kb, int xb, int xc0,
                                        int xc1, const Lane& l) {
  if (xb >= 0) {
    const uint8_t* rec = p.act + (static_cast<int64_t>(xb) * p.nkb + kb) * kActRecordBytes;
    const uint4* q = reinterpret_cast<const uint4*>(rec + l.t * 64);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint4 v = __ldg(q + i);
      a.q[4 * i] = v.x;
      a.q[4 * i + 1] = v.y;
      a.q[4 * i + 2] = v.z;
      a.q[4 * i + 3] = v.w;
    }
    if constexpr (kNeedCorr) {
      const uint2 c = __ldg(reinterpret_cast<const uint2*>(rec + kActQsOffset + l.t * 8));
      a.corr_lo = c.x;
      a.corr_hi = c.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < 16; ++i) a.q[i] = 0;
    a.corr_lo = a.corr_hi = 0;
  }
  const int xc[2] = {xc0, xc1};
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (xc[i] >= 0) {
      const uint2 m = __ldg(reinterpret_cast<const uint2*>(
          p.act + (static_cast<int64_t>(xc[i]) * p.nkb + kb) * kActRecordBytes + kActMetaOffset));
      a.d[i] = __uint_as_float(m.x);
      a.sum[i] = static_cast<int>(m.y);
    } else {
      a.d[i] = 0.0f;
      a.sum[i] = 0;
    }
  }
}

template <class T, int kWarps>
__global__ void __launch_bounds__(kWarps * 32, 512 / (kWarps * 32))
    GemvKernel(const KernelParams p) {
  __shared__ __align__(16) uint8_t table[T::kTableBytes > 0 ? T::kTableBytes : 16];
  __shared__ float red[kWarps > 1 ? kWarps - 1 : 1][32][4];
  T::LoadTable(table);
  __syncthreads();

  Lane l;
  l.lane = threadIdx.x & 31;
  l.g = l.lane >> 2;
  l.t = l.lane & 3;
  const int warp = threadIdx.x >> 5;
  const int n_items = p.n_experts * p.max_chunks * p.n_rg;

  for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
    const int rg = item % p.n_rg;
    const int rest = item / p.n_rg;
    const int tc = rest % p.max_chunks;
    const int e = rest / p.max_chunks;
    int begin = 0, end = p.n_tokens;
    if (p.offsets != nullptr) {
      begin = __ldg(p.offsets + e);
      end = __ldg(p.offsets + e + 1);
    }
    const int start = begin + 8 * tc;
    const int nv = min(8, end - start);
    if (nv <= 0) continue;  // uniform across the CTA
    const int we = WeightIndex(p, e);
    if (we < 0) continue;  // uniform across the CTA
    auto xrow = [&](int slot) {
      if (slot >= nv) return -1;
      return p.x_rows != nullptr ? __ldg(p.x_rows + start + slot) : start + slot;
    };
    const int xb = xrow(l.g), xc0 = xrow(2 * l.t), xc1 = xrow(2 * l.t + 1);
    const uint8_t* wbase =
        p.w + we * p.expert_stride + static_cast<int64_t>(rg) * p.nkb * T::kTileBytes;

    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if constexpr (T::kPrefetch) {
      // Two tiles in flight per warp: load the next while multiplying the current.
      int kb = warp;
      if (kb < p.nkb) {
        typename T::W w0, w1;
        ActFrag a0, a1;
        T::template Load<GlobalLd>(w0, wbase + kb * T::kTileBytes, l);
        LoadAct<T::kNeedCorr>(a0, p, kb, xb, xc0, xc1, l);
        while (true) {
          int kn = kb + kWarps;
          if (kn < p.nkb) {
            T::template Load<GlobalLd>(w1, wbase + kn * T::kTileBytes, l);
            LoadAct<T::kNeedCorr>(a1, p, kn, xb, xc0, xc1, l);
          }
          T::Compute(w0, a0, table, l, acc);
          if (kn >= p.nkb) break;
          kb = kn;
          kn = kb + kWarps;
          if (kn < p.nkb) {
            T::template Load<GlobalLd>(w0, wbase + kn * T::kTileBytes, l);
            LoadAct<T::kNeedCorr>(a0, p, kn, xb, xc0, xc1, l);
          }
          T::Compute(w1, a1, table, l, acc);
          if (kn >= p.nkb) break;
          kb = kn;
        }
      }
    } else {
      for (int kb = warp; kb < p.nkb; kb += kWarps) {
        typename T::W w;
        ActFrag a;
        T::template Load<GlobalLd>(w, wbase + kb * T::kTileBytes, l);
        LoadAct<T::kNeedCorr>(a, p, kb, xb, xc0, xc1, l);
        T::Compute(w, a, table, l, acc);
      }
    }

    // Split-K reduction over the CTA's warps, then warp 0 writes its D elements.
    if (warp > 0) {
#pragma unroll
      for (int i = 0; i < 4; ++i) red[warp - 1][l.lane][i] = acc[i];
    }
    __syncthreads();
    if (warp == 0) {
#pragma unroll
      for (int w = 0; w < kWarps - 1; ++w) {
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[i] += red[w][l.lane][i];
      }
      const int row0 = rg * 16 + l.g;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int row = row0 + 8 * (i >> 1);
        const int slot = 2 * l.t + (i & 1);
        if (slot < nv && row < p.rows) p.y[OutRow(p, start + slot) * p.y_stride + row] = acc[i];
      }
    }
    __syncthreads();
  }
}

// Split-K over several token chunks: as GemvKernel, but an item covers kChunks consecutive
// 8-token chunks of its expert, and every weight tile a warp loads is multiplied with all of
// them, so a step of up to 8 * kChunks tokens reads the weights once instead of once per chunk,
// and decodes them once (Decoded<T>) where the decode is the expensive part. Used when a launch
// has more than 8 tokens per matrix (prefill, large decode batches).
template <class T, int kWarps, int kChunks>
__global__ void __launch_bounds__(kWarps * 32, 512 / (kWarps * 32))
    GemvMultiKernel(const KernelParams p) {
  __shared__ __align__(16) uint8_t table[T::kTableBytes > 0 ? T::kTableBytes : 16];
  __shared__ float red[kWarps > 1 ? kWarps - 1 : 1][32][4 * kChunks];
  T::LoadTable(table);
  __syncthreads();

  Lane l;
  l.lane = threadIdx.x & 31;
  l.g = l.lane >> 2;
  l.t = l.lane & 3;
  const int warp = threadIdx.x >> 5;
  const int n_groups = (p.max_chunks + kChunks - 1) / kChunks;
  const int n_items = p.n_experts * n_groups * p.n_rg;

  for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
    const int rg = item % p.n_rg;
    const int rest = item / p.n_rg;
    const int tg = rest % n_groups;
    const int e = rest / n_groups;
    int begin = 0, end = p.n_tokens;
    if (p.offsets != nullptr) {
      begin = __ldg(p.offsets + e);
      end = __ldg(p.offsets + e + 1);
    }
    int start[kChunks], nv[kChunks], xb[kChunks], xc0[kChunks], xc1[kChunks];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      start[c] = begin + 8 * (tg * kChunks + c);
      nv[c] = min(8, end - start[c]);
      auto xrow = [&](int slot) {
        if (slot >= nv[c]) return -1;
        return p.x_rows != nullptr ? __ldg(p.x_rows + start[c] + slot) : start[c] + slot;
      };
      xb[c] = xrow(l.g);
      xc0[c] = xrow(2 * l.t);
      xc1[c] = xrow(2 * l.t + 1);
    }
    if (nv[0] <= 0) continue;  // uniform across the CTA
    const int we = WeightIndex(p, e);
    if (we < 0) continue;  // uniform across the CTA
    const uint8_t* wbase =
        p.w + we * p.expert_stride + static_cast<int64_t>(rg) * p.nkb * T::kTileBytes;

    float acc[kChunks][4];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[c][i] = 0.0f;
    }
    for (int kb = warp; kb < p.nkb; kb += kWarps) {
      typename T::W w;
      T::template Load<GlobalLd>(w, wbase + kb * T::kTileBytes, l);
      Decoded<T> dt;
      dt.Decode(w, table, l);
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        if (nv[c] > 0) {
          ActFrag a;
          LoadAct<T::kNeedCorr>(a, p, kb, xb[c], xc0[c], xc1[c], l);
          dt.Apply(a, table, l, acc[c]);
        }
      }
    }

    if (warp > 0) {
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
#pragma unroll
        for (int i = 0; i < 4; ++i) red[warp - 1][l.lane][4 * c + i] = acc[c][i];
      }
    }
    __syncthreads();
    if (warp == 0) {
      const int row0 = rg * 16 + l.g;
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
#pragma unroll
        for (int w = 0; w < kWarps - 1; ++w) {
#pragma unroll
          for (int i = 0; i < 4; ++i) acc[c][i] += red[w][l.lane][4 * c + i];
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int row = row0 + 8 * (i >> 1);
          const int slot = 2 * l.t + (i & 1);
          if (slot < nv[c] && row < p.rows) {
            p.y[OutRow(p, start[c] + slot) * p.y_stride + row] = acc[c][i];
          }
        }
      }
    }
    __syncthreads();
  }
}

// Whether T::ComputeN<2> decodes two row groups interleaved (pipelined kernel, kRg == 2).
template <class T>
struct PairedCompute {
  static constexpr bool value = false;
};

// The pipelined kernel, for launches with many (expert, row block) items: a CTA of kWarps warps
// owns kWarps consecutive 16-row groups (one per warp) and walks all column blocks, streaming the
// weight tiles of its row groups and the activation records of its tokens into a ring of
// shared-memory stages with cp.async (many stages in flight: low-bit tiles are small, and HBM
// needs ~64 KB in flight per SM). The activations of a column block are loaded once per CTA and
// shared by its warps. No split-K, so no reduction. With kRg > 1 each warp owns kRg row groups
// (tiles warp, warp + kWarps, ...) and multiplies them with one activation fragment, which shares
// the fragment loads and the per-column-block pipeline work between kRg tiles. With kChunks > 1
// (kRg == 1) an item covers kChunks consecutive 8-token chunks of its expert (prefill, large
// batches): a stage holds their 8 * kChunks activation records, and each warp decodes its tile
// once (Decoded<T>) and multiplies it with every chunk, so weights are read and decoded once per
// 8 * kChunks tokens and an activation record once per CTA (kWarps row groups).
template <class T, int kWarps, int kRg = 1, int kChunks = 1>
struct Pipe {
  static_assert(kRg == 1 || kChunks == 1, "several row groups or several chunks per warp");
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kTiles = kWarps * kRg;  // row groups (tiles) per CTA and stage
  static constexpr int kSlots = 8 * kChunks;   // token slots per item
  static constexpr int kActBytes = kSlots * kActRecordBytes;
  static constexpr int kStageBytes = kTiles * T::kTileBytes + kActBytes;
  static constexpr int kRing = 46 * 1024;  // bytes of stages per CTA
  static constexpr int kStages =
      kRing / kStageBytes < 2 ? 2 : (kRing / kStageBytes > 8 ? 8 : kRing / kStageBytes);
  static constexpr int kSmemBytes = kStages * kStageBytes;  // dynamic; the table is static
  // 16-byte copies per thread and stage (weights of kWarps tiles, 8 activation records).
  static constexpr int kTileChunks = T::kTileBytes / 16;
  static constexpr int kRecChunks = kActRecordBytes / 16;
  static constexpr int kWCopies = (kTiles * kTileChunks + kThreads - 1) / kThreads;
  static constexpr int kACopies = (kSlots * kRecChunks + kThreads - 1) / kThreads;
};

template <bool kNeedCorr>
__device__ __forceinline__ void LoadActShared(ActFrag& a, const uint8_t* recs, int nv,
                                              const Lane& l) {
  if (l.g < nv) {
    const uint8_t* rec = recs + l.g * kActRecordBytes;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint4 v = *reinterpret_cast<const uint4*>(rec + l.t * 64 + 16 * i);
      a.q[4 * i] = v.x;
      a.q[4 * i + 1] = v.y;
      a.q[4 * i + 2] = v.z;
      a.q[4 * i + 3] = v.w;
    }
    if constexpr (kNeedCorr) {
      const uint2 c = *reinterpret_cast<const uint2*>(rec + kActQsOffset + l.t * 8);
      a.corr_lo = c.x;
      a.corr_hi = c.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < 16; ++i) a.q[i] = 0;
    a.corr_lo = a.corr_hi = 0;
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int slot = 2 * l.t + i;
    if (slot < nv) {
      const uint2 m =
          *reinterpret_cast<const uint2*>(recs + slot * kActRecordBytes + kActMetaOffset);
      a.d[i] = __uint_as_float(m.x);
      a.sum[i] = static_cast<int>(m.y);
    } else {
      a.d[i] = 0.0f;
      a.sum[i] = 0;
    }
  }
}

template <class T, int kWarps, int kRg, int kChunks>
__global__ void __launch_bounds__(kWarps * 32, 512 / (kWarps * 32))
    GemvPipelinedKernel(const KernelParams p) {
  using P = Pipe<T, kWarps, kRg, kChunks>;
  __shared__ __align__(16) uint8_t table[T::kTableBytes > 0 ? T::kTableBytes : 16];
  extern __shared__ __align__(16) uint8_t stages[];
  T::LoadTable(table);  // visible after the first item's __syncthreads

  Lane l;
  l.lane = threadIdx.x & 31;
  l.g = l.lane >> 2;
  l.t = l.lane & 3;
  const int warp = threadIdx.x >> 5;
  const int n_rb = (p.n_rg + P::kTiles - 1) / P::kTiles;
  const int n_tg = (p.max_chunks + kChunks - 1) / kChunks;  // token groups of kChunks chunks
  const int n_items = p.n_experts * n_tg * n_rb;

  for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
    const int rb = item % n_rb;
    const int rest = item / n_rb;
    const int tg = rest % n_tg;
    const int e = rest / n_tg;
    int begin = 0, end = p.n_tokens;
    if (p.offsets != nullptr) {
      begin = __ldg(p.offsets + e);
      end = __ldg(p.offsets + e + 1);
    }
    const int start = begin + P::kSlots * tg;
    const int nv = min(P::kSlots, end - start);  // valid token slots of the item
    if (nv <= 0) continue;                       // uniform across the CTA
    const int we = WeightIndex(p, e);
    if (we < 0) continue;  // uniform across the CTA
    __syncthreads();       // the previous item is done with the stages
    const int rg0 = rb * P::kTiles;
    const int n_w = min(P::kTiles, p.n_rg - rg0);  // row groups (tiles) present in this block

    // This thread's copies: source at column block 0 (advancing by a tile / a record per column
    // block) and destination offset within a stage; null source = nothing to copy.
    const uint8_t* wsrc[P::kWCopies];
    int wdst[P::kWCopies];
#pragma unroll
    for (int j = 0; j < P::kWCopies; ++j) {
      const int c = threadIdx.x + j * P::kThreads;
      const int wi = c / P::kTileChunks, off = (c % P::kTileChunks) * 16;
      wsrc[j] = wi < n_w ? p.w + we * p.expert_stride +
                               static_cast<int64_t>(rg0 + wi) * p.nkb * T::kTileBytes + off
                         : nullptr;
      wdst[j] = wi * T::kTileBytes + off;
    }
    const uint8_t* asrc[P::kACopies];
    int adst[P::kACopies];
#pragma unroll
    for (int j = 0; j < P::kACopies; ++j) {
      const int c = threadIdx.x + j * P::kThreads;
      const int slot = c / P::kRecChunks, off = (c % P::kRecChunks) * 16;
      asrc[j] = nullptr;
      if (slot < nv) {
        const int xr = p.x_rows != nullptr ? __ldg(p.x_rows + start + slot) : start + slot;
        asrc[j] = p.act + static_cast<int64_t>(xr) * p.nkb * kActRecordBytes + off;
      }
      adst[j] = P::kTiles * T::kTileBytes + slot * kActRecordBytes + off;
    }
    auto issue = [&](int kb, uint8_t* st) {
#pragma unroll
      for (int j = 0; j < P::kWCopies; ++j) {
        if (wsrc[j] != nullptr) CpAsync16(st + wdst[j], wsrc[j] + kb * T::kTileBytes);
      }
#pragma unroll
      for (int j = 0; j < P::kACopies; ++j) {
        if (asrc[j] != nullptr) CpAsync16(st + adst[j], asrc[j] + kb * kActRecordBytes);
      }
    };

#pragma unroll 1
    for (int s = 0; s < P::kStages - 1; ++s) {
      if (s < p.nkb) issue(s, stages + s * P::kStageBytes);
      CpAsyncCommit();  // empty groups keep the wait count uniform
    }
    float acc[kRg * kChunks][4] = {};  // [row group j] or [chunk c]
    // Stage of column block kb (read) and of kb + kStages - 1 (issued), as wrapping offsets.
    int read_off = 0, issue_off = (P::kStages - 1) * P::kStageBytes;
#pragma unroll 1
    for (int kb = 0; kb < p.nkb; ++kb) {
      CpAsyncWait<P::kStages - 2>();
      __syncthreads();  // stage kb is complete for all threads; stage kb-1 is free again
      if (kb + P::kStages - 1 < p.nkb) issue(kb + P::kStages - 1, stages + issue_off);
      CpAsyncCommit();
      if constexpr (kChunks > 1) {
        if (warp < n_w) {
          const uint8_t* st = stages + read_off;
          typename T::W w;
          T::template Load<SharedLd>(w, st + warp * T::kTileBytes, l);
          Decoded<T> dt;
          dt.Decode(w, table, l);
#pragma unroll
          for (int c = 0; c < kChunks; ++c) {
            if (8 * c < nv) {  // uniform across the CTA
              ActFrag a;
              LoadActShared<T::kNeedCorr>(
                  a, st + P::kTiles * T::kTileBytes + 8 * c * kActRecordBytes, nv - 8 * c, l);
              dt.Apply(a, table, l, acc[c]);
            }
          }
        }
      } else if (warp < n_w) {
        const uint8_t* st = stages + read_off;
        ActFrag a;
        LoadActShared<T::kNeedCorr>(a, st + P::kTiles * T::kTileBytes, nv, l);
        if constexpr (kRg == 2 && PairedCompute<T>::value) {
          // Both row groups through one interleaved decode (IQ1_S, IQ2_XXS); a lone last one
          // alone.
          if (warp + kWarps < n_w) {
            typename T::W w[2];
            T::template Load<SharedLd>(w[0], st + warp * T::kTileBytes, l);
            T::template Load<SharedLd>(w[1], st + (warp + kWarps) * T::kTileBytes, l);
            T::template ComputeN<2>(w, a, table, l, acc);
          } else {
            typename T::W w;
            T::template Load<SharedLd>(w, st + warp * T::kTileBytes, l);
            T::Compute(w, a, table, l, acc[0]);
          }
        } else {
#pragma unroll
          for (int j = 0; j < kRg; ++j) {
            if (j == 0 || warp + j * kWarps < n_w) {
              typename T::W w;
              T::template Load<SharedLd>(w, st + (warp + j * kWarps) * T::kTileBytes, l);
              T::Compute(w, a, table, l, acc[j]);
            }
          }
        }
      }
      read_off = read_off == (P::kStages - 1) * P::kStageBytes ? 0 : read_off + P::kStageBytes;
      issue_off = issue_off == (P::kStages - 1) * P::kStageBytes ? 0 : issue_off + P::kStageBytes;
    }
    CpAsyncWait<0>();
#pragma unroll
    for (int j = 0; j < kRg * kChunks; ++j) {
      const int rgw = kChunks > 1 ? warp : warp + j * kWarps;  // the warp's row group
      const int c = kChunks > 1 ? j : 0;                       // the chunk
      if (rgw < n_w) {
        const int row0 = (rg0 + rgw) * 16 + l.g;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int row = row0 + 8 * (i >> 1);
          const int slot = 8 * c + 2 * l.t + (i & 1);
          if (slot < nv && row < p.rows) {
            p.y[OutRow(p, start + slot) * p.y_stride + row] = acc[j][i];
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Activation quantization: one warp per (row, 256-column block); lane L takes columns 8L..8L+7,
// i.e. sub-block ib = L / 4 and thread-in-group t = L % 4 of the fragment layout.
__global__ void QuantizeActKernel(const float* __restrict__ x, int64_t n_rows, int cols,
                                  uint8_t* __restrict__ act) {
  const int64_t warp_id = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  const int nkb = cols / 256;
  if (warp_id >= n_rows * nkb) return;
  const int64_t row = warp_id / nkb;
  const int kb = static_cast<int>(warp_id % nkb);
  const float4* src = reinterpret_cast<const float4*>(x + row * cols + kb * 256 + lane * 8);
  const float4 v0 = src[0], v1 = src[1];
  const float v[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
  QuantizeBlockWarp(v, lane, act + warp_id * kActRecordBytes);  // warp_id = row * nkb + kb
}

// SwiGLU folded into the quantization of the down projection's input: x[r][c] =
// silu(gu[r][c]) * gu[r][n_ff + c], never stored as floats.
__global__ void QuantizeSwiGluKernel(const float* __restrict__ gu, int64_t n_rows, int n_ff,
                                     uint8_t* __restrict__ act) {
  const int64_t warp_id = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  const int nkb = n_ff / 256;
  if (warp_id >= n_rows * nkb) return;
  const int64_t row = warp_id / nkb;
  const int kb = static_cast<int>(warp_id % nkb);
  const float* g = gu + row * 2 * n_ff + kb * 256 + lane * 8;
  const float4 g0 = reinterpret_cast<const float4*>(g)[0],
               g1 = reinterpret_cast<const float4*>(g)[1];
  const float4 u0 = reinterpret_cast<const float4*>(g + n_ff)[0];
  const float4 u1 = reinterpret_cast<const float4*>(g + n_ff)[1];
  const float v[8] = {SwiGluValue(g0.x, u0.x), SwiGluValue(g0.y, u0.y), SwiGluValue(g0.z, u0.z),
                      SwiGluValue(g0.w, u0.w), SwiGluValue(g1.x, u1.x), SwiGluValue(g1.y, u1.y),
                      SwiGluValue(g1.z, u1.z), SwiGluValue(g1.w, u1.w)};
  QuantizeBlockWarp(v, lane, act + warp_id * kActRecordBytes);
}

// ---------------------------------------------------------------------------------------------
// Launch.

struct DeviceLimits {
  int sms = 0;
};

DeviceLimits GetLimits() {
  // One entry per device index; the multiprocessor count never changes for a device.
  static int cached[64] = {0};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return {132};
  if (dev < 0 || dev >= 64) return {132};
  if (cached[dev] == 0) {
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) sms = 132;
    cached[dev] = sms;
  }
  return {cached[dev]};
}

template <class T, int kWarps>
cudaError_t LaunchTyped(const KernelParams& kp, int n_items, cudaStream_t stream) {
  const DeviceLimits lim = GetLimits();
  // Resident CTAs per SM, per device (queried once: it depends only on the kernel and the chip).
  static int cached_per_sm[64] = {0};
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  int per_sm = dev >= 0 && dev < 64 ? cached_per_sm[dev] : 0;
  if (per_sm == 0) {
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, GemvKernel<T, kWarps>, kWarps * 32,
                                                        0);
    if (err != cudaSuccess) return err;
    per_sm = std::max(1, per_sm);
    if (dev >= 0 && dev < 64) cached_per_sm[dev] = per_sm;
  }
  const int grid = std::max(1, std::min(n_items, per_sm * lim.sms));
  GemvKernel<T, kWarps><<<grid, kWarps * 32, 0, stream>>>(kp);
  return cudaGetLastError();
}

template <class T, int kWarps, int kChunks>
cudaError_t LaunchMulti(const KernelParams& kp, int n_items, cudaStream_t stream) {
  const DeviceLimits lim = GetLimits();
  static int cached_per_sm[64] = {0};
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  int per_sm = dev >= 0 && dev < 64 ? cached_per_sm[dev] : 0;
  if (per_sm == 0) {
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, GemvMultiKernel<T, kWarps, kChunks>, kWarps * 32, 0);
    if (err != cudaSuccess) return err;
    per_sm = std::max(1, per_sm);
    if (dev >= 0 && dev < 64) cached_per_sm[dev] = per_sm;
  }
  const int grid = std::max(1, std::min(n_items, per_sm * lim.sms));
  GemvMultiKernel<T, kWarps, kChunks><<<grid, kWarps * 32, 0, stream>>>(kp);
  return cudaGetLastError();
}

template <class T, int kWarps, int kRg = 1, int kChunks = 1>
cudaError_t LaunchPipelined(const KernelParams& kp, int n_items, cudaStream_t stream) {
  using P = Pipe<T, kWarps, kRg, kChunks>;
  const DeviceLimits lim = GetLimits();
  static int cached_per_sm[64] = {0};
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  int per_sm = dev >= 0 && dev < 64 ? cached_per_sm[dev] : 0;
  if (per_sm == 0) {
    err = cudaFuncSetAttribute(GemvPipelinedKernel<T, kWarps, kRg, kChunks>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize, P::kSmemBytes);
    if (err != cudaSuccess) return err;
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, GemvPipelinedKernel<T, kWarps, kRg, kChunks>, kWarps * 32, P::kSmemBytes);
    if (err != cudaSuccess) return err;
    per_sm = std::max(1, per_sm);
    if (dev >= 0 && dev < 64) cached_per_sm[dev] = per_sm;
  }
  const int grid = std::max(1, std::min(n_items, per_sm * lim.sms));
  GemvPipelinedKernel<T, kWarps, kRg, kChunks><<<grid, kWarps * 32, P::kSmemBytes, stream>>>(kp);
  return cudaGetLastError();
}

// Which kernel: 0 automatic, 1 split-K, 2 pipelined with 4 warps, 3 pipelined with 8 warps, 4
// split-K over 4 token chunks, 5 / 6 / 7 pipelined over 4 / 4 / 8 token chunks with 4 / 8 / 8
// warps (4-7 only for launches of more than 8 tokens per matrix).
// TRITMOE_GEMV_KERNEL=splitk|pipe4|pipe8|multi|pmulti4x4|pmulti8x4|pmulti8x8 forces one
// (benchmarks); tests call SetGemvKernelForTesting. LaunchForType states the automatic rule.
std::atomic<int> g_kernel_choice{-1};

// A variant picked once per process from an environment variable (benchmarks): the index of its
// value in `names`, or `fallback` when it is unset or names none. *cached keeps the choice (-1:
// not read yet); the tests' setters overwrite it.
int EnvChoice(std::atomic<int>* cached, const char* env, std::initializer_list<const char*> names,
              int fallback) {
  int c = cached->load(std::memory_order_relaxed);
  if (c >= 0) return c;
  c = fallback;
  if (const char* v = std::getenv(env)) {
    int i = 0;
    for (const char* name : names) {
      if (std::strcmp(v, name) == 0) c = i;
      ++i;
    }
  }
  cached->store(c, std::memory_order_relaxed);
  return c;
}

int KernelChoice() {
  return EnvChoice(
      &g_kernel_choice, "TRITMOE_GEMV_KERNEL",
      {"auto", "splitk", "pipe4", "pipe8", "multi", "pmulti4x4", "pmulti8x4", "pmulti8x8"}, 0);
}

// Row groups per warp of the pipelined kernel, per decoder.
template <class T>
struct PipeRowGroups {
  static constexpr int value = 1;
};
// A lean decoder L (Iq1sLean, Iq2xxsLean) with two row groups per warp in the pipelined kernel,
// decoded one after the other (TwoRowGroups<L>) or interleaved through L::ComputeN<2>
// (Interleaved<L>, the default). (For IQ1_S, a variant that multiplied the scales into the two
// live MMA results of one-token items instead of the A operands executed 3% fewer instructions
// but ran no faster, 3% slower with 8 tokens: ncu has the L1/shared pipe, i.e. the lookups' bank
// conflicts, at 72% and issue at 60%.)
template <class L>
struct TwoRowGroups : L {};
template <class L>
struct Interleaved : L {};
template <class L>
struct PipeRowGroups<TwoRowGroups<L>> {
  static constexpr int value = 2;
};
template <class L>
struct PipeRowGroups<Interleaved<L>> {
  static constexpr int value = 2;
};
template <class L>
struct PairedCompute<Interleaved<L>> {
  static constexpr bool value = true;
};

// IQ1_S decoder: 0 lean, two row groups per warp decoded interleaved when pipelined
// (Interleaved<Iq1sLean>); 1 nibble (Iq1s, the first one; kept for comparisons); 2 lean, one row
// group per warp (Iq1sLean); 3 lean, two row groups per warp one after the other
// (TwoRowGroups<Iq1sLean>).
// TRITMOE_IQ1S_DECODER=lean|nibble|lean1|lean2 picks one (benchmarks); tests call
// SetIq1sDecoderForTesting.
std::atomic<int> g_iq1s_decoder{-1};

int Iq1sDecoder() {
  return EnvChoice(&g_iq1s_decoder, "TRITMOE_IQ1S_DECODER", {"lean", "nibble", "lean1", "lean2"},
                   0);
}

// IQ2_XXS decoder: 0 lean, two row groups per warp decoded interleaved when pipelined
// (Interleaved<Iq2xxsLean>, the default: bit-identical to the first on an H200, quant_gemv_test,
// and 1.09x (one matrix) to 1.36x (64 experts) faster, docs/PERF.md); 1 the first one (Iq2xxs);
// 2 lean, one row group per warp (Iq2xxsLean); 3 lean, two row groups per warp one after the
// other (TwoRowGroups<Iq2xxsLean>).
// TRITMOE_IQ2XXS_DECODER=new|old|lean1|lean2 picks one (benchmarks); tests call
// SetIq2xxsDecoderForTesting.
std::atomic<int> g_iq2xxs_decoder{-1};

int Iq2xxsDecoder() {
  return EnvChoice(&g_iq2xxs_decoder, "TRITMOE_IQ2XXS_DECODER", {"new", "old", "lean1", "lean2"},
                   0);
}

// chunked: whether the automatic choice may take the multi-chunk kernels (LaunchGemv).
template <class T>
cudaError_t LaunchForType(const KernelParams& kp, bool chunked, cudaStream_t stream) {
  const int sms = GetLimits().sms;
  const int per_item = kp.n_experts * kp.max_chunks;
  constexpr int kRg = PipeRowGroups<T>::value;
  const int items8 = per_item * ((kp.n_rg + 8 * kRg - 1) / (8 * kRg));
  const int items4 = per_item * ((kp.n_rg + 4 * kRg - 1) / (4 * kRg));
  const int choice = KernelChoice();
  const int target_warps = 24 * sms;
  if (kp.max_chunks > 1 && (chunked || choice != 0)) {
    // More than 8 tokens per matrix (prefill, large batches): the pipelined kernel over 4 or 8
    // chunks per item when that leaves a CTA per SM (grouped experts, tall matrices): 1.2-1.9x
    // the one-chunk kernels at 16-64 tokens per expert on an H200 (docs/PERF.md), 8 chunks only
    // from 64 tokens on.
    auto items = [&](int warps, int chunks) {
      return kp.n_experts * ((kp.max_chunks + chunks - 1) / chunks) *
             ((kp.n_rg + warps - 1) / warps);
    };
    if (choice == 5) return LaunchPipelined<T, 4, 1, 4>(kp, items(4, 4), stream);
    if (choice == 7 || (choice == 0 && kp.max_chunks >= 8 && items(8, 8) >= sms)) {
      return LaunchPipelined<T, 8, 1, 8>(kp, items(8, 8), stream);
    }
    if (choice == 6 || (choice == 0 && items(8, 4) >= sms)) {
      return LaunchPipelined<T, 8, 1, 4>(kp, items(8, 4), stream);
    }
  }
  // More than 8 tokens per matrix and few items (dense matrices of few rows): split-K, one weight
  // read (and, for the lookup-decoded types, one decode) for up to 32 tokens.
  // (The 4.5+ bpw types took it before the pairs hint existed; unchanged for them.)
  if (kp.max_chunks > 1 && ((choice == 0 && (chunked || T::kTileBytes > 1056)) || choice == 4)) {
    const int items = kp.n_experts * ((kp.max_chunks + 3) / 4) * kp.n_rg;
    if (items * 4 >= target_warps || kp.nkb <= 4) return LaunchMulti<T, 4, 4>(kp, items, stream);
    if (items * 8 >= target_warps || kp.nkb <= 8) return LaunchMulti<T, 8, 4>(kp, items, stream);
    return LaunchMulti<T, 16, 4>(kp, items, stream);
  }
  // The pipelined kernel is for the small (low-bit) tiles; the 4.5+ bpw types already stream at
  // 70-100% of HBM with the register-prefetch kernel.
  if constexpr (T::kTileBytes <= 1056) {
    // 4 warps by default: in the model's routed-expert launches (8..220 active experts of 256)
    // pipe4 beat pipe8 by 5-15% on an H200 (docs/PERF.md).
    if (choice == 3) return LaunchPipelined<T, 8, kRg>(kp, items8, stream);
    if (choice == 2 || (choice == 0 && items4 >= sms)) {
      return LaunchPipelined<T, 4, kRg>(kp, items4, stream);
    }
    // Too few items for a CTA per SM with kRg row groups per warp (e.g. gate/up of the 8 experts
    // of a batch-1 decode step): one row group per warp still streams better than split-K.
    if constexpr (kRg > 1) {
      const int items4_one = per_item * ((kp.n_rg + 3) / 4);
      if (choice == 0 && items4_one >= sms) {
        return LaunchPipelined<T, 4, 1>(kp, items4_one, stream);
      }
    }
  }
  // Split-K: more warps per item when there are few items, so that enough warps stream.
  const int n_items = per_item * kp.n_rg;
  if (n_items * 4 >= target_warps || kp.nkb <= 4) return LaunchTyped<T, 4>(kp, n_items, stream);
  if (n_items * 8 >= target_warps || kp.nkb <= 8) return LaunchTyped<T, 8>(kp, n_items, stream);
  return LaunchTyped<T, 16>(kp, n_items, stream);
}

// Decoder variant `choice` of one type (quant_gemv_launch.h's numbering): 0 lean with two row
// groups per warp decoded interleaved, 1 the first decoder, 2 lean with one row group per warp,
// 3 lean with two one after the other.
template <class Lean, class First>
cudaError_t LaunchDecoder(int choice, const KernelParams& kp, bool chunked, cudaStream_t stream) {
  switch (choice) {
    case 1:
      return LaunchForType<First>(kp, chunked, stream);
    case 2:
      return LaunchForType<Lean>(kp, chunked, stream);
    case 3:
      return LaunchForType<TwoRowGroups<Lean>>(kp, chunked, stream);
    default:
      return LaunchForType<Interleaved<Lean>>(kp, chunked, stream);
  }
}

}  // namespace

void SetGemvKernelForTesting(int choice) { g_kernel_choice.store(choice); }
void SetIq1sDecoderForTesting(int choice) { g_iq1s_decoder.store(choice); }
void SetIq2xxsDecoderForTesting(int choice) { g_iq2xxs_decoder.store(choice); }

cudaError_t LaunchQuantizeActivations(const float* x, int64_t n_rows, int cols, uint8_t* act,
                                      cudaStream_t stream) {
  if (n_rows <= 0) return cudaSuccess;
  const int64_t warps = n_rows * (cols / 256);
  const int threads = 256;
  const int64_t blocks = (warps * 32 + threads - 1) / threads;
  QuantizeActKernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(x, n_rows, cols, act);
  return cudaGetLastError();
}

cudaError_t LaunchQuantizeSwiGlu(const float* gu, int64_t n_rows, int n_ff, uint8_t* act,
                                 cudaStream_t stream) {
  if (n_rows <= 0) return cudaSuccess;
  if (n_ff <= 0 || n_ff % 256 != 0) return cudaErrorInvalidValue;
  const int64_t warps = n_rows * (n_ff / 256);
  const int threads = 256;
  const int64_t blocks = (warps * 32 + threads - 1) / threads;
  QuantizeSwiGluKernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(gu, n_rows, n_ff,
                                                                              act);
  return cudaGetLastError();
}

cudaError_t LaunchGemv(const GemvLaunch& g, cudaStream_t stream) {
  KernelParams kp;
  kp.w = static_cast<const uint8_t*>(g.w);
  kp.expert_stride = g.expert_stride;
  kp.rows = g.rows;
  kp.nkb = g.cols / kTileCols;
  kp.n_rg = (g.rows + kTileRows - 1) / kTileRows;
  kp.n_experts = g.offsets != nullptr ? g.n_experts : 1;
  const int max_tokens = g.offsets != nullptr ? g.max_tokens_per_expert : g.n_tokens;
  kp.max_chunks = (max_tokens + 7) / 8;
  kp.n_tokens = g.n_tokens;
  kp.offsets = g.offsets;
  kp.x_rows = g.x_rows;
  kp.y_rows = g.y_rows;
  kp.expert_slot = g.offsets != nullptr ? g.expert_slot : nullptr;
  kp.act = g.act;
  kp.y = g.y;
  kp.y_stride = g.y_stride;
  if (kp.max_chunks <= 0 || kp.n_rg <= 0 || kp.nkb <= 0) return cudaSuccess;
  // Grouped launches with fewer than 8 pairs per expert on average (decode batches, where
  // max_tokens_per_expert is only a bound) keep the one-chunk kernels.
  const bool chunked =
      g.offsets == nullptr || g.total_pairs <= 0 || g.total_pairs >= int64_t{8} * g.n_experts;
  switch (g.type_id) {
    case kTypeIQ1_S:
      return LaunchDecoder<Iq1sLean, Iq1s>(Iq1sDecoder(), kp, chunked, stream);
    case kTypeTQ1_0:
      return LaunchForType<Tq1>(kp, chunked, stream);
    case kTypeTQ2_0:
      return LaunchForType<Tq2>(kp, chunked, stream);
    case kTypeIQ2_XXS:
      return LaunchDecoder<Iq2xxsLean, Iq2xxs>(Iq2xxsDecoder(), kp, chunked, stream);
    case kTypeQ4_K:
      return LaunchForType<Q4k>(kp, chunked, stream);
    case kTypeQ6_K:
      return LaunchForType<Q6k>(kp, chunked, stream);
    case kTypeQ8_0:
      return LaunchForType<Q8>(kp, chunked, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace tritmoe::gpu_internal
