// RMSNorm as llama.cpp computes it: y = g * x / sqrt(mean(x^2) + eps), the sum of squares in
// double precision.
#pragma once

#include <cstdint>

namespace tritmoe {

// Normalizes n_rows rows of n elements; row r reads x + r * x_stride and writes y + r * y_stride
// (y may equal x). gain: [n].
void RmsNorm(const float* x, int64_t x_stride, int64_t n_rows, int64_t n, const float* gain,
             float eps, float* y, int64_t y_stride);

// Contiguous rows: x, y [n_rows][n].
inline void RmsNorm(const float* x, int64_t n_rows, int64_t n, const float* gain, float eps,
                    float* y) {
  RmsNorm(x, n, n_rows, n, gain, eps, y, n);
}

}  // namespace tritmoe
