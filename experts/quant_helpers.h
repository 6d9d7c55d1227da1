// The scale-fitting helpers shared by llama.cpp's reference quantizers (reference/formats.md
// §2.13), written from the spec. Their float operations follow the reference order and the file is
// built with -ffp-contract=off, so quantized bytes match llama.cpp's scalar code.
#pragma once

#include <cstdint>
#include <cstring>

namespace tritmoe {

// Blocks whose largest magnitude is below this are stored as zeros.
inline constexpr float kGroupMaxEps = 1e-15f;

// Round to nearest, ties to even, via the 1.5*2^23 trick; valid for |f| <= 4194303.
inline int NearestInt(float f) {
  const float v = f + 12582912.0f;
  int32_t i;
  std::memcpy(&i, &v, 4);
  return (i & 0x007fffff) - 0x00400000;
}

// Symmetric fit of n values x to levels in [-nmax, nmax-1] (returned in L offset by +nmax, i.e.
// 0..2nmax-1). Weights: qw when non-null, else chosen by rmse_type (1: x², 2: 1, 3: |x|,
// otherwise sqrt|x|). rmse_type 0 does a single pass; a negative rmse_type returns early after the
// first least-squares fit. Returns the scale (x ≈ scale · (L - nmax)); 0 for an all-tiny group.
float MakeQxQuants(int n, int nmax, const float* x, int8_t* L, int rmse_type, const float* qw);

// Asymmetric (scale, min) fit with levels 0..nmax; x ≈ scale·L - *the_min (*the_min ≥ 0).
// Grid search over iscale = (rmin + rdelta·is + nmax)/(max - min), is = 0..nstep; errors are
// weighted |diff| (use_mad) or diff². Laux: n bytes of scratch.
// Qkx2 requires weights; Qkx3 falls back to x² weights when weights is null.
float MakeQkx2Quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                     float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                     bool use_mad);
float MakeQkx3Quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                     float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                     bool use_mad);

// Fit of non-negative x to levels 0..nmax with weights qw (n values each); returns the scale.
float MakeQpQuants(int n, int nmax, const float* x, uint8_t* L, const float* qw);

}  // namespace tritmoe
