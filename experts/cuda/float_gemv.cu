// Float-activation GEMV over GGUF rows (float_gemv.h). A group of G lanes (G = 1..32, a power of
// two, about the number of 32-column blocks of a row) owns one output row of one matrix and up to
// 8 pairs; each lane decodes whole 32-column blocks to float registers and multiplies them with
// the 8 activation rows, and the group reduces with shuffles. The CTA's (matrix, 8-pair chunk)
// comes from blockIdx.x and its rows from blockIdx.y; CTAs of chunks without pairs exit at once,
// so a grouped launch over many idle experts costs little.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "experts/cuda/float_gemv.h"

namespace tritmoe {
namespace {

constexpr uint32_t kF32 = 0, kF16 = 1, kQ8_0 = 8, kBF16 = 30;

// Decoders of one 32-column block of a row into float registers.
struct DecF32 {
  static constexpr int kBlockBytes = 128;
  __device__ static void Load(const uint8_t* row, int b, float (&w)[32]) {
    const float4* p = reinterpret_cast<const float4*>(row + b * kBlockBytes);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float4 v = __ldg(p + i);
      w[4 * i] = v.x;
      w[4 * i + 1] = v.y;
      w[4 * i + 2] = v.z;
      w[4 * i + 3] = v.w;
    }
  }
};

struct DecF16 {
  static constexpr int kBlockBytes = 64;
  __device__ static void Load(const uint8_t* row, int b, float (&w)[32]) {
    const uint4* p = reinterpret_cast<const uint4*>(row + b * kBlockBytes);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint4 v = __ldg(p + i);
      const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&words[j]));
        w[8 * i + 2 * j] = f.x;
        w[8 * i + 2 * j + 1] = f.y;
      }
    }
  }
};

struct DecBF16 {
  static constexpr int kBlockBytes = 64;
  __device__ static void Load(const uint8_t* row, int b, float (&w)[32]) {
    const uint4* p = reinterpret_cast<const uint4*>(row + b * kBlockBytes);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint4 v = __ldg(p + i);
      const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        w[8 * i + 2 * j] = __uint_as_float(words[j] << 16);
        w[8 * i + 2 * j + 1] = __uint_as_float(words[j] & 0xFFFF0000u);
      }
    }
  }
};

// Q8_0: {fp16 d, int8 q[32]} in 34 bytes (2-byte aligned): weight = d * q.
struct DecQ8 {
  static constexpr int kBlockBytes = 34;
  __device__ static void Load(const uint8_t* row, int b, float (&w)[32]) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(row + b * kBlockBytes);
    const float d = __half2float(__ushort_as_half(__ldg(p)));
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const uint16_t v = __ldg(p + 1 + i);
      w[2 * i] = d * static_cast<float>(static_cast<int8_t>(v & 0xFF));
      w[2 * i + 1] = d * static_cast<float>(static_cast<int8_t>(v >> 8));
    }
  }
};

// One CTA's chunk of up to 8 pairs of matrix e: pairs start .. start + nv - 1 and their
// activation rows. nv <= 0: the chunk is empty (uniform across the CTA).
struct PairChunk {
  int start = 0, nv = 0;
  const float* xr[8];
};
__device__ __forceinline__ PairChunk LoadChunk(const FloatGemvParams& p, int e, int ch) {
  PairChunk c;
  int begin = 0, end = p.n_pairs;
  if (p.offsets != nullptr) {
    begin = __ldg(p.offsets + e);
    end = __ldg(p.offsets + e + 1);
  }
  c.start = begin + 8 * ch;
  c.nv = min(8, end - c.start);
#pragma unroll
  for (int s = 0; s < 8; ++s) {
    c.xr[s] = nullptr;
    if (s < c.nv) {
      const int64_t xi = p.x_rows != nullptr ? __ldg(p.x_rows + c.start + s) : c.start + s;
      c.xr[s] = p.x + xi * p.x_stride;
    }
  }
  return c;
}

// acc[s] += the 32 weights w . the 32 activations of row s at xr[s] + offset (shared memory when
// kShared, else read through the read-only cache), for s < nv.
template <bool kShared>
__device__ __forceinline__ void BlockDot(const float (&w)[32], const float* const (&xr)[8], int nv,
                                         int64_t offset, float (&acc)[8]) {
#pragma unroll
  for (int s = 0; s < 8; ++s) {
    if (s < nv) {
      const float4* xp = reinterpret_cast<const float4*>(xr[s] + offset);
      float a = acc[s];
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float4 v = kShared ? xp[i] : __ldg(xp + i);
        a = fmaf(w[4 * i], v.x, a);
        a = fmaf(w[4 * i + 1], v.y, a);
        a = fmaf(w[4 * i + 2], v.z, a);
        a = fmaf(w[4 * i + 3], v.w, a);
      }
      acc[s] = a;
    }
  }
}

// kStage: the CTA's activation rows are first copied to shared memory (narrow matrices such as
// attn_k_b, whose rows would otherwise be re-read from L1/L2 by every output row).
template <class D, int G, bool kStage>
__global__ void __launch_bounds__(256)
    FloatGemvKernel(const FloatGemvParams p, int max_chunks, int64_t row_bytes) {
  extern __shared__ float4 xs4[];  // kStage: [8][cols] floats
  const int gl = threadIdx.x % G;
  const int row = blockIdx.y * (blockDim.x / G) + threadIdx.x / G;
  const int e = blockIdx.x / max_chunks;
  PairChunk chunk = LoadChunk(p, e, blockIdx.x % max_chunks);
  const int start = chunk.start, nv = chunk.nv;
  if (nv <= 0) return;  // uniform across the CTA
  const bool active = row < p.rows;
  const float*(&xr)[8] = chunk.xr;
  // Staged rows keep each 32-column block 36 floats apart, so that the G lanes of a row group,
  // which read different blocks of the same row at once, hit different shared-memory banks.
  constexpr int kBlockStride = kStage ? 36 : 32;
  if constexpr (kStage) {
    const int c4 = p.cols / 4, row4 = p.cols / 32 * (kBlockStride / 4);
    for (int i = threadIdx.x; i < nv * c4; i += blockDim.x) {
      const int s = i / c4, c = i % c4;
      const int64_t xi = p.x_rows != nullptr ? __ldg(p.x_rows + start + s) : start + s;
      xs4[s * row4 + (c / 8) * (kBlockStride / 4) + c % 8] =
          __ldg(reinterpret_cast<const float4*>(p.x + xi * p.x_stride) + c);
    }
    __syncthreads();
#pragma unroll
    for (int s = 0; s < 8; ++s) xr[s] = reinterpret_cast<const float*>(xs4 + s * row4);
  }
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  if (active) {
    const uint8_t* wrow = static_cast<const uint8_t*>(p.w) + e * p.expert_stride +
                          static_cast<int64_t>(row) * row_bytes;
    const int nb = p.cols / 32;
#pragma unroll 2
    for (int b = gl; b < nb; b += G) {
      float w[32];
      D::Load(wrow, b, w);
      BlockDot<kStage>(w, xr, nv, int64_t{b} * kBlockStride, acc);
    }
  }
#pragma unroll
  for (int o = G / 2; o > 0; o >>= 1) {
#pragma unroll
    for (int s = 0; s < 8; ++s) acc[s] += __shfl_xor_sync(0xFFFFFFFFu, acc[s], o);
  }
  if (active && gl == 0) {
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      if (s < nv) {
        const int64_t yi = p.y_rows != nullptr ? __ldg(p.y_rows + start + s) : start + s;
        p.y[yi * p.y_stride + row] = acc[s];
      }
    }
  }
}

constexpr int kStageMaxCols = 1024;  // 8 rows x 1152 floats (padded) = 36 KB of shared memory

// Few output rows of long rows (the F32 router, 256 x 7168, at a handful of tokens): a CTA per
// output row whose kRowThreads threads split the row's 32-column blocks, so that all of a row's
// loads are in flight at once. The lane-group kernel leaves ~2 warps per SM there, each waiting
// on one load per iteration (router at batch 1 on an H200: 14.8 -> 10.0 us). The partial sums are
// reduced in a fixed order: deterministic. Only for one chunk of at most 8 activation rows: at 16
// and 64 tokens the lane-group kernel measured faster (router 51 vs 57 us, 140 vs 149 us).
constexpr int kRowThreads = 256;

template <class D>
__global__ void __launch_bounds__(kRowThreads)
    FloatGemvRowKernel(const FloatGemvParams p, int max_chunks, int64_t row_bytes) {
  __shared__ float part[kRowThreads / 32][8];
  const int row = blockIdx.y;
  const int e = blockIdx.x / max_chunks;
  const PairChunk chunk = LoadChunk(p, e, blockIdx.x % max_chunks);
  const int start = chunk.start, nv = chunk.nv;
  if (nv <= 0) return;  // uniform across the CTA
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const uint8_t* wrow = static_cast<const uint8_t*>(p.w) + e * p.expert_stride +
                        static_cast<int64_t>(row) * row_bytes;
  const int nb = p.cols / 32;
  for (int b = threadIdx.x; b < nb; b += kRowThreads) {
    float w[32];
    D::Load(wrow, b, w);
    BlockDot<false>(w, chunk.xr, nv, int64_t{b} * 32, acc);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
#pragma unroll
    for (int s = 0; s < 8; ++s) acc[s] += __shfl_xor_sync(0xFFFFFFFFu, acc[s], o);
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) {
#pragma unroll
    for (int s = 0; s < 8; ++s) part[warp][s] = acc[s];
  }
  __syncthreads();
  if (threadIdx.x < nv) {
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kRowThreads / 32; ++w) sum += part[w][threadIdx.x];
    const int64_t yi =
        p.y_rows != nullptr ? __ldg(p.y_rows + start + threadIdx.x) : start + threadIdx.x;
    p.y[yi * p.y_stride + row] = sum;
  }
}

template <class D, int G>
cudaError_t LaunchG(const FloatGemvParams& p, int max_chunks, cudaStream_t stream) {
  const int64_t items = static_cast<int64_t>(p.n_experts) * max_chunks;
  // Enough CTAs to cover the SMs twice when the launch is small (the F32 router: 256 rows).
  int threads = 256;
  while (threads > 64 && items * ((p.rows + threads / G - 1) / (threads / G)) < 264) threads /= 2;
  const int64_t row_ctas = (p.rows + threads / G - 1) / (threads / G);
  if (row_ctas > 65535 || items > 0x7FFFFFFF) return cudaErrorInvalidValue;
  const int64_t row_bytes = static_cast<int64_t>(p.cols / 32) * D::kBlockBytes;
  const dim3 grid(static_cast<unsigned>(items), static_cast<unsigned>(row_ctas));
  if (p.cols <= kStageMaxCols) {
    FloatGemvKernel<D, G, true><<<grid, threads, 8 * (p.cols / 32) * 36 * sizeof(float), stream>>>(
        p, max_chunks, row_bytes);
  } else {
    FloatGemvKernel<D, G, false><<<grid, threads, 0, stream>>>(p, max_chunks, row_bytes);
  }
  return cudaGetLastError();
}

template <class D>
cudaError_t LaunchD(const FloatGemvParams& p, int max_chunks, cudaStream_t stream) {
  const int nb = p.cols / 32;
  const int64_t items = static_cast<int64_t>(p.n_experts) * max_chunks;
  if (p.cols > kStageMaxCols && nb >= kRowThreads / 2 && p.rows <= 4096 && items == 1) {
    const int64_t row_bytes = static_cast<int64_t>(nb) * D::kBlockBytes;
    const dim3 grid(static_cast<unsigned>(items), static_cast<unsigned>(p.rows));
    FloatGemvRowKernel<D><<<grid, kRowThreads, 0, stream>>>(p, max_chunks, row_bytes);
    return cudaGetLastError();
  }
  if (nb >= 32) return LaunchG<D, 32>(p, max_chunks, stream);
  if (nb >= 16) return LaunchG<D, 16>(p, max_chunks, stream);
  if (nb >= 8) return LaunchG<D, 8>(p, max_chunks, stream);
  if (nb >= 4) return LaunchG<D, 4>(p, max_chunks, stream);
  if (nb >= 2) return LaunchG<D, 2>(p, max_chunks, stream);
  return LaunchG<D, 1>(p, max_chunks, stream);
}

}  // namespace

bool FloatGemvSupports(uint32_t type_id, int64_t cols) {
  const bool type_ok = type_id == kF32 || type_id == kF16 || type_id == kBF16 || type_id == kQ8_0;
  return type_ok && cols > 0 && cols % 32 == 0 && cols <= (int64_t{1} << 30);
}

cudaError_t LaunchFloatGemv(const FloatGemvParams& p, cudaStream_t stream) {
  if (!FloatGemvSupports(p.type_id, p.cols) || p.rows < 0 || p.n_experts < 1 ||
      p.x_stride < p.cols || p.x_stride % 4 != 0 || p.y_stride < p.rows ||
      reinterpret_cast<uintptr_t>(p.x) % 16 != 0) {
    return cudaErrorInvalidValue;
  }
  FloatGemvParams q = p;
  if (q.offsets == nullptr) q.n_experts = 1;  // dense: one matrix, pairs 0..n_pairs-1
  const int max_pairs = q.offsets != nullptr ? q.max_pairs_per_expert : q.n_pairs;
  const int max_chunks = (max_pairs + 7) / 8;
  if (max_chunks <= 0 || q.rows == 0) return cudaSuccess;
  switch (q.type_id) {
    case kF32:
      return LaunchD<DecF32>(q, max_chunks, stream);
    case kF16:
      return LaunchD<DecF16>(q, max_chunks, stream);
    case kBF16:
      return LaunchD<DecBF16>(q, max_chunks, stream);
    case kQ8_0:
      return LaunchD<DecQ8>(q, max_chunks, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace tritmoe
