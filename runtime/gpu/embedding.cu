// Embedding rows decoded per element (embedding.h): one thread per output value, so every type
// needs only "element i of a GGUF row". Only n_tokens rows are read per step: speed is moot.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/gpu/embedding.h"

namespace tritmoe::gpu {
namespace {

constexpr uint32_t kF32 = 0, kF16 = 1, kQ8_0 = 8, kQ4_K = 12, kQ6_K = 14, kBF16 = 30;

__device__ float Half(const uint8_t* p) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(p[0] | (p[1] << 8))));
}

// Element i of a GGUF row, with experts/dequantize.cc's operation order.
__device__ float DecodeElement(uint32_t type, const uint8_t* row, int i) {
  switch (type) {
    case kF32:
      return reinterpret_cast<const float*>(row)[i];
    case kF16:
      return Half(row + 2 * i);
    case kBF16:
      return __uint_as_float(static_cast<uint32_t>(row[2 * i] | (row[2 * i + 1] << 8)) << 16);
    case kQ8_0: {
      const uint8_t* b = row + (i / 32) * 34;
      return __fmul_rn(Half(b), static_cast<float>(static_cast<int8_t>(b[2 + i % 32])));
    }
    case kQ4_K: {
      const uint8_t* b = row + (i / 256) * 144;
      const int j = i % 256, c = j / 64, l = j % 64;
      const int sub = 2 * c + (l >= 32 ? 1 : 0);
      const uint8_t* s = b + 4;
      int sc, m;
      if (sub < 4) {
        sc = s[sub] & 63;
        m = s[sub + 4] & 63;
      } else {
        sc = (s[sub + 4] & 0xF) | ((s[sub - 4] >> 6) << 4);
        m = (s[sub + 4] >> 4) | ((s[sub] >> 6) << 4);
      }
      const uint8_t q = b[16 + 32 * c + (l % 32)];
      const int v = l < 32 ? (q & 0xF) : (q >> 4);
      const float d1 = __fmul_rn(Half(b), static_cast<float>(sc));
      const float m1 = __fmul_rn(Half(b + 2), static_cast<float>(m));
      return __fsub_rn(__fmul_rn(d1, static_cast<float>(v)), m1);
    }
    case kQ6_K: {
      const uint8_t* b = row + (i / 256) * 210;
      const int j = i % 256, h = j / 128, jj = j % 128, quarter = jj / 32, l = jj % 32;
      const uint8_t* ql = b + 64 * h;
      const uint8_t* qh = b + 128 + 32 * h;
      const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192 + 8 * h);
      const int lo = quarter & 1 ? ql[l + 32] : ql[l];
      const int low4 = quarter < 2 ? (lo & 0xF) : (lo >> 4);
      const int q = (low4 | (((qh[l] >> (2 * quarter)) & 3) << 4)) - 32;
      const float d = Half(b + 208);
      return __fmul_rn(__fmul_rn(d, static_cast<float>(sc[l / 16 + 2 * quarter])),
                       static_cast<float>(q));
    }
    default:
      return 0.0f;
  }
}

__global__ void EmbedKernel(const EmbedParams p) {
  const int t = blockIdx.y;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= p.cols) return;
  const uint8_t* row = p.table + static_cast<int64_t>(p.tokens[t]) * p.row_bytes;
  p.x[static_cast<int64_t>(t) * p.cols + i] = DecodeElement(p.type_id, row, i);
}

}  // namespace

bool EmbeddingSupports(uint32_t type_id) {
  return type_id == kF32 || type_id == kF16 || type_id == kBF16 || type_id == kQ8_0 ||
         type_id == kQ4_K || type_id == kQ6_K;
}

cudaError_t LaunchEmbed(const EmbedParams& p, cudaStream_t stream) {
  if (p.n_tokens <= 0) return cudaSuccess;
  if (!EmbeddingSupports(p.type_id) || p.n_tokens > 65535 || p.cols <= 0) {
    return cudaErrorInvalidValue;
  }
  EmbedKernel<<<dim3((p.cols + 255) / 256, p.n_tokens), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace tritmoe::gpu
