// Absorbed MLA over the latent cache (mla_attention.h). Heads are processed in groups of HG per
// CTA so that a cached row, read once per warp, serves HG query heads; the cache type is a
// template parameter of the element decoder. Quantization on write repeats experts/quantize.cc's
// Q8_0 / Q4_0 reference code operation by operation.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "runtime/gpu/mla_attention.h"

namespace tritmoe::gpu {
namespace {

constexpr uint32_t kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ8_0 = 8;

__device__ __forceinline__ float LoadHalf(const uint8_t* p) {
  return __half2float(*reinterpret_cast<const __half*>(p));
}

template <uint32_t kType>
__device__ __forceinline__ float CacheElem(const uint8_t* row, int i) {
  if constexpr (kType == kF32) {
    return reinterpret_cast<const float*>(row)[i];
  } else if constexpr (kType == kF16) {
    return LoadHalf(row + 2 * i);
  } else if constexpr (kType == kQ8_0) {
    const uint8_t* b = row + (i >> 5) * 34;
    return __fmul_rn(LoadHalf(b), static_cast<float>(static_cast<int8_t>(b[2 + (i & 31)])));
  } else {
    const uint8_t* b = row + (i >> 5) * 18;
    const int j = i & 31;
    const uint8_t byte = b[2 + (j & 15)];
    const int q = j < 16 ? (byte & 15) : (byte >> 4);
    return __fmul_rn(static_cast<float>(q - 8), LoadHalf(b));
  }
}

// ---------------------------------------------------------------------------------------------
// Cache write.

constexpr int kWriteThreads = 256;

__global__ void __launch_bounds__(kWriteThreads) LatentWriteKernel(const LatentWriteParams p) {
  extern __shared__ float vals[];  // [padded]
  __shared__ double part[kWriteThreads / 32];
  __shared__ float scale_s;
  const int t = blockIdx.x;
  const float* kv = p.kv + static_cast<int64_t>(t) * p.kv_stride;
  double sum = 0.0;
  for (int i = threadIdx.x; i < p.R; i += kWriteThreads) {
    const double v = kv[i];
    sum += v * v;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, o);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int w = 0; w < kWriteThreads / 32; ++w) total += part[w];
    const float mean = static_cast<float>(total / static_cast<double>(p.R));
    scale_s = 1.0f / sqrtf(__fadd_rn(mean, p.eps));
  }
  __syncthreads();
  const float scale = scale_s;
  const int L = p.R + p.n_rot;
  for (int i = threadIdx.x; i < p.padded; i += kWriteThreads) {
    float v = 0.0f;
    if (i < p.R) {
      v = __fmul_rn(__fmul_rn(kv[i], scale), p.gain[i]);
    } else if (i < L) {
      v = kv[i];
    }
    vals[i] = v;
  }
  __syncthreads();

  const AttnRow row = p.rows[t];
  uint8_t* dst = const_cast<uint8_t*>(row.cache) + p.layer * row.layer_stride +
                 static_cast<int64_t>(row.pos) * p.row_bytes;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  switch (p.type_id) {
    case kF32:
      for (int i = threadIdx.x; i < p.padded; i += kWriteThreads) {
        reinterpret_cast<float*>(dst)[i] = vals[i];
      }
      break;
    case kF16:
      for (int i = threadIdx.x; i < p.padded; i += kWriteThreads) {
        reinterpret_cast<__half*>(dst)[i] = __float2half_rn(vals[i]);
      }
      break;
    case kQ8_0:
      for (int b = warp; b < p.padded / 32; b += kWriteThreads / 32) {
        const float v = vals[b * 32 + lane];
        float amax = fabsf(v);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, o));
        const float d = __fdiv_rn(amax, 127.0f);
        const float id = d != 0.0f ? __fdiv_rn(1.0f, d) : 0.0f;
        uint8_t* blk = dst + b * 34;
        blk[2 + lane] = static_cast<uint8_t>(static_cast<int8_t>(roundf(__fmul_rn(v, id))));
        if (lane == 0) *reinterpret_cast<__half*>(blk) = __float2half_rn(d);
      }
      break;
    case kQ4_0:
      for (int b = warp; b < p.padded / 32; b += kWriteThreads / 32) {
        const float v = vals[b * 32 + lane];
        // The first element of largest magnitude, keeping its sign.
        float amax = fabsf(v);
        int idx = lane;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
          const float oa = __shfl_xor_sync(0xFFFFFFFFu, amax, o);
          const int oi = __shfl_xor_sync(0xFFFFFFFFu, idx, o);
          if (oa > amax || (oa == amax && oi < idx)) {
            amax = oa;
            idx = oi;
          }
        }
        const float mx = __shfl_sync(0xFFFFFFFFu, v, idx);
        const float d = __fdiv_rn(mx, -8.0f);
        const float id = d != 0.0f ? __fdiv_rn(1.0f, d) : 0.0f;
        const int xi = min(15, static_cast<int>(__fadd_rn(__fmul_rn(v, id), 8.5f)));
        const int hi = __shfl_down_sync(0xFFFFFFFFu, xi, 16);
        uint8_t* blk = dst + b * 18;
        if (lane < 16) blk[2 + lane] = static_cast<uint8_t>(xi | (hi << 4));
        if (lane == 0) *reinterpret_cast<__half*>(blk) = __float2half_rn(d);
      }
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// Scores, softmax, weighted sum.

// Keys per CTA of the scores kernel: few for a handful of query rows (more CTAs in flight), 64
// for many (the queries are staged once per 64 keys).
__host__ __device__ constexpr int KeysPerCta(int n_tokens) { return n_tokens <= 4 ? 16 : 64; }
constexpr int kScoreThreads = 256;
constexpr int kMaxPerLane = 32;  // cached values per lane: L <= 1024

// A warp's share of one cached row: element lane + 32 u in k[u] (0 beyond L). All loads are
// issued before any is used.
template <uint32_t kType>
__device__ __forceinline__ void LoadRow(const uint8_t* row, int L, int lane,
                                        float (&k)[kMaxPerLane]) {
#pragma unroll
  for (int u = 0; u < kMaxPerLane; ++u) {
    const int i = lane + 32 * u;
    k[u] = i < L ? CacheElem<kType>(row, i) : 0.0f;
  }
}

template <uint32_t kType, int HG>
__global__ void __launch_bounds__(kScoreThreads) ScoresKernel(const MlaParams p) {
  extern __shared__ float q_s[];  // [HG][L]
  const int keys_per_cta = KeysPerCta(p.n_tokens);
  const int t = blockIdx.z, h0 = blockIdx.y * HG, j_begin = blockIdx.x * keys_per_cta;
  const AttnRow row = p.rows[t];
  const int n_keys = row.pos + 1;
  if (j_begin >= n_keys) return;
  const float* q = p.qa + (static_cast<int64_t>(t) * p.n_heads + h0) * p.L;
  for (int i = threadIdx.x; i < HG * p.L; i += kScoreThreads) q_s[i] = q[i];
  __syncthreads();
  const uint8_t* layer = row.cache + p.layer * row.layer_stride;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int j_end = min(n_keys, j_begin + keys_per_cta);
  // Each warp takes two keys per round (8 warps: 16 keys); both rows' loads are issued before
  // the math.
  for (int j0 = j_begin; j0 < j_end; j0 += 2 * (kScoreThreads / 32)) {
    float k[2][kMaxPerLane];
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      const int j = j0 + warp + b * (kScoreThreads / 32);
      if (j < j_end) {
        LoadRow<kType>(layer + static_cast<int64_t>(j) * p.row_bytes, p.L, lane, k[b]);
      }
    }
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      const int j = j0 + warp + b * (kScoreThreads / 32);
      if (j >= j_end) break;
      float part[HG];
#pragma unroll
      for (int h = 0; h < HG; ++h) part[h] = 0.0f;
#pragma unroll
      for (int u = 0; u < kMaxPerLane; ++u) {
        const int i = lane + 32 * u;
        if (i < p.L) {
#pragma unroll
          for (int h = 0; h < HG; ++h) part[h] = fmaf(q_s[h * p.L + i], k[b][u], part[h]);
        }
      }
#pragma unroll
      for (int h = 0; h < HG; ++h) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) part[h] += __shfl_xor_sync(0xFFFFFFFFu, part[h], o);
      }
      if (lane == 0) {
#pragma unroll
        for (int h = 0; h < HG; ++h) {
          p.scores[(static_cast<int64_t>(t) * p.n_heads + h0 + h) * p.max_keys + j] = part[h];
        }
      }
    }
  }
}

constexpr int kSoftmaxThreads = 256;

__device__ float BlockReduce(float v, bool is_max, float* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xFFFFFFFFu, v, o);
    v = is_max ? fmaxf(v, other) : v + other;
  }
  __syncthreads();  // red is free (a previous reduction has been read)
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < kSoftmaxThreads / 32; ++w) r = is_max ? fmaxf(r, red[w]) : r + red[w];
  return r;
}

__global__ void __launch_bounds__(kSoftmaxThreads) SoftmaxKernel(const MlaParams p) {
  __shared__ float red[kSoftmaxThreads / 32];
  const int64_t r = blockIdx.x;  // t * H + h
  const int t = static_cast<int>(r / p.n_heads);
  const int n = p.rows[t].pos + 1;
  float* s = p.scores + r * p.max_keys;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < n; j += kSoftmaxThreads) {
    const float v = __fmul_rn(s[j], p.kq_scale);
    s[j] = v;
    mx = fmaxf(mx, v);
  }
  mx = BlockReduce(mx, true, red);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < n; j += kSoftmaxThreads) {
    const float e = expf(__fsub_rn(s[j], mx));
    s[j] = e;
    sum += e;
  }
  sum = BlockReduce(sum, false, red);
  const float inv = __fdiv_rn(1.0f, sum);
  for (int j = threadIdx.x; j < n; j += kSoftmaxThreads) s[j] = __fmul_rn(s[j], inv);
}

constexpr int kSumThreads = 128;
constexpr int kSumKeys = 32;

template <uint32_t kType, int HG>
__global__ void __launch_bounds__(kSumThreads) WeightedSumKernel(const MlaParams p) {
  __shared__ float p_s[HG][kSumKeys];
  const int t = blockIdx.z, h0 = blockIdx.y * HG;
  const int c = blockIdx.x * kSumThreads + threadIdx.x;
  const AttnRow row = p.rows[t];
  const int n = row.pos + 1;
  const uint8_t* layer = row.cache + p.layer * row.layer_stride;
  const float* prob = p.scores + (static_cast<int64_t>(t) * p.n_heads + h0) * p.max_keys;
  float acc[HG];
#pragma unroll
  for (int h = 0; h < HG; ++h) acc[h] = 0.0f;
  for (int j0 = 0; j0 < n; j0 += kSumKeys) {
    __syncthreads();
#pragma unroll 4
    for (int i = threadIdx.x; i < HG * kSumKeys; i += kSumThreads) {
      const int h = i / kSumKeys, jj = i % kSumKeys;
      p_s[h][jj] = j0 + jj < n ? prob[static_cast<int64_t>(h) * p.max_keys + j0 + jj] : 0.0f;
    }
    __syncthreads();
    if (c < p.R) {
      // All of the chunk's loads first, then the math (one memory round trip per chunk).
      float k[kSumKeys];
#pragma unroll
      for (int jj = 0; jj < kSumKeys; ++jj) {
        k[jj] = j0 + jj < n
                    ? CacheElem<kType>(layer + static_cast<int64_t>(j0 + jj) * p.row_bytes, c)
                    : 0.0f;
      }
#pragma unroll
      for (int jj = 0; jj < kSumKeys; ++jj) {
#pragma unroll
        for (int h = 0; h < HG; ++h) acc[h] = fmaf(p_s[h][jj], k[jj], acc[h]);
      }
    }
  }
  if (c < p.R) {
#pragma unroll
    for (int h = 0; h < HG; ++h) {
      p.o_lat[(static_cast<int64_t>(t) * p.n_heads + h0 + h) * p.R + c] = acc[h];
    }
  }
}

__global__ void HeadPairsKernel(int n_tokens, int n_heads, int32_t* offsets, int32_t* rows) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n_heads) offsets[i] = i * n_tokens;
  if (i < n_tokens * n_heads) {
    const int h = i / n_tokens, t = i % n_tokens;
    rows[i] = t * n_heads + h;
  }
}

// Heads per CTA: the largest of 16, 8, 4, 2, 1 that divides H and keeps the queries in 48 KB.
int HeadGroup(int n_heads, int L) {
  for (int hg = 16; hg > 1; hg /= 2) {
    if (n_heads % hg == 0 && hg * L * 4 <= 48 * 1024) return hg;
  }
  return 1;
}

template <uint32_t kType, int HG>
cudaError_t LaunchScoresT(const MlaParams& p, cudaStream_t stream) {
  const int kpc = KeysPerCta(p.n_tokens);
  const dim3 grid((p.max_keys + kpc - 1) / kpc, p.n_heads / HG, p.n_tokens);
  ScoresKernel<kType, HG><<<grid, kScoreThreads, HG * p.L * sizeof(float), stream>>>(p);
  return cudaGetLastError();
}

template <uint32_t kType, int HG>
cudaError_t LaunchSumT(const MlaParams& p, cudaStream_t stream) {
  const dim3 grid((p.R + kSumThreads - 1) / kSumThreads, p.n_heads / HG, p.n_tokens);
  WeightedSumKernel<kType, HG><<<grid, kSumThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

// Dispatches kernel K<type, HG> for the runtime type and head group.
template <template <uint32_t, int> class K, uint32_t kType>
cudaError_t ByGroup(const MlaParams& p, cudaStream_t stream) {
  switch (HeadGroup(p.n_heads, p.L)) {
    case 16:
      return K<kType, 16>::Run(p, stream);
    case 8:
      return K<kType, 8>::Run(p, stream);
    case 4:
      return K<kType, 4>::Run(p, stream);
    case 2:
      return K<kType, 2>::Run(p, stream);
    default:
      return K<kType, 1>::Run(p, stream);
  }
}
template <template <uint32_t, int> class K>
cudaError_t ByType(const MlaParams& p, cudaStream_t stream) {
  switch (p.type_id) {
    case kF32:
      return ByGroup<K, kF32>(p, stream);
    case kF16:
      return ByGroup<K, kF16>(p, stream);
    case kQ8_0:
      return ByGroup<K, kQ8_0>(p, stream);
    case kQ4_0:
      return ByGroup<K, kQ4_0>(p, stream);
    default:
      return cudaErrorInvalidValue;
  }
}
template <uint32_t kType, int HG>
struct ScoresOp {
  static cudaError_t Run(const MlaParams& p, cudaStream_t s) {
    return LaunchScoresT<kType, HG>(p, s);
  }
};
template <uint32_t kType, int HG>
struct SumOp {
  static cudaError_t Run(const MlaParams& p, cudaStream_t s) { return LaunchSumT<kType, HG>(p, s); }
};

bool BadShape(const MlaParams& p) {
  return p.n_heads <= 0 || p.R <= 0 || p.L < p.R || p.max_keys <= 0 || p.n_tokens > 65535 ||
         p.L > 32 * kMaxPerLane;
}

}  // namespace

bool LatentCacheSupports(uint32_t type_id) {
  return type_id == kF32 || type_id == kF16 || type_id == kQ8_0 || type_id == kQ4_0;
}

cudaError_t LaunchLatentWrite(const LatentWriteParams& p, cudaStream_t stream) {
  if (p.n_tokens <= 0) return cudaSuccess;
  if (!LatentCacheSupports(p.type_id) || p.padded < p.R + p.n_rot || p.padded % 32 != 0 ||
      p.padded * 4 > 48 * 1024) {
    return cudaErrorInvalidValue;
  }
  LatentWriteKernel<<<p.n_tokens, kWriteThreads, p.padded * sizeof(float), stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchMlaScores(const MlaParams& p, cudaStream_t stream) {
  if (p.n_tokens <= 0) return cudaSuccess;
  if (BadShape(p)) return cudaErrorInvalidValue;
  return ByType<ScoresOp>(p, stream);
}

cudaError_t LaunchMlaSoftmax(const MlaParams& p, cudaStream_t stream) {
  if (p.n_tokens <= 0) return cudaSuccess;
  if (BadShape(p)) return cudaErrorInvalidValue;
  SoftmaxKernel<<<p.n_tokens * p.n_heads, kSoftmaxThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchMlaWeightedSum(const MlaParams& p, cudaStream_t stream) {
  if (p.n_tokens <= 0) return cudaSuccess;
  if (BadShape(p)) return cudaErrorInvalidValue;
  return ByType<SumOp>(p, stream);
}

cudaError_t LaunchHeadPairs(int n_tokens, int n_heads, int32_t* offsets, int32_t* rows,
                            cudaStream_t stream) {
  const int n = n_tokens * n_heads + 1;
  if (n_tokens <= 0) return cudaSuccess;
  HeadPairsKernel<<<(n + 255) / 256, 256, 0, stream>>>(n_tokens, n_heads, offsets, rows);
  return cudaGetLastError();
}

}  // namespace tritmoe::gpu
