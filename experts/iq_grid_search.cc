#include "experts/iq_grid_search.h"

#include <array>
#include <cstdint>

#include "base/check.h"
#include "experts/quant_tables.h"

namespace tritmoe {
namespace {

// Squared distance of two code vectors on the embedding 2c+1 is 4 * sum (a-b)^2 <= 4 * 8 * 4.
constexpr int kMaxDist2 = 128;
// map_ entry of a pattern that is neither a grid point nor has a neighbour list (uses code 3).
constexpr int32_t kNoEntry = INT32_MIN;

bool AllCodesValid(uint32_t pattern) {
  for (int k = 0; k < 8; ++k) {
    if (((pattern >> (2 * k)) & 3) == 3) return false;
  }
  return true;
}

}  // namespace

IqGridSearch::IqGridSearch(const uint16_t* kgrid, int grid_size, int nwant)
    : codes_(8 * grid_size), map_(kPatternCount, kNoEntry) {
  TM_CHECK(grid_size > 0 && grid_size <= 65536 && nwant >= 1);
  for (int i = 0; i < grid_size; ++i) {
    TM_CHECK(kgrid[i] < kPatternCount && AllCodesValid(kgrid[i])) << "bad grid entry " << i;
    TM_CHECK(map_[kgrid[i]] == kNoEntry) << "duplicate grid entry " << i;
    map_[kgrid[i]] = i;
    for (int k = 0; k < 8; ++k) codes_[8 * i + k] = (kgrid[i] >> (2 * k)) & 3;
  }

  // Counting sort by distance gives the (distance, index) order directly.
  std::vector<uint8_t> dist(grid_size);
  for (uint32_t pattern = 0; pattern < kPatternCount; ++pattern) {
    if (map_[pattern] >= 0 || !AllCodesValid(pattern)) continue;
    std::array<int, kMaxDist2 + 1> count{};
    for (int i = 0; i < grid_size; ++i) {
      int d2 = 0;
      for (int k = 0; k < 8; ++k) {
        const int diff = 2 * (static_cast<int>((pattern >> (2 * k)) & 3) - codes_[8 * i + k]);
        d2 += diff * diff;
      }
      dist[i] = static_cast<uint8_t>(d2);
      ++count[d2];
    }
    const size_t start = neighbours_.size();
    map_[pattern] = -1 - static_cast<int32_t>(start);
    neighbours_.push_back(0);
    int have = 0;
    for (int d2 = 0; d2 <= kMaxDist2 && have < nwant; ++d2) {
      if (count[d2] == 0) continue;
      ++have;
      for (int i = 0; i < grid_size; ++i) {
        if (dist[i] == d2) neighbours_.push_back(static_cast<uint16_t>(i));
      }
    }
    neighbours_[start] = static_cast<uint16_t>(neighbours_.size() - start - 1);
  }
}

std::span<const uint16_t> IqGridSearch::Neighbours(uint32_t pattern) const {
  const int32_t m = map_[pattern];
  if (m >= 0 || m == kNoEntry) return {};
  const size_t start = static_cast<size_t>(-1 - m);
  return {neighbours_.data() + start + 1, neighbours_[start]};
}

const IqGridSearch& Iq2xxsGridSearch() {
  static const IqGridSearch* const search = new IqGridSearch(tables::kGrid2bit256, 256, 2);
  return *search;
}

const IqGridSearch& Iq1GridSearch() {
  static const IqGridSearch* const search = new IqGridSearch(tables::kGrid1bit2048, 2048, 3);
  return *search;
}

}  // namespace tritmoe
