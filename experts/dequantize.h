// Decoding of every supported type to float32, bit-exact with llama.cpp's reference decoders
// (tests/quant/dequantize_test.cc checks all golden vectors in tests/data/testvectors).
#pragma once

#include <cstdint>

#include "experts/quant_type.h"

namespace tritmoe {

// Decodes n elements (a multiple of the type's block size) from src into dst.
void DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n);

}  // namespace tritmoe
