// Encoding float32 rows into every supported type, following llama.cpp's reference quantizers so
// that files we write decode the same way in llama.cpp.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "experts/quant_type.h"

namespace tritmoe {

// Quantizes n_rows rows of n_per_row floats (row-major, contiguous) into dst, which must hold
// n_rows * RowBytes(type, n_per_row) bytes. imatrix: n_per_row non-negative importance weights
// shared by all rows (mean squared activation per input column), or nullptr.
// Errors: n_per_row not a multiple of the block size; a type that needs an importance matrix
// (IQ1_S, IQ2_XXS) given none; Q8_K (activation-only: use QuantizeRowQ8K).
absl::Status QuantizeRows(GgmlType type, const float* src, void* dst, int64_t n_rows,
                          int64_t n_per_row, const float* imatrix);

// The activation formats used by the CPU dot products (never stored in files).
// Q8_K block: float d; int8 qs[256]; int16 bsums[16] (sum of each 16 qs).  n % 256 == 0.
void QuantizeRowQ8K(const float* x, void* y, int64_t n);
// Q8_0 block: fp16 d; int8 qs[32].  n % 32 == 0.
void QuantizeRowQ8_0(const float* x, void* y, int64_t n);

}  // namespace tritmoe
