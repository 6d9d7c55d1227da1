// YaRN rotary embedding on the GPU (twin: runtime/model/rope.h). The cos/sin of every (position,
// pair) come from rope_table.h (computed on the host exactly as RopeTable does, uploaded once per
// model); the kernel rotates adjacent pairs (v[2i], v[2i+1]) of n_rot values. C++17-clean.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tritmoe::gpu {

// For token t < n_tokens and head h < n_heads: v = in + t * in_token_stride + h * in_head_stride +
// in_offset (n_rot floats) is rotated by the angles of position pos[t] and written to the same
// place under `out` (out may equal in).
struct RopeParams {
  const float* in = nullptr;
  int64_t in_token_stride = 0, in_head_stride = 0, in_offset = 0;
  float* out = nullptr;
  int64_t out_token_stride = 0, out_head_stride = 0, out_offset = 0;
  int n_tokens = 0, n_heads = 0, n_rot = 0;
  const int32_t* pos = nullptr;  // device [n_tokens], each < the table's positions
  const float* cos = nullptr;    // device [positions][n_rot / 2]
  const float* sin = nullptr;
};
cudaError_t LaunchRope(const RopeParams& p, cudaStream_t stream);

}  // namespace tritmoe::gpu
