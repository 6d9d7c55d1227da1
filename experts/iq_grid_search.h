// Quantizer-side lookup structures of the IQ codebooks (formats.md §2.13, §3): the map from an
// 8-element pattern of 2-bit codes to its grid index, and, for patterns that are not grid points,
// the list of nearby grid points to choose from. Decoding never needs these.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace tritmoe {

class IqGridSearch {
 public:
  // Patterns pack 8 codes of 2 bits, element k in bits 2k..2k+1; codes used are 0..2, so the
  // largest pattern is 0xAAAA.
  static constexpr int kPatternCount = 0xAAAA + 1;

  // kgrid: grid_size patterns (codes 0..2 only, all distinct). For every pattern whose codes are
  // all <= 2 and that is not a grid point, keeps every grid point at one of the `nwant` smallest
  // distinct squared distances (on the odd embedding 2c+1), ordered by distance, then by index.
  // Costs ~grid_size * 6561 distance evaluations: build once (see the accessors below).
  IqGridSearch(const uint16_t* kgrid, int grid_size, int nwant);

  int grid_size() const { return static_cast<int>(codes_.size() / 8); }

  // The 8 codes (0..2) of grid point i.
  const uint8_t* Codes(int i) const { return &codes_[8 * i]; }

  // Grid index of `pattern`, or -1 when it is not a grid point.
  int Lookup(uint32_t pattern) const {
    const int32_t m = map_[pattern];
    return m >= 0 ? m : -1;
  }

  // Candidate grid indices for an off-grid pattern (empty for grid points and for patterns using
  // code 3, which the quantizers never produce).
  std::span<const uint16_t> Neighbours(uint32_t pattern) const;

  bool operator==(const IqGridSearch& other) const = default;

 private:
  std::vector<uint8_t> codes_;  // 8 per grid point
  // kPatternCount entries: grid index; -(1 + offset in neighbours_) for an off-grid pattern;
  // INT32_MIN for a pattern using code 3.
  std::vector<int32_t> map_;
  std::vector<uint16_t> neighbours_;  // per off-grid pattern: count, then that many indices
};

// Built on first use (thread-safe), never destroyed.
// IQ2_XXS: kgrid_2bit_256, nwant = 2. IQ1_S and IQ1_M: kgrid_1bit_2048, nwant = 3.
const IqGridSearch& Iq2xxsGridSearch();
const IqGridSearch& Iq1GridSearch();

}  // namespace tritmoe
