#include "runtime/model/rms_norm.h"

#include <cmath>

namespace tritmoe {

void RmsNorm(const float* x, int64_t x_stride, int64_t n_rows, int64_t n, const float* gain,
             float eps, float* y, int64_t y_stride) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * x_stride;
    float* yr = y + r * y_stride;
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(xr[i]) * xr[i];
    const float mean = static_cast<float>(sum / static_cast<double>(n));
    const float scale = 1.0f / std::sqrt(mean + eps);
    for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] * scale * gain[i];
  }
}

}  // namespace tritmoe
