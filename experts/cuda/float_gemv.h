// GEMV with float32 activations over weights kept in their GGUF rows, for the types and shapes
// the int8 tile kernels (quant_gemv.h) do not take: F32, F16, BF16 and Q8_0 with any number of
// columns that is a multiple of 32 (e.g. MLA's attn_k_b, 128 columns; the F32 router; every
// matrix of an F16 model). Dense or grouped over a stack of matrices (experts, or attention heads
// used as "experts"), with row gathers on the input and row scatters on the output.
//
//   y[y_rows[p]][r] = sum_c W_e[r][c] * x[x_rows[p] * x_stride + c]   for pairs p of matrix e
//
// Weights are decoded to float in registers and multiplied in float32 (no activation
// quantization): relative error ~1e-6 against a double reference. One launch, no host
// synchronization, no allocation: capturable in a CUDA graph. C++17-clean, no absl.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tritmoe {

struct FloatGemvParams {
  uint32_t type_id = 0;              // ggml type id: F32 (0), F16 (1), BF16 (30) or Q8_0 (8)
  const void* w = nullptr;           // matrix e at w + e * expert_stride; rows of GGUF row bytes
  int64_t expert_stride = 0;         // bytes
  int rows = 0;                      // output rows per matrix
  int cols = 0;                      // multiple of 32
  int n_experts = 1;                 // matrices in the stack
  const int32_t* offsets = nullptr;  // device [n_experts + 1] CSR of pairs per matrix, or
                                     // nullptr: one matrix, pairs 0..n_pairs-1
  int n_pairs = 0;                   // used when offsets == nullptr
  int max_pairs_per_expert = 0;      // upper bound of offsets[e+1] - offsets[e] (sizes the grid)
  const int32_t* x_rows = nullptr;   // device [pairs]: activation row of pair p, or nullptr (p)
  const float* x = nullptr;          // 16-byte aligned
  int64_t x_stride = 0;              // floats between activation rows, multiple of 4, >= cols
  const int32_t* y_rows = nullptr;   // device [pairs]: output row of pair p, or nullptr (p)
  float* y = nullptr;
  int64_t y_stride = 0;  // floats between output rows, >= rows
};

// Whether LaunchFloatGemv takes weights of this type with this many columns.
bool FloatGemvSupports(uint32_t type_id, int64_t cols);

// Enqueues the GEMV on `stream`. cudaErrorInvalidValue for an unsupported type or shape.
cudaError_t LaunchFloatGemv(const FloatGemvParams& params, cudaStream_t stream);

}  // namespace tritmoe
