// The IQ2_XXS / IQ1_S / IQ1_M quantizers:
//  * byte-for-byte against llama.cpp's golden quantizer outputs (tests/data/testvectors/quant_*);
//  * reconstruction error on Gaussian rows (decoded with DequantizeRow);
//  * all-zero rows give all-zero blocks;
//  * the grid lookup / neighbour tables: deterministic, consistent with the decode grids, and equal
//    to a brute-force (sort-based) evaluation of their definition.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "experts/dequantize.h"
#include "experts/iq_grid_search.h"
#include "experts/quant_tables.h"
#include "experts/quant_type.h"
#include "experts/quantize_iq.h"
#include "gtest/gtest.h"
#include "tests/quant/testvector_reader.h"

namespace tritmoe {
namespace {

using testing::ReadTestVector;
using testing::TestVectorDir;

using RowQuantizer = void (*)(const float*, void*, int64_t, const float*);

RowQuantizer QuantizerFor(GgmlType type) {
  switch (type) {
    case GgmlType::kIQ2_XXS:
      return QuantizeRowIq2xxs;
    case GgmlType::kIQ1_S:
      return QuantizeRowIq1s;
    case GgmlType::kIQ1_M:
      return QuantizeRowIq1m;
    default:
      return nullptr;
  }
}

std::vector<uint8_t> QuantizeMatrix(GgmlType type, const std::vector<float>& x, int64_t n_rows,
                                    int64_t n_per_row, const float* imatrix) {
  const int64_t row_bytes = RowBytes(type, n_per_row);
  std::vector<uint8_t> out(n_rows * row_bytes, 0xCD);  // poison: every byte must be written
  for (int64_t r = 0; r < n_rows; ++r) {
    QuantizerFor(type)(x.data() + r * n_per_row, out.data() + r * row_bytes, n_per_row, imatrix);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Golden vectors: 4 rows x 512 (row 1 starts with 256 zeros, row 2 with 32 values ~1e-8).

struct GoldenCase {
  const char* file;
  GgmlType type;
};

class GoldenTest : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(GoldenTest, BytesMatchLlamaCpp) {
  const GoldenCase& c = GetParam();
  auto tv = ReadTestVector(TestVectorDir() + "/" + c.file);
  ASSERT_TRUE(tv.ok()) << tv.status();
  const int64_t n_rows = tv->IntParam("nrows");
  const int64_t n_per_row = tv->IntParam("n_per_row");
  ASSERT_EQ(n_rows, 4);
  ASSERT_EQ(n_per_row, 512);
  const std::vector<float> input = tv->Floats("input");
  ASSERT_EQ(static_cast<int64_t>(input.size()), n_rows * n_per_row);
  const std::vector<float> imatrix = tv->Floats("imatrix");
  const bool with_imatrix = tv->Param("imatrix") == "yes";
  ASSERT_EQ(imatrix.size(), with_imatrix ? static_cast<size_t>(n_per_row) : 0u);
  const std::vector<uint8_t>& want = tv->Bytes("quantized");
  const int block_bytes = GetTypeTraits(c.type).block_bytes;
  ASSERT_EQ(static_cast<int64_t>(want.size()), RowBytes(c.type, n_per_row) * n_rows);

  const std::vector<uint8_t> got =
      QuantizeMatrix(c.type, input, n_rows, n_per_row, with_imatrix ? imatrix.data() : nullptr);
  const int n_blocks = static_cast<int>(want.size()) / block_bytes;
  int matching = 0;
  for (int b = 0; b < n_blocks; ++b) {
    const uint8_t* g = got.data() + b * block_bytes;
    const uint8_t* w = want.data() + b * block_bytes;
    if (std::memcmp(g, w, block_bytes) == 0) {
      ++matching;
      continue;
    }
    for (int i = 0; i < block_bytes; ++i) {
      if (g[i] != w[i]) {
        ADD_FAILURE() << c.file << " block " << b << " first differing byte " << i << ": got 0x"
                      << std::hex << int{g[i]} << " want 0x" << int{w[i]} << std::dec;
        break;
      }
    }
  }
  std::cout << c.file << ": " << matching << "/" << n_blocks << " blocks identical\n";
  EXPECT_EQ(matching, n_blocks);

  // Our bytes decode to the golden floats (a consequence of the above; checks the whole path).
  const std::vector<float> deq_want = tv->Floats("dequantized");
  std::vector<float> deq_got(input.size());
  DequantizeRow(c.type, got.data(), deq_got.data(), static_cast<int64_t>(deq_got.size()));
  EXPECT_EQ(std::memcmp(deq_got.data(), deq_want.data(), deq_got.size() * 4), 0);
}

INSTANTIATE_TEST_SUITE_P(
    AllFiles, GoldenTest,
    ::testing::Values(GoldenCase{"quant_IQ2_XXS_imatrix.txt", GgmlType::kIQ2_XXS},
                      GoldenCase{"quant_IQ1_S_imatrix.txt", GgmlType::kIQ1_S},
                      GoldenCase{"quant_IQ1_M_imatrix.txt", GgmlType::kIQ1_M},
                      GoldenCase{"quant_IQ1_M_noimatrix.txt", GgmlType::kIQ1_M}),
    [](const auto& info) {
      std::string name = info.param.file;
      name = name.substr(6, name.size() - 10);  // strip "quant_" and ".txt"
      return name;
    });

// ---------------------------------------------------------------------------------------------
// Reconstruction error on Gaussian rows.

struct ErrorCase {
  GgmlType type;
  bool imatrix;
  // Measured (16 x 2048, seed 1234): IQ2_XXS 0.347, IQ1_S 0.493, IQ1_M 0.461, IQ1_M without
  // imatrix 0.583 (x^2 weights favour the large values); bounds are ~20% above.
  double max_rel_rms;
};

class GaussianErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(GaussianErrorTest, RelativeRmsErrorWithinBound) {
  const ErrorCase& c = GetParam();
  constexpr int64_t kRows = 16, kCols = 2048;
  std::mt19937 rng(1234);
  std::normal_distribution<float> gauss(0.f, 0.02f);
  std::uniform_real_distribution<float> uni(0.5f, 2.f);
  std::vector<float> x(kRows * kCols);
  for (float& v : x) v = gauss(rng);
  std::vector<float> imatrix(kCols);
  for (float& v : imatrix) v = uni(rng);

  const std::vector<uint8_t> q =
      QuantizeMatrix(c.type, x, kRows, kCols, c.imatrix ? imatrix.data() : nullptr);
  std::vector<float> y(x.size());
  DequantizeRow(c.type, q.data(), y.data(), static_cast<int64_t>(y.size()));
  double err = 0, ref = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    err += (double{y[i]} - x[i]) * (double{y[i]} - x[i]);
    ref += double{x[i]} * x[i];
  }
  const double rel = std::sqrt(err / ref);
  std::cout << GetTypeTraits(c.type).name << (c.imatrix ? " imatrix" : " no imatrix")
            << ": relative RMS error " << rel << "\n";
  EXPECT_LT(rel, c.max_rel_rms);
  EXPECT_GT(rel, 0.05);  // sanity: ~1.6-2 bits cannot be near-lossless
}

INSTANTIATE_TEST_SUITE_P(Types, GaussianErrorTest,
                         ::testing::Values(ErrorCase{GgmlType::kIQ2_XXS, true, 0.42},
                                           ErrorCase{GgmlType::kIQ1_S, true, 0.59},
                                           ErrorCase{GgmlType::kIQ1_M, true, 0.55},
                                           ErrorCase{GgmlType::kIQ1_M, false, 0.70}),
                         [](const auto& info) {
                           return std::string(GetTypeTraits(info.param.type).name) +
                                  (info.param.imatrix ? "_imatrix" : "_noimatrix");
                         });

// The importance weights steer the error: on a row whose first half has 100x more importance, the
// weighted error with the imatrix must be lower than without it (IQ1_M accepts both).
TEST(ImatrixTest, Iq1mImatrixLowersWeightedError) {
  constexpr int64_t kCols = 4096;
  std::mt19937 rng(99);
  std::normal_distribution<float> gauss(0.f, 1.f);
  std::vector<float> x(kCols), imatrix(kCols);
  for (float& v : x) v = gauss(rng);
  for (int64_t i = 0; i < kCols; ++i) imatrix[i] = (i % 32) < 16 ? 100.f : 1.f;
  auto weighted_error = [&](const float* qw) {
    std::vector<uint8_t> q(RowBytes(GgmlType::kIQ1_M, kCols));
    QuantizeRowIq1m(x.data(), q.data(), kCols, qw);
    std::vector<float> y(kCols);
    DequantizeRow(GgmlType::kIQ1_M, q.data(), y.data(), kCols);
    double e = 0;
    for (int64_t i = 0; i < kCols; ++i) e += imatrix[i] * (double{y[i]} - x[i]) * (y[i] - x[i]);
    return e;
  };
  EXPECT_LT(weighted_error(imatrix.data()), 0.9 * weighted_error(nullptr));
}

// ---------------------------------------------------------------------------------------------
// All-zero input.

TEST(ZeroRowTest, AllZeroBlocks) {
  constexpr int64_t kCols = 512;
  const std::vector<float> x(kCols, 0.f);
  const std::vector<float> imatrix(kCols, 1.f);
  for (GgmlType type : {GgmlType::kIQ2_XXS, GgmlType::kIQ1_S, GgmlType::kIQ1_M}) {
    for (const float* qw : {imatrix.data(), static_cast<const float*>(nullptr)}) {
      if (qw == nullptr && type != GgmlType::kIQ1_M) continue;
      std::vector<uint8_t> q(RowBytes(type, kCols), 0xCD);
      QuantizerFor(type)(x.data(), q.data(), kCols, qw);
      EXPECT_TRUE(std::all_of(q.begin(), q.end(), [](uint8_t b) { return b == 0; }))
          << GetTypeTraits(type).name << (qw ? " with" : " without") << " imatrix";
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Grid lookup and neighbour tables.

struct GridCase {
  const char* name;
  const uint16_t* kgrid;
  int grid_size;
  int nwant;
  const IqGridSearch& (*cached)();
  int pattern_stride;  // brute-force check of every stride-th pattern (keeps the test fast)
};

class GridSearchTest : public ::testing::TestWithParam<GridCase> {};

uint32_t PatternOf(const uint8_t* codes) {
  uint32_t u = 0;
  for (int k = 0; k < 8; ++k) u |= static_cast<uint32_t>(codes[k]) << (2 * k);
  return u;
}

TEST_P(GridSearchTest, DeterministicAndMatchesDefinition) {
  const GridCase& c = GetParam();
  const IqGridSearch a(c.kgrid, c.grid_size, c.nwant);
  const IqGridSearch b(c.kgrid, c.grid_size, c.nwant);
  EXPECT_TRUE(a == b);
  EXPECT_TRUE(a == c.cached());
  EXPECT_EQ(&c.cached(), &c.cached());
  ASSERT_EQ(a.grid_size(), c.grid_size);

  for (int i = 0; i < c.grid_size; ++i) {
    EXPECT_EQ(a.Lookup(c.kgrid[i]), i);
    EXPECT_TRUE(a.Neighbours(c.kgrid[i]).empty());
  }
  // Patterns with code 3 are never produced; they have neither an index nor neighbours.
  EXPECT_EQ(a.Lookup(3), -1);
  EXPECT_TRUE(a.Neighbours(3).empty());

  int off_grid = 0, checked = 0;
  for (uint32_t p = 0; p < IqGridSearch::kPatternCount; ++p) {
    uint8_t codes[8];
    bool valid = true;
    for (int k = 0; k < 8; ++k) {
      codes[k] = (p >> (2 * k)) & 3;
      valid = valid && codes[k] <= 2;
    }
    if (!valid || a.Lookup(p) >= 0) continue;
    ++off_grid;
    ASSERT_FALSE(a.Neighbours(p).empty()) << p;
    if (off_grid % c.pattern_stride != 0) continue;
    ++checked;
    // Definition: sort all (distance, index) pairs, keep the nwant smallest distinct distances.
    std::vector<std::pair<int, int>> all;
    for (int i = 0; i < c.grid_size; ++i) {
      const uint8_t* g = a.Codes(i);
      int d2 = 0;
      for (int k = 0; k < 8; ++k) {
        const int diff = (2 * codes[k] + 1) - (2 * g[k] + 1);
        d2 += diff * diff;
      }
      all.emplace_back(d2, i);
    }
    std::sort(all.begin(), all.end());
    std::vector<uint16_t> want;
    int distinct = 0;
    for (size_t j = 0; j < all.size(); ++j) {
      if (j == 0 || all[j].first != all[j - 1].first) {
        if (++distinct > c.nwant) break;
      }
      want.push_back(static_cast<uint16_t>(all[j].second));
    }
    const auto got = a.Neighbours(p);
    ASSERT_EQ(std::vector<uint16_t>(got.begin(), got.end()), want) << "pattern " << p;
  }
  EXPECT_EQ(off_grid, 6561 - c.grid_size);
  EXPECT_GT(checked, 100);
}

INSTANTIATE_TEST_SUITE_P(
    Grids, GridSearchTest,
    ::testing::Values(GridCase{"IQ2_XXS", tables::kGrid2bit256, 256, 2, &Iq2xxsGridSearch, 1},
                      GridCase{"IQ1", tables::kGrid1bit2048, 2048, 3, &Iq1GridSearch, 5}),
    [](const auto& info) { return std::string(info.param.name); });

// The quantizer's code tables agree with the decoders' grids (independent tables).
TEST(GridSearchTest, CodesMatchDecodeGrids) {
  const IqGridSearch& iq1 = Iq1GridSearch();
  for (int i = 0; i < 2048; ++i) {
    for (int k = 0; k < 8; ++k) {
      const int8_t g = static_cast<int8_t>(tables::kIq1sGrid[i] >> (8 * k));
      ASSERT_EQ(iq1.Codes(i)[k] - 1, g) << i << " " << k;
    }
  }
  const IqGridSearch& iq2 = Iq2xxsGridSearch();
  constexpr uint8_t kMagnitude[3] = {8, 25, 43};
  for (int i = 0; i < 256; ++i) {
    for (int k = 0; k < 8; ++k) {
      const uint8_t g = static_cast<uint8_t>(tables::kIq2xxsGrid[i] >> (8 * k));
      ASSERT_EQ(kMagnitude[iq2.Codes(i)[k]], g) << i << " " << k;
    }
  }
  EXPECT_EQ(PatternOf(iq1.Codes(7)), tables::kGrid1bit2048[7]);
}

}  // namespace
}  // namespace tritmoe
