// TM_CHECK_CUDA: the CHECK for CUDA runtime calls and kernel launches. A failure prints the call,
// CUDA's error name and string, file:line, the rank and the host (through base/check.h's
// FatalMessage), then aborts. C++17-clean and absl-free so that .cu files can include it.
//
//   TM_CHECK_CUDA(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream));
//   MyKernel<<<grid, block, 0, stream>>>(params);
//   TM_CHECK_CUDA(cudaGetLastError()) << "MyKernel grid=" << grid.x;
#pragma once

#include <cuda_runtime_api.h>

#include "base/check.h"

// The if/else shape lets callers stream extra context after the macro, like TM_CHECK.
#define TM_CHECK_CUDA(expr)                                                          \
  if (const cudaError_t tm_cuda_err_ = (expr); tm_cuda_err_ == cudaSuccess) {        \
  } else                                                                             \
    ::tritmoe::FatalMessage(__FILE__, __LINE__, "CUDA call failed: " #expr).stream() \
        << cudaGetErrorName(tm_cuda_err_) << " (" << cudaGetErrorString(tm_cuda_err_) << ") "
