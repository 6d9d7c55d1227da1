// Quantizers against llama.cpp's golden bytes (quant_*.txt: same input and imatrix must give the
// same bytes), round-trip error bounds on random data, and the error cases of QuantizeRows.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "experts/dequantize.h"
#include "experts/fp16.h"
#include "experts/quant_type.h"
#include "experts/quantize.h"
#include "gtest/gtest.h"
#include "tests/quant/testvector_reader.h"

namespace tritmoe {
namespace {

using testing::ReadTestVector;
using testing::TestVectorDir;

class GoldenQuantizeTest : public ::testing::TestWithParam<std::string> {};

// Every block of our output must equal llama.cpp's bytes (the float op order is the reference's
// and this build does not contract to FMA, so there is no room for rounding differences).
TEST_P(GoldenQuantizeTest, BytesMatchLlamaCpp) {
  auto tv = ReadTestVector(TestVectorDir() + "/quant_" + GetParam() + ".txt");
  ASSERT_TRUE(tv.ok()) << tv.status();
  auto type = ParseGgmlType(tv->Param("type"));
  ASSERT_TRUE(type.ok()) << type.status();
  const TypeTraits& t = GetTypeTraits(*type);
  const int64_t nrows = tv->IntParam("nrows");
  const int64_t n_per_row = tv->IntParam("n_per_row");
  ASSERT_GT(nrows, 0);
  ASSERT_GT(n_per_row, 0);
  const std::vector<float> input = tv->Floats("input");
  ASSERT_EQ(static_cast<int64_t>(input.size()), nrows * n_per_row);
  const bool with_imatrix = tv->Param("imatrix") == "yes";
  ASSERT_EQ(with_imatrix, tv->HasFloats("imatrix"));
  const std::vector<float> imatrix = tv->Floats("imatrix");
  if (with_imatrix) {
    ASSERT_EQ(static_cast<int64_t>(imatrix.size()), n_per_row);
  }
  const std::vector<uint8_t>& want = tv->Bytes("quantized");
  ASSERT_EQ(static_cast<int64_t>(want.size()), nrows * RowBytes(*type, n_per_row));

  std::vector<uint8_t> got(want.size(), 0xAB);
  ASSERT_TRUE(QuantizeRows(*type, input.data(), got.data(), nrows, n_per_row,
                           with_imatrix ? imatrix.data() : nullptr)
                  .ok());
  const int64_t nblocks = static_cast<int64_t>(want.size()) / t.block_bytes;
  int64_t same = 0;
  for (int64_t b = 0; b < nblocks; ++b) {
    const bool eq = std::memcmp(got.data() + b * t.block_bytes, want.data() + b * t.block_bytes,
                                t.block_bytes) == 0;
    same += eq;
    if (!eq) {
      for (int k = 0; k < t.block_bytes; ++k) {
        if (got[b * t.block_bytes + k] != want[b * t.block_bytes + k]) {
          ADD_FAILURE() << GetParam() << ": block " << b << " first differs at byte " << k
                        << ": got " << int(got[b * t.block_bytes + k]) << " want "
                        << int(want[b * t.block_bytes + k]);
          break;
        }
      }
    }
  }
  std::printf("[ golden   ] %-20s %lld/%lld blocks identical to llama.cpp\n", GetParam().c_str(),
              static_cast<long long>(same), static_cast<long long>(nblocks));
  EXPECT_EQ(same, nblocks);
}

INSTANTIATE_TEST_SUITE_P(OwnedTypes, GoldenQuantizeTest,
                         ::testing::Values("BF16_noimatrix", "F16_noimatrix", "Q8_0_noimatrix",
                                           "Q4_0_noimatrix", "Q4_0_imatrix", "Q2_K_noimatrix",
                                           "Q2_K_imatrix", "Q4_K_noimatrix", "Q4_K_imatrix",
                                           "Q6_K_noimatrix", "Q6_K_imatrix", "TQ1_0_noimatrix",
                                           "TQ2_0_noimatrix"),
                         [](const auto& info) { return info.param; });

TEST(GoldenQuantize, Q8KActivation) {
  auto tv = ReadTestVector(TestVectorDir() + "/quant_Q8_K_activation.txt");
  ASSERT_TRUE(tv.ok()) << tv.status();
  const std::vector<float> input = tv->Floats("input");
  const std::vector<uint8_t>& want = tv->Bytes("quantized");
  ASSERT_EQ(input.size(), 1024u);
  ASSERT_EQ(want.size(), 4u * 292);
  std::vector<uint8_t> got(want.size());
  QuantizeRowQ8K(input.data(), got.data(), 1024);
  for (int b = 0; b < 4; ++b) {
    const uint8_t* g = got.data() + 292 * b;
    const uint8_t* w = want.data() + 292 * b;
    // d and qs always; bsums only where the block is non-zero (llama.cpp leaves stale bsums in an
    // all-zero block; ours are zero, and they are multiplied by d = 0 either way).
    EXPECT_EQ(0, std::memcmp(g, w, 260)) << "block " << b;
    float d;
    std::memcpy(&d, w, 4);
    if (d != 0) {
      EXPECT_EQ(0, std::memcmp(g + 260, w + 260, 32)) << "bsums of block " << b;
    } else {
      for (int k = 260; k < 292; ++k) EXPECT_EQ(g[k], 0) << "block " << b;
    }
  }
}

// ---- round-trip error bounds on Gaussian rows ----

std::vector<float> GaussianRows(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(n);
  for (float& v : x) v = dist(rng);
  return x;
}

// sqrt(Σ(x-y)² / Σx²).
double RelRms(const std::vector<float>& x, const std::vector<float>& y) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    den += double(x[i]) * x[i];
  }
  return std::sqrt(num / den);
}

struct Bound {
  GgmlType type;
  bool imatrix;
  double max_rel_rms;
};

// Expected relative RMS error on N(0,1) data is about step/sqrt(12) divided by sigma = 1, with
// step = (per-block range)/(levels-1). Bounds are those estimates with ~30-50% headroom:
//  F16: 2^-11 relative rounding -> ~3e-4; BF16: 2^-8 -> ~2.3e-3.
//  Q8_0: step = amax32/127 ~ 2.1/127 -> 0.5%.  Q4_0: amax32/8 ~ 0.26 -> ~7.5%.
//  Q6_K: 64 levels over 16 values (amax ~1.8) -> ~1.6%.  Q4_K: 16 levels (range ~4.3/15) -> ~8%
//  before the asymmetric fit, which gets it to ~6-7%.  Q2_K: 4 levels over 16 values -> ~25-30%.
//  TQ1_0/TQ2_0: 3 levels at {-d, 0, d} with d = amax256 ~ 2.9: every |x| < 1.45 (85% of values,
//  ~45% of the energy) becomes 0 and the rest lands far from d -> ~80%; bound 90%.
class RoundTripTest : public ::testing::TestWithParam<Bound> {};

TEST_P(RoundTripTest, RelativeRmsErrorBelowBound) {
  const Bound b = GetParam();
  const int64_t rows = 8, n = 1024;
  const std::vector<float> x = GaussianRows(rows * n, 1234);
  std::vector<float> imatrix(n);
  std::mt19937 rng(99);
  std::uniform_real_distribution<float> u(0.1f, 2.0f);
  for (float& v : imatrix) v = u(rng);
  std::vector<uint8_t> q(rows * RowBytes(b.type, n));
  ASSERT_TRUE(
      QuantizeRows(b.type, x.data(), q.data(), rows, n, b.imatrix ? imatrix.data() : nullptr).ok());
  std::vector<float> y(rows * n);
  DequantizeRow(b.type, q.data(), y.data(), rows * n);
  const double err = RelRms(x, y);
  std::printf("[ rms      ] %-6s %-9s rel RMS error %.5f (bound %.4f)\n",
              GetTypeTraits(b.type).name, b.imatrix ? "imatrix" : "plain", err, b.max_rel_rms);
  EXPECT_LT(err, b.max_rel_rms);
}

INSTANTIATE_TEST_SUITE_P(
    AllOwnedTypes, RoundTripTest,
    ::testing::Values(Bound{GgmlType::kF32, false, 1e-30}, Bound{GgmlType::kF16, false, 5e-4},
                      Bound{GgmlType::kBF16, false, 4e-3}, Bound{GgmlType::kQ8_0, false, 0.008},
                      Bound{GgmlType::kQ4_0, false, 0.10}, Bound{GgmlType::kQ4_0, true, 0.10},
                      Bound{GgmlType::kQ6_K, false, 0.025}, Bound{GgmlType::kQ6_K, true, 0.025},
                      Bound{GgmlType::kQ4_K, false, 0.09}, Bound{GgmlType::kQ4_K, true, 0.09},
                      Bound{GgmlType::kQ2_K, false, 0.40}, Bound{GgmlType::kQ2_K, true, 0.40},
                      Bound{GgmlType::kTQ1_0, false, 0.90}, Bound{GgmlType::kTQ2_0, false, 0.90}),
    [](const auto& info) {
      return std::string(GetTypeTraits(info.param.type).name) +
             (info.param.imatrix ? "_imatrix" : "_plain");
    });

// Finer formats must beat coarser ones on the same data (a quantizer bug usually breaks this).
TEST(RoundTrip, ErrorOrdering) {
  const int64_t n = 4096;
  const std::vector<float> x = GaussianRows(n, 7);
  auto err = [&](GgmlType t) {
    std::vector<uint8_t> q(RowBytes(t, n));
    EXPECT_TRUE(QuantizeRows(t, x.data(), q.data(), 1, n, nullptr).ok());
    std::vector<float> y(n);
    DequantizeRow(t, q.data(), y.data(), n);
    return RelRms(x, y);
  };
  EXPECT_LT(err(GgmlType::kQ8_0), err(GgmlType::kQ6_K));
  EXPECT_LT(err(GgmlType::kQ6_K), err(GgmlType::kQ4_K));
  EXPECT_LT(err(GgmlType::kQ4_K), err(GgmlType::kQ2_K));
  EXPECT_LT(err(GgmlType::kQ2_K), err(GgmlType::kTQ2_0));
}

// ---- exact expectations ----

TEST(Quantize, TernaryValuesRoundTripExactly) {
  // Values in {-2, 0, 2} with amax 2 (exact in fp16) must come back unchanged.
  std::vector<float> x(512);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(int(i * 7 % 3) - 1) * 2.0f;
  for (GgmlType t : {GgmlType::kTQ1_0, GgmlType::kTQ2_0}) {
    std::vector<uint8_t> q(RowBytes(t, 512));
    ASSERT_TRUE(QuantizeRows(t, x.data(), q.data(), 2, 256, nullptr).ok());
    std::vector<float> y(512);
    DequantizeRow(t, q.data(), y.data(), 512);
    EXPECT_EQ(x, y) << GetTypeTraits(t).name;
  }
}

TEST(Quantize, Q8_0HandComputed) {
  // amax = 127 -> d = 1 exactly; x = j - 16 + 0.5 rounds half away from zero.
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = (j == 31) ? 127.0f : static_cast<float>(j - 16) + 0.5f;
  uint8_t q[34];
  QuantizeRowQ8_0(x, q, 32);
  EXPECT_EQ(q[0], 0x00);
  EXPECT_EQ(q[1], 0x3C);  // fp16 1.0
  for (int j = 0; j < 31; ++j) {
    const int want =
        (j - 16 >= 0) ? j - 16 + 1 : j - 16;  // roundf(k + 0.5) = k+1 (k >= 0), k (k < 0)
    EXPECT_EQ(static_cast<int8_t>(q[2 + j]), want) << j;
  }
  EXPECT_EQ(static_cast<int8_t>(q[33]), 127);
  uint8_t q2[34];
  ASSERT_TRUE(QuantizeRows(GgmlType::kQ8_0, x, q2, 1, 32, nullptr).ok());
  EXPECT_EQ(0, std::memcmp(q, q2, 34));
}

TEST(Quantize, Q8KHandComputed) {
  std::vector<float> x(256, 0.0f);
  x[0] = 2.0f;  // max -> iscale = -63.5, d = -2/127
  x[1] = -1.0f;
  x[17] = 1.0f;
  std::vector<uint8_t> q(292);
  QuantizeRowQ8K(x.data(), q.data(), 256);
  float d;
  std::memcpy(&d, q.data(), 4);
  EXPECT_EQ(d, 1 / (-127.0f / 2.0f));
  const auto* qs = reinterpret_cast<const int8_t*>(q.data() + 4);
  EXPECT_EQ(qs[0], -127);
  EXPECT_EQ(qs[1], 64);    // 63.5 rounds to even
  EXPECT_EQ(qs[17], -64);  // -63.5 rounds to even
  int16_t bsums[16];
  std::memcpy(bsums, q.data() + 260, 32);
  EXPECT_EQ(bsums[0], -127 + 64);
  EXPECT_EQ(bsums[1], -64);
  for (int g = 2; g < 16; ++g) EXPECT_EQ(bsums[g], 0);
}

TEST(Quantize, AllZeroRowsDecodeToZero) {
  const std::vector<float> x(512, 0.0f);
  for (GgmlType t : {GgmlType::kQ4_0, GgmlType::kQ8_0, GgmlType::kQ2_K, GgmlType::kQ4_K,
                     GgmlType::kQ6_K, GgmlType::kTQ1_0, GgmlType::kTQ2_0}) {
    std::vector<uint8_t> q(RowBytes(t, 512));
    ASSERT_TRUE(QuantizeRows(t, x.data(), q.data(), 1, 512, nullptr).ok());
    std::vector<float> y(512, 1.0f);
    DequantizeRow(t, q.data(), y.data(), 512);
    for (float v : y) ASSERT_EQ(v, 0.0f) << GetTypeTraits(t).name;
  }
}

// ---- errors ----

TEST(QuantizeRows, RejectsRowLengthNotMultipleOfBlock) {
  std::vector<float> x(1024, 1.0f);
  std::vector<uint8_t> out(4096);
  for (auto [t, n] : std::vector<std::pair<GgmlType, int64_t>>{{GgmlType::kQ8_0, 33},
                                                               {GgmlType::kQ4_0, 48},
                                                               {GgmlType::kQ4_K, 128},
                                                               {GgmlType::kQ2_K, 300},
                                                               {GgmlType::kTQ1_0, 0},
                                                               {GgmlType::kIQ1_S, 100}}) {
    const absl::Status s = QuantizeRows(t, x.data(), out.data(), 1, n, x.data());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << GetTypeTraits(t).name;
    EXPECT_NE(std::string(s.message()).find(GetTypeTraits(t).name), std::string::npos) << s;
  }
}

TEST(QuantizeRows, RejectsMissingImatrixWhereRequired) {
  std::vector<float> x(256, 1.0f);
  std::vector<uint8_t> out(256);
  for (GgmlType t : {GgmlType::kIQ1_S, GgmlType::kIQ2_XXS}) {
    const absl::Status s = QuantizeRows(t, x.data(), out.data(), 1, 256, nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << GetTypeTraits(t).name;
    EXPECT_NE(std::string(s.message()).find(GetTypeTraits(t).name), std::string::npos) << s;
    EXPECT_NE(std::string(s.message()).find("imatrix"), std::string::npos) << s;
  }
}

TEST(QuantizeRows, RejectsQ8K) {
  std::vector<float> x(256, 1.0f);
  std::vector<uint8_t> out(292);
  const absl::Status s = QuantizeRows(GgmlType::kQ8_K, x.data(), out.data(), 1, 256, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("Q8_K"), std::string::npos) << s;
}

}  // namespace
}  // namespace tritmoe
