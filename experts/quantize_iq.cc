// Importance-matrix quantizers of IQ2_XXS, IQ1_S and IQ1_M (formats.md §2.8-2.10, §2.13).
//
// The outputs are meant to be byte-identical to llama.cpp's reference quantizers, so every float
// expression below keeps the reference evaluation order (left to right, float32 intermediates);
// this file must be compiled with -ffp-contract=off. Do not "simplify" the arithmetic.

#include "experts/quantize_iq.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <numeric>
#include <span>

#include "base/check.h"
#include "experts/fp16.h"
#include "experts/iq_grid_search.h"

namespace tritmoe {
namespace {

constexpr int kSuperBlock = 256;  // QK_K
constexpr float kGroupMaxEps = 1e-15f;
constexpr float kGroupMaxEpsIq1s = 1e-12f;
constexpr float kGroupMaxEpsIq1m = 1e-7f;
constexpr float kIq1Delta = 0.125f;

constexpr int kIq2xxsBlockBytes = 66;
constexpr int kIq1sBlockBytes = 50;
constexpr int kIq1mBlockBytes = 56;

// The two shifted ternary codebooks of IQ1_S/IQ1_M, indexed by code 0..2 (level -1, 0, +1).
constexpr float kIq1Plus[3] = {-1 + kIq1Delta, kIq1Delta, 1 + kIq1Delta};
constexpr float kIq1Minus[3] = {-1 - kIq1Delta, -kIq1Delta, 1 - kIq1Delta};

// Round to nearest, ties to even (the magic-number trick; valid for |f| <= 4194303).
int NearestInt(float f) {
  const float v = f + 12582912.0f;
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return static_cast<int>(bits & 0x007fffff) - 0x00400000;
}

// The reference's MAX macro (returns b when a > b is false).
float Max(float a, float b) { return a > b ? a : b; }

void StoreU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void StoreU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint32_t PackCodes(const uint8_t* codes) {
  uint32_t u = 0;
  for (int i = 0; i < 8; ++i) u |= static_cast<uint32_t>(codes[i]) << (2 * i);
  return u;
}

// Weighted fit of non-negative levels 0..nmax to x (formats.md §2.13, make_qp_quants); returns
// the scale. Levels are kept as uint8_t like the reference: a negative level (possible for the
// one element IQ2_XXS negates for sign parity) wraps, which changes the refinement pass, and the
// wrap is part of the bit-exact behaviour.
float MakeQpQuants(int n, int nmax, const float* x, uint8_t* levels, const float* w) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = Max(max, x[i]);
  if (max < kGroupMaxEps) {
    std::fill(levels, levels + n, 0);
    return 0.f;
  }
  float iscale = nmax / max;
  for (int i = 0; i < n; ++i) levels[i] = static_cast<uint8_t>(NearestInt(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * levels[i];
    best_mse += w[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * is + nmax) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, NearestInt(iscale_is * x[i]));
      const float diff = x[i] - scale_is * l;
      mse += w[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, NearestInt(iscale * x[i]));
    levels[i] = static_cast<uint8_t>(l);
    sumlx += w[i] * x[i] * l;
    suml2 += w[i] * l * l;
  }
  // Coordinate descent: move one level at a time while the score sumlx^2/suml2 improves.
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      float slx = sumlx - w[i] * x[i] * levels[i];
      float sl2 = suml2 - w[i] * levels[i] * levels[i];
      if (slx > 0 && sl2 > 0) {
        const int l = std::min(nmax, NearestInt(x[i] * sl2 / slx));
        if (l != levels[i]) {
          slx += w[i] * x[i] * l;
          sl2 += w[i] * l * l;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            levels[i] = static_cast<uint8_t>(l);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (changed == 0) break;
  }
  return sumlx / suml2;
}

// Picks, for an off-grid pattern, the grid point minimising sum w * (scale * value(code) - x)^2
// among the pattern's neighbours (first one wins ties); value = level_value(code). Falls back to
// the whole grid if no neighbour gives a finite error.
template <typename LevelValue>
int BestNeighbour(const IqGridSearch& grid, uint32_t pattern, const float* x, const float* w,
                  float scale, LevelValue level_value) {
  auto error = [&](int g) {
    const uint8_t* codes = grid.Codes(g);
    float d2 = 0;
    for (int i = 0; i < 8; ++i) {
      const float q = level_value(codes[i]);
      const float diff = scale * q - x[i];
      d2 += w[i] * diff * diff;
    }
    return d2;
  };
  float best = FLT_MAX;
  int best_index = -1;
  for (uint16_t g : grid.Neighbours(pattern)) {
    const float d2 = error(g);
    if (d2 < best) {
      best = d2;
      best_index = g;
    }
  }
  if (best_index < 0) {
    for (int g = 0; g < grid.grid_size(); ++g) {
      const float d2 = error(g);
      if (d2 < best) {
        best = d2;
        best_index = g;
      }
    }
  }
  return best_index < 0 ? 0 : best_index;
}

// Maps 8 codes to a grid index, replacing an off-grid pattern by its best neighbour; codes are
// overwritten with the chosen grid point's.
template <typename LevelValue>
int SnapToGrid(const IqGridSearch& grid, uint8_t* codes, const float* x, const float* w,
               float scale, LevelValue level_value, bool* was_on_grid = nullptr) {
  const uint32_t pattern = PackCodes(codes);
  int index = grid.Lookup(pattern);
  if (was_on_grid != nullptr) *was_on_grid = index >= 0;
  if (index < 0) {
    index = BestNeighbour(grid, pattern, x, w, scale, level_value);
    std::memcpy(codes, grid.Codes(index), 8);
  }
  return index;
}

// Positions 0..n-1 sorted by x ascending (ties by position, so the result is deterministic).
template <int N>
void SortAscending(const float* x, int (&order)[N]) {
  std::iota(order, order + N, 0);
  std::stable_sort(order, order + N, [x](int a, int b) { return x[a] < x[b]; });
}

}  // namespace

void QuantizeRowIq2xxs(const float* x, void* vy, int64_t n, const float* qw) {
  TM_CHECK(n % kSuperBlock == 0) << "IQ2_XXS row length " << n;
  TM_CHECK(qw != nullptr) << "IQ2_XXS needs importance weights";
  const IqGridSearch& grid = Iq2xxsGridSearch();
  constexpr int kMaxQ = 3;  // grid magnitudes 1, 3, 5 (codes 0..2)
  auto odd_value = [](uint8_t c) { return static_cast<float>(2 * c + 1); };
  uint8_t* y = static_cast<uint8_t*>(vy);

  for (int64_t ibl = 0; ibl < n / kSuperBlock; ++ibl) {
    const float* xbl = x + kSuperBlock * ibl;
    uint8_t* block = y + kIq2xxsBlockBytes * ibl;
    uint32_t q2[16] = {};
    float scales[8];
    float max_scale = 0;
    float sumx2 = 0;
    for (int i = 0; i < kSuperBlock; ++i) sumx2 += xbl[i] * xbl[i];
    const float sigma2 = sumx2 / kSuperBlock;

    for (int ib = 0; ib < 8; ++ib) {
      const float* xb = xbl + 32 * ib;
      const float* qwb = qw + kSuperBlock * ibl + 32 * ib;
      float weight[32], waux[32], xval[32];
      for (int i = 0; i < 32; ++i) weight[i] = qwb[i] * std::sqrt(sigma2 + xb[i] * xb[i]);
      for (int i = 0; i < 32; ++i) waux[i] = std::sqrt(weight[i]);

      // Signs: 7 stored bits per 8 values, the 8th is implied by even parity. With an odd number of
      // negatives, the least important value gets the wrong sign (its magnitude is negated).
      uint8_t signs[4];
      for (int k = 0; k < 4; ++k) {
        int negatives = 0;
        uint8_t s = 0;
        for (int i = 0; i < 8; ++i) {
          const float v = xb[8 * k + i];
          if (v >= 0) {
            xval[8 * k + i] = v;
          } else {
            xval[8 * k + i] = -v;
            ++negatives;
            s |= 1 << i;
          }
        }
        if (negatives % 2 != 0) {
          int imin = 0;
          float min = weight[8 * k] * xb[8 * k] * xb[8 * k];
          for (int i = 1; i < 8; ++i) {
            const float importance = weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
            if (importance < min) {
              min = importance;
              imin = i;
            }
          }
          xval[8 * k + imin] = -xval[8 * k + imin];
          s ^= 1 << imin;
        }
        signs[k] = s & 127;
      }

      float max = xval[0];
      for (int i = 1; i < 32; ++i) max = Max(max, xval[i]);
      if (max < kGroupMaxEps) {
        scales[ib] = 0;
        continue;
      }

      // Scan 13 trial scales around the make_qp_quants estimate; keep the best weighted fit.
      uint8_t codes[32];
      float scale = MakeQpQuants(32, kMaxQ + 1, xval, codes, weight);
      const float eff_max = scale * kMaxQ;
      float best = 0;
      bool have_codes = false;
      for (int is = -6; is <= 6; ++is) {
        const float id = (2 * kMaxQ - 1 + is * 0.1f) / eff_max;
        const float this_scale = 1 / id;
        uint8_t trial[32];
        for (int k = 0; k < 4; ++k) {
          for (int i = 0; i < 8; ++i) {
            const int l = NearestInt(0.5f * (id * xval[8 * k + i] - 1));
            trial[8 * k + i] = static_cast<uint8_t>(std::clamp(l, 0, kMaxQ - 1));
          }
          SnapToGrid(grid, trial + 8 * k, xval + 8 * k, waux + 8 * k, this_scale, odd_value);
        }
        float sumqx = 0, sumq2 = 0;
        for (int i = 0; i < 32; ++i) {
          const float w = weight[i];
          const float q = 2 * trial[i] + 1;
          sumqx += w * xval[i] * q;
          sumq2 += w * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
          scale = sumqx / sumq2;
          best = scale * sumqx;
          std::memcpy(codes, trial, 32);
          have_codes = true;
        }
      }
      if (scale > 0) {
        // Final snap with the chosen scale, then least-squares re-fit of the scale.
        const float id = 1 / scale;
        for (int k = 0; k < 4; ++k) {
          for (int i = 0; i < 8; ++i) {
            const int l = NearestInt(0.5f * (id * xval[8 * k + i] - 1));
            codes[8 * k + i] = static_cast<uint8_t>(std::clamp(l, 0, kMaxQ - 1));
          }
          SnapToGrid(grid, codes + 8 * k, xval + 8 * k, waux + 8 * k, scale, odd_value);
        }
        float sumqx = 0, sumq2 = 0;
        for (int i = 0; i < 32; ++i) {
          const float w = weight[i];
          const float q = 2 * codes[i] + 1;
          sumqx += w * xval[i] * q;
          sumq2 += w * q * q;
        }
        if (sumq2 > 0) scale = sumqx / sumq2;
      } else if (!have_codes) {
        // Degenerate weights (e.g. all-zero importance): no fit exists; store an empty sub-block.
        scales[ib] = 0;
        continue;
      }
      if (scale < 0) {
        scale = -scale;
        for (uint8_t& s : signs) s = ~s & 127;
      }
      for (int k = 0; k < 4; ++k) {
        const int index = grid.Lookup(PackCodes(codes + 8 * k));
        TM_CHECK(index >= 0);
        q2[2 * ib] |= static_cast<uint32_t>(index) << (8 * k);
        q2[2 * ib + 1] |= static_cast<uint32_t>(signs[k]) << (7 * k);
      }
      scales[ib] = scale;
      max_scale = Max(max_scale, scale);
    }

    std::memset(block, 0, kIq2xxsBlockBytes);
    if (max_scale == 0) continue;
    const float d = max_scale / 31;
    StoreU16(block, Fp32ToFp16(d));
    const float id = 1 / d;
    for (int ib = 0; ib < 8; ++ib) {
      const int l = std::clamp(NearestInt(0.5f * (id * scales[ib] - 1)), 0, 15);
      q2[2 * ib + 1] |= static_cast<uint32_t>(l) << 28;
    }
    for (int i = 0; i < 16; ++i) StoreU32(block + 2 + 4 * i, q2[i]);
  }
}

void QuantizeRowIq1s(const float* x, void* vy, int64_t n, const float* qw) {
  TM_CHECK(n % kSuperBlock == 0) << "IQ1_S row length " << n;
  TM_CHECK(qw != nullptr) << "IQ1_S needs importance weights";
  constexpr int kBlock = 32;
  const IqGridSearch& grid = Iq1GridSearch();
  uint8_t* y = static_cast<uint8_t*>(vy);

  for (int64_t ibl = 0; ibl < n / kSuperBlock; ++ibl) {
    const float* xbl = x + kSuperBlock * ibl;
    uint8_t* block = y + kIq1sBlockBytes * ibl;
    uint8_t qs[32] = {};
    uint16_t qh[8] = {};
    float scales[8];
    int shifts[8];  // +1: codebook kIq1Plus, -1: kIq1Minus
    float max_scale = 0;
    float sumx2 = 0;
    for (int i = 0; i < kSuperBlock; ++i) sumx2 += xbl[i] * xbl[i];
    const float sigma2 = 2 * sumx2 / kSuperBlock;

    for (int ib = 0; ib < 8; ++ib) {
      const float* xb = xbl + kBlock * ib;
      const float* qwb = qw + kSuperBlock * ibl + kBlock * ib;
      float weight[kBlock];
      for (int i = 0; i < kBlock; ++i) weight[i] = qwb[i] * std::sqrt(sigma2 + xb[i] * xb[i]);
      float max = std::fabs(xb[0]);
      for (int i = 1; i < kBlock; ++i) max = Max(max, std::fabs(xb[i]));
      // A skipped sub-block still decodes as grid point 0 (all -1) plus its delta: store +delta,
      // the smaller magnitude (the reference's choice; older versions left a stale value here).
      scales[ib] = 0;
      shifts[ib] = 1;
      if (max < kGroupMaxEpsIq1s) continue;

      // Exact 3-level fit: in sorted order the optimal assignment is three runs (-1, 0, +1), so try
      // every pair of split points with prefix sums, for both shifted codebooks.
      int order[kBlock];
      SortAscending(xb, order);
      float sumx[kBlock + 1], sumw[kBlock + 1];
      sumx[0] = sumw[0] = 0;
      for (int j = 0; j < kBlock; ++j) {
        const int i = order[j];
        sumx[j + 1] = sumx[j] + weight[i] * xb[i];
        sumw[j + 1] = sumw[j] + weight[i];
      }
      float best_score = -FLT_MAX, scale = max;
      int best_i1 = -1, best_i2 = -1, best_shift = 0;
      for (int i1 = 0; i1 <= kBlock; ++i1) {
        for (int i2 = i1; i2 <= kBlock; ++i2) {
          for (int shift : {1, -1}) {
            const float* c = shift == 1 ? kIq1Plus : kIq1Minus;
            const float sumqx = (sumx[i1] - sumx[0]) * c[0] + (sumx[i2] - sumx[i1]) * c[1] +
                                (sumx[kBlock] - sumx[i2]) * c[2];
            const float sumq2 = (sumw[i1] - sumw[0]) * c[0] * c[0] +
                                (sumw[i2] - sumw[i1]) * c[1] * c[1] +
                                (sumw[kBlock] - sumw[i2]) * c[2] * c[2];
            if (sumq2 > 0 && sumqx * sumqx > best_score * sumq2) {
              scale = sumqx / sumq2;
              best_score = scale * sumqx;
              best_i1 = i1;
              best_i2 = i2;
              best_shift = shift;
            }
          }
        }
      }
      if (best_i1 < 0) continue;  // all weights zero: nothing to fit
      uint8_t codes[kBlock];
      for (int j = 0; j < kBlock; ++j) codes[order[j]] = j < best_i1 ? 0 : j < best_i2 ? 1 : 2;
      if (scale < 0) {
        for (uint8_t& c : codes) c = 2 - c;
        scale = -scale;
        best_shift = -best_shift;
      }
      const float* xx = best_shift == 1 ? kIq1Plus : kIq1Minus;
      auto level_value = [xx](uint8_t c) { return xx[c]; };

      bool all_on_grid = true;
      int index[kBlock / 8];
      for (int k = 0; k < kBlock / 8; ++k) {
        bool on_grid;
        index[k] = SnapToGrid(grid, codes + 8 * k, xb + 8 * k, weight + 8 * k, scale, level_value,
                              &on_grid);
        all_on_grid = all_on_grid && on_grid;
      }
      if (!all_on_grid) {
        float sumqx = 0, sumq2 = 0;
        for (int i = 0; i < kBlock; ++i) {
          const float w = weight[i];
          const float q = xx[codes[i]];
          sumqx += w * q * xb[i];
          sumq2 += w * q * q;
        }
        if (sumqx > 0 && sumq2 > 0) scale = sumqx / sumq2;
      }
      uint16_t h = 0;
      for (int k = 0; k < kBlock / 8; ++k) {
        qs[4 * ib + k] = static_cast<uint8_t>(index[k] & 255);
        h |= static_cast<uint16_t>((index[k] >> 8) << (3 * k));
      }
      qh[ib] = h;
      scales[ib] = scale;
      shifts[ib] = best_shift;
      max_scale = Max(max_scale, scale);
    }

    std::memset(block, 0, kIq1sBlockBytes);
    std::memcpy(block + 2, qs, 32);
    if (max_scale != 0) {
      const float d = max_scale / 15;
      StoreU16(block, Fp32ToFp16(d * 1.125f));  // empirical fudge factor of the reference
      const float id = 1 / d;
      for (int ib = 0; ib < 8; ++ib) {
        int l = std::clamp(NearestInt(0.5f * (id * scales[ib] - 1)), 0, 7);
        if (shifts[ib] == -1) l |= 8;
        qh[ib] |= static_cast<uint16_t>(l << 12);
      }
    }
    for (int ib = 0; ib < 8; ++ib) StoreU16(block + 34 + 2 * ib, qh[ib]);
  }
}

void QuantizeRowIq1m(const float* x, void* vy, int64_t n, const float* qw) {
  TM_CHECK(n % kSuperBlock == 0) << "IQ1_M row length " << n;
  constexpr int kBlock = 16;
  const IqGridSearch& grid = Iq1GridSearch();
  // Combination k of delta signs for the two 8-groups of a sub-block: bit 1 = first group uses
  // kIq1Minus, bit 0 = second group does (k = 0: +,+  1: +,-  2: -,+  3: -,-).
  auto codebook = [](int k, int group) {
    const bool minus = group == 0 ? k >= 2 : (k & 1) != 0;
    return minus ? kIq1Minus : kIq1Plus;
  };
  constexpr uint8_t kDeltaMask[4] = {0x00, 0x80, 0x08, 0x88};  // qh bits of k
  uint8_t* y = static_cast<uint8_t*>(vy);

  for (int64_t ibl = 0; ibl < n / kSuperBlock; ++ibl) {
    const float* xbl = x + kSuperBlock * ibl;
    const float* qwbl = qw != nullptr ? qw + kSuperBlock * ibl : nullptr;
    uint8_t* block = y + kIq1mBlockBytes * ibl;
    uint8_t qs[32] = {};
    uint8_t qh[16] = {};
    uint16_t sc[4] = {};
    float scales[16];
    int combos[16];
    float max_scale = 0;
    float sumx2 = 0;
    for (int i = 0; i < kSuperBlock; ++i) sumx2 += xbl[i] * xbl[i];
    const float sigma2 = 2 * sumx2 / kSuperBlock;
    auto compute_weights = [&](int ib, float* weight) {
      const float* xb = xbl + kBlock * ib;
      if (qwbl != nullptr) {
        const float* qwb = qwbl + kBlock * ib;
        for (int i = 0; i < kBlock; ++i) weight[i] = qwb[i] * std::sqrt(sigma2 + xb[i] * xb[i]);
      } else {
        for (int i = 0; i < kBlock; ++i) weight[i] = xb[i] * xb[i];
      }
    };

    for (int ib = 0; ib < 16; ++ib) {
      const float* xb = xbl + kBlock * ib;
      float weight[kBlock];
      compute_weights(ib, weight);
      float max = std::fabs(xb[0]);
      for (int i = 1; i < kBlock; ++i) max = Max(max, std::fabs(xb[i]));
      scales[ib] = 0;
      combos[ib] = 0;  // +delta for both groups if skipped (see IQ1_S; matches the golden vectors)
      if (max < kGroupMaxEpsIq1m) continue;

      // Exact 3-level fit over all split pairs and all 4 delta-sign combinations. The sums are
      // accumulated afresh per split pair (in sorted order), as the reference does.
      int order[kBlock];
      SortAscending(xb, order);
      float best_score = -FLT_MAX, scale = max;
      int best_i1 = -1, best_i2 = -1, best_k = -1;
      for (int i1 = 0; i1 <= kBlock; ++i1) {
        for (int i2 = i1; i2 <= kBlock; ++i2) {
          float sumqx[4] = {}, sumq2[4] = {};
          for (int j = 0; j < kBlock; ++j) {
            const int i = order[j];
            const int level = j < i1 ? 0 : j < i2 ? 1 : 2;
            for (int k = 0; k < 4; ++k) {
              const float c = codebook(k, i / 8)[level];
              sumqx[k] += weight[i] * c * xb[i];
              sumq2[k] += weight[i] * c * c;
            }
          }
          for (int k = 0; k < 4; ++k) {
            if (sumq2[k] > 0 && sumqx[k] * sumqx[k] > best_score * sumq2[k]) {
              scale = sumqx[k] / sumq2[k];
              best_score = scale * sumqx[k];
              best_i1 = i1;
              best_i2 = i2;
              best_k = k;
            }
          }
        }
      }
      if (best_k < 0) continue;  // all weights zero: nothing to fit
      uint8_t codes[kBlock];
      for (int j = 0; j < kBlock; ++j) codes[order[j]] = j < best_i1 ? 0 : j < best_i2 ? 1 : 2;
      if (scale < 0) {
        for (uint8_t& c : codes) c = 2 - c;
        scale = -scale;
        best_k = 3 - best_k;  // mirroring flips both delta signs
      }

      bool all_on_grid = true;
      int index[2];
      for (int k = 0; k < 2; ++k) {
        const float* xx = codebook(best_k, k);
        bool on_grid;
        index[k] = SnapToGrid(
            grid, codes + 8 * k, xb + 8 * k, weight + 8 * k, scale,
            [xx](uint8_t c) { return xx[c]; }, &on_grid);
        all_on_grid = all_on_grid && on_grid;
      }
      if (!all_on_grid) {
        float sumqx = 0, sumq2 = 0;
        for (int i = 0; i < kBlock; ++i) {
          const float w = weight[i];
          const float q = codebook(best_k, i / 8)[codes[i]];
          sumqx += w * q * xb[i];
          sumq2 += w * q * q;
        }
        if (sumqx > 0 && sumq2 > 0) scale = sumqx / sumq2;
      }
      qs[2 * ib] = static_cast<uint8_t>(index[0] & 255);
      qs[2 * ib + 1] = static_cast<uint8_t>(index[1] & 255);
      qh[ib] = static_cast<uint8_t>((index[0] >> 8) | ((index[1] >> 8) << 4));
      scales[ib] = scale;
      combos[ib] = best_k;
      max_scale = Max(max_scale, scale);
    }

    std::memset(block, 0, kIq1mBlockBytes);
    if (max_scale != 0) {
      // 3-bit sub-block scales from d = max_scale/15, then a least-squares re-fit of the super-
      // scale over the whole block with the chosen grid points and scales.
      float d = max_scale / 15;
      const float id = 1 / d;
      float sumqx = 0, sumq2 = 0;
      for (int ib = 0; ib < 16; ++ib) {
        const int l = std::clamp(NearestInt(0.5f * (id * scales[ib] - 1)), 0, 7);
        sc[ib / 4] |= static_cast<uint16_t>(l << (3 * (ib % 4)));
        qh[ib] |= kDeltaMask[combos[ib]];
        const float* xb = xbl + kBlock * ib;
        float weight[kBlock];
        compute_weights(ib, weight);
        for (int k = 0; k < 2; ++k) {
          const float* xx = codebook(combos[ib], k);
          const int index = qs[2 * ib + k] | (((qh[ib] >> (4 * k)) & 7) << 8);
          const uint8_t* codes = grid.Codes(index);
          for (int j = 0; j < 8; ++j) {
            const float w = weight[8 * k + j];
            const float q = xx[codes[j]] * (2 * l + 1);
            sumqx += w * q * xb[8 * k + j];
            sumq2 += w * q * q;
          }
        }
      }
      if (sumq2 > 0) d = sumqx / sumq2;
      const uint16_t h = Fp32ToFp16(d * 1.1125f);  // empirical fudge factor of the reference
      sc[0] |= static_cast<uint16_t>((h & 0x000f) << 12);
      sc[1] |= static_cast<uint16_t>((h & 0x00f0) << 8);
      sc[2] |= static_cast<uint16_t>((h & 0x0f00) << 4);
      sc[3] |= static_cast<uint16_t>(h & 0xf000);
    }
    std::memcpy(block, qs, 32);
    std::memcpy(block + 32, qh, 16);
    for (int i = 0; i < 4; ++i) StoreU16(block + 48 + 2 * i, sc[i]);
  }
}

}  // namespace tritmoe
