// Routing kernels (moe_route.h). Route: one warp per token, the scores staged in shared memory;
// top-k by k rounds of a warp arg-max (ties to the lower index, as std::partial_sort with the
// twin's comparator). GroupByExpert: one CTA; counts by shared-memory atomics (their order only
// permutes pairs within an expert), an exclusive scan, then each choice's pair.
#include <cuda_runtime.h>
#include <cub/block/block_scan.cuh>

#include <cmath>
#include <cstdint>

#include "runtime/gpu/moe_route.h"

namespace tritmoe::gpu {
namespace {

constexpr int kRouteWarps = 4;
constexpr int kMaxGroups = 64;
constexpr float kWeightSumClamp = 6.103515625e-5f;  // router.h kMoeWeightSumClamp

// Warp arg-max of (v, i): larger v, then lower i.
__device__ __forceinline__ void WarpArgMax(float& v, int& i) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xFFFFFFFFu, v, o);
    const int oi = __shfl_xor_sync(0xFFFFFFFFu, i, o);
    if (ov > v || (ov == v && oi < i)) {
      v = ov;
      i = oi;
    }
  }
}

// Shared floats one routing warp stages its token's scores in.
__host__ __device__ constexpr int RouteWarpFloats(int n_expert) {
  return 2 * n_expert + kMaxGroups;
}

// One warp routes token t; pr: the warp's RouteWarpFloats(E) shared floats.
__device__ void RouteToken(const RouteParams& p, int t, float* pr, int lane) {
  const int E = p.n_expert;
  float* s = pr + E;
  float* gs = s + E;
  const float* z = p.logits + static_cast<int64_t>(t) * E;

  if (p.gating == kGatingSoftmax) {
    float mx = -INFINITY;
#pragma unroll 8
    for (int e = lane; e < E; e += 32) mx = fmaxf(mx, z[e]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, o));
    double sum = 0.0;
    for (int e = lane; e < E; e += 32) {
      const float v = expf(__fsub_rn(z[e], mx));
      pr[e] = v;
      sum += v;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, o);
    const float inv = static_cast<float>(1.0 / sum);
    for (int e = lane; e < E; e += 32) pr[e] = __fmul_rn(pr[e], inv);
  } else if (p.gating == kGatingSqrtSoftplus) {
    for (int e = lane; e < E; e += 32) {
      const float v = z[e];
      const float sp = v > 0 ? __fadd_rn(v, log1pf(expf(-v))) : log1pf(expf(v));
      pr[e] = sqrtf(sp);
    }
  } else {
#pragma unroll 8
    for (int e = lane; e < E; e += 32) pr[e] = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-z[e])));
  }
#pragma unroll 8
  for (int e = lane; e < E; e += 32) s[e] = p.bias != nullptr ? __fadd_rn(pr[e], p.bias[e]) : pr[e];
  __syncwarp();

  if (p.group_limited) {
    const int gsize = E / p.n_group;
    for (int g = lane; g < p.n_group; g += 32) {
      float best = -INFINITY, second = -INFINITY;
      for (int e = g * gsize; e < (g + 1) * gsize; ++e) {
        if (s[e] > best) {
          second = best;
          best = s[e];
        } else if (s[e] > second) {
          second = s[e];
        }
      }
      gs[g] = __fadd_rn(best, second);
    }
    __syncwarp();
    uint64_t kept = 0;  // every lane computes the same set
    for (int r = 0; r < p.n_group_used; ++r) {
      float bv = -INFINITY;
      int bg = 1 << 30;
      for (int g = 0; g < p.n_group; ++g) {
        if ((kept >> g) & 1) continue;
        if (gs[g] > bv || (gs[g] == bv && g < bg)) {
          bv = gs[g];
          bg = g;
        }
      }
      kept |= uint64_t{1} << bg;
    }
    for (int e = lane; e < E; e += 32) {
      if (!((kept >> (e / gsize)) & 1)) s[e] = -INFINITY;
    }
    __syncwarp();
  }

  int32_t* sel = p.experts + static_cast<int64_t>(t) * p.k;
  for (int j = 0; j < p.k; ++j) {
    float bv = -INFINITY;
    int bi = 1 << 30;
    for (int e = lane; e < E; e += 32) {
      if (s[e] > bv || (s[e] == bv && e < bi)) {
        bv = s[e];
        bi = e;
      }
    }
    WarpArgMax(bv, bi);
    if (lane == 0) sel[j] = bi;
    if ((bi & 31) == lane) s[bi] = -INFINITY;
    __syncwarp();
  }
  if (lane == 0) {
    float* w = p.weights + static_cast<int64_t>(t) * p.k;
    float sum = 0.0f;
    for (int j = 0; j < p.k; ++j) {
      w[j] = pr[sel[j]];
      sum = __fadd_rn(sum, w[j]);
    }
    if (p.weights_norm) {
      const float denom = fmaxf(sum, kWeightSumClamp);
      for (int j = 0; j < p.k; ++j) w[j] = __fdiv_rn(w[j], denom);
    }
    for (int j = 0; j < p.k; ++j) w[j] = __fmul_rn(w[j], p.weights_scale);
  }
}

__global__ void RouteKernel(const RouteParams p) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int t = blockIdx.x * kRouteWarps + warp;
  if (t >= p.n_tokens) return;  // whole warp
  RouteToken(p, t, smem + warp * RouteWarpFloats(p.n_expert), lane);
}

constexpr int kGroupThreads = kMaxRoutedExperts;

using GroupScan = cub::BlockScan<int, kGroupThreads>;
struct GroupShared {
  typename GroupScan::TempStorage scan_tmp;
  int counts[kMaxRoutedExperts];
  int offs[kMaxRoutedExperts];
};

// The whole CTA (kGroupThreads threads) groups p's choices.
__device__ void GroupChoices(const GroupParams& p, GroupShared& sh) {
  auto& counts = sh.counts;
  auto& offs = sh.offs;
  const int E = p.n_expert, P = p.n_tokens * p.k;
  for (int e = threadIdx.x; e < E; e += kGroupThreads) counts[e] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < P; i += kGroupThreads) {
    p.slot_pair[i] = atomicAdd(&counts[p.experts[i]], 1);  // rank within the expert, for now
  }
  __syncthreads();
  const int mine = threadIdx.x < E ? counts[threadIdx.x] : 0;
  int excl = 0;
  GroupScan(sh.scan_tmp).ExclusiveSum(mine, excl);
  if (threadIdx.x < E) {
    offs[threadIdx.x] = excl;
    p.offsets[threadIdx.x] = excl;
    if (threadIdx.x == E - 1) p.offsets[E] = excl + mine;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < P; i += kGroupThreads) {
    const int pos = offs[p.experts[i]] + p.slot_pair[i];
    p.slot_pair[i] = pos;
    p.pair_token[pos] = i / p.k;
  }
}

__global__ void __launch_bounds__(kGroupThreads) GroupKernel(const GroupParams p) {
  __shared__ GroupShared sh;
  GroupChoices(p, sh);
}

// Small batches: routing (a warp per token) and grouping in one CTA, one launch. The grouping's
// shared memory reuses the routing scores' (dead after the barrier): all dynamic, <= 48 KB.
constexpr size_t kFusedRouteSmem = 48 * 1024;

size_t FusedSmemBytes(const RouteParams& p) {
  const size_t route =
      static_cast<size_t>(p.n_tokens) * RouteWarpFloats(p.n_expert) * sizeof(float);
  return route > sizeof(GroupShared) ? route : sizeof(GroupShared);
}

__global__ void __launch_bounds__(kGroupThreads)
    RouteGroupKernel(const RouteParams rp, const GroupParams gp) {
  extern __shared__ __align__(16) float fused_smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (warp < rp.n_tokens) {
    RouteToken(rp, warp, fused_smem + warp * RouteWarpFloats(rp.n_expert), lane);
  }
  __syncthreads();  // the choices (global) are visible to the whole CTA after the barrier
  GroupChoices(gp, *reinterpret_cast<GroupShared*>(fused_smem));
}

bool RouteValid(const RouteParams& p) {
  return !(p.n_expert <= 0 || p.n_expert > kMaxRoutedExperts || p.k <= 0 || p.k > p.n_expert ||
           (p.group_limited && (p.n_group <= 1 || p.n_group > kMaxGroups ||
                                p.n_expert % p.n_group != 0 || p.n_group_used <= 0)));
}

}  // namespace

cudaError_t LaunchRoute(const RouteParams& p, cudaStream_t stream) {
  if (p.n_tokens <= 0) return cudaSuccess;
  if (!RouteValid(p)) return cudaErrorInvalidValue;
  const size_t smem = kRouteWarps * RouteWarpFloats(p.n_expert) * sizeof(float);
  const int blocks = (p.n_tokens + kRouteWarps - 1) / kRouteWarps;
  RouteKernel<<<blocks, kRouteWarps * 32, smem, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchGroupByExpert(const GroupParams& p, cudaStream_t stream) {
  if (p.n_expert <= 0 || p.n_expert > kMaxRoutedExperts || p.k <= 0) return cudaErrorInvalidValue;
  GroupKernel<<<1, kGroupThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

bool RouteAndGroupFits(const RouteParams& p) {
  return p.n_tokens <= kGroupThreads / 32 && FusedSmemBytes(p) <= kFusedRouteSmem;
}

cudaError_t LaunchRouteAndGroup(const RouteParams& rp, const GroupParams& gp, cudaStream_t stream) {
  if (rp.n_tokens <= 0) return cudaSuccess;
  if (!RouteValid(rp) || !RouteAndGroupFits(rp) || gp.experts != rp.experts ||
      gp.n_tokens != rp.n_tokens || gp.k != rp.k || gp.n_expert != rp.n_expert) {
    return cudaErrorInvalidValue;
  }
  RouteGroupKernel<<<1, kGroupThreads, FusedSmemBytes(rp), stream>>>(rp, gp);
  return cudaGetLastError();
}

}  // namespace tritmoe::gpu
