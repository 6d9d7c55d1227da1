// The importance-matrix quantizers of the IQ types (grid search over llama.cpp's codebooks).
// Called through QuantizeRows (experts/quantize.h); declared here for tests.
#pragma once

#include <cstdint>

namespace tritmoe {

// One row of n elements (n % 256 == 0) into y. qw: n importance weights; IQ1_S and IQ2_XXS require
// them (QuantizeRows checks), IQ1_M falls back to x^2 weights when qw is nullptr.
void QuantizeRowIq2xxs(const float* x, void* y, int64_t n, const float* qw);
void QuantizeRowIq1s(const float* x, void* y, int64_t n, const float* qw);
void QuantizeRowIq1m(const float* x, void* y, int64_t n, const float* qw);

}  // namespace tritmoe
