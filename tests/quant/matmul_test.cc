// MatMul against an independent reference, for every weight type, weight layout and ISA level this
// CPU has: the weight row decoded by DequantizeRow (from the GGUF bytes, also for repacked weights)
// and the activation quantized by the reference QuantizeRowQ8K / QuantizeRowQ8_0 and decoded
// (d * q), multiplied in double precision. Integer sums are exact, so the only allowed difference
// is float rounding of the per-block scaling.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "base/thread_pool.h"
#include "experts/dequantize.h"
#include "experts/fp16.h"
#include "experts/matmul.h"
#include "experts/matmul_isa.h"
#include "experts/matmul_kernels.h"
#include "experts/matmul_packed.h"
#include "experts/matmul_repack.h"
#include "experts/quant_type.h"
#include "experts/quantize.h"
#include "gtest/gtest.h"

namespace tritmoe {
namespace {

const GgmlType kAllTypes[] = {
    GgmlType::kF32,   GgmlType::kF16,   GgmlType::kBF16, GgmlType::kQ4_0,    GgmlType::kQ8_0,
    GgmlType::kQ2_K,  GgmlType::kQ4_K,  GgmlType::kQ6_K, GgmlType::kIQ2_XXS, GgmlType::kIQ1_S,
    GgmlType::kIQ1_M, GgmlType::kTQ1_0, GgmlType::kTQ2_0};

bool IsFloatType(GgmlType t) {
  return t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16;
}
bool UsesQ8_0(GgmlType t) { return t == GgmlType::kQ4_0 || t == GgmlType::kQ8_0; }

std::vector<float> RandomFloats(int64_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

void PutFp16(uint8_t* p, float v) {
  const uint16_t h = Fp32ToFp16(v);
  std::memcpy(p, &h, 2);
}

// Weights of `type` quantized from Gaussian floats (an imatrix of ones where one is needed).
std::vector<uint8_t> QuantizedWeights(GgmlType type, int64_t rows, int64_t cols,
                                      std::mt19937& rng) {
  const std::vector<float> f = RandomFloats(rows * cols, rng, 0.05f);
  const std::vector<float> imatrix(cols, 1.0f);
  std::vector<uint8_t> w(rows * RowBytes(type, cols));
  const absl::Status s = QuantizeRows(type, f.data(), w.data(), rows, cols,
                                      GetTypeTraits(type).needs_imatrix ? imatrix.data() : nullptr);
  EXPECT_TRUE(s.ok()) << s;
  return w;
}

// Random block bytes (every bit pattern of quants, grid indices, signs and sub-scales) with sane
// fp16 super-scales, so no value is NaN/inf.
std::vector<uint8_t> RandomBlockWeights(GgmlType type, int64_t rows, int64_t cols,
                                        std::mt19937& rng) {
  if (IsFloatType(type)) return QuantizedWeights(type, rows, cols, rng);
  const TypeTraits& t = GetTypeTraits(type);
  std::vector<uint8_t> w(rows * RowBytes(type, cols));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> mag(0.001f, 0.02f);
  for (auto& b : w) b = static_cast<uint8_t>(byte(rng));
  for (size_t off = 0; off < w.size(); off += t.block_bytes) {
    uint8_t* b = w.data() + off;
    switch (type) {
      case GgmlType::kQ4_0:
      case GgmlType::kQ8_0:
      case GgmlType::kIQ2_XXS:
      case GgmlType::kIQ1_S:
        PutFp16(b, mag(rng));
        break;
      case GgmlType::kQ4_K:
        PutFp16(b, mag(rng));
        PutFp16(b + 2, mag(rng));
        break;
      case GgmlType::kQ2_K:
        PutFp16(b + 80, mag(rng));
        PutFp16(b + 82, mag(rng));
        break;
      case GgmlType::kQ6_K:
        PutFp16(b + 208, mag(rng));
        break;
      case GgmlType::kIQ1_M: {
        // The fp16 super-scale lives in the top nibbles of the four scale words.
        const uint16_t h = Fp32ToFp16(mag(rng));
        for (int k = 0; k < 4; ++k) {
          b[48 + 2 * k + 1] =
              static_cast<uint8_t>((b[48 + 2 * k + 1] & 0x0F) | (((h >> (4 * k)) & 0xF) << 4));
        }
        break;
      }
      case GgmlType::kTQ1_0:
        PutFp16(b + 52, mag(rng));
        break;
      case GgmlType::kTQ2_0:
        PutFp16(b + 64, mag(rng));
        break;
      default:
        ADD_FAILURE() << "no scale layout for " << t.name;
    }
  }
  return w;
}

// The activation row as the quantized kernels see it: quantized by the reference quantizer and
// decoded. Float types (and the kFloat path) see x itself.
std::vector<double> ReferenceActivation(GgmlType type, const float* x, int64_t cols,
                                        ActPrecision precision) {
  std::vector<double> out(cols);
  if (precision == ActPrecision::kFloat || IsFloatType(type)) {
    for (int64_t i = 0; i < cols; ++i) out[i] = x[i];
    return out;
  }
  const GgmlType act = UsesQ8_0(type) ? GgmlType::kQ8_0 : GgmlType::kQ8_K;
  std::vector<uint8_t> q(RowBytes(act, cols));
  if (act == GgmlType::kQ8_0) {
    QuantizeRowQ8_0(x, q.data(), cols);
  } else {
    QuantizeRowQ8K(x, q.data(), cols);
  }
  std::vector<float> f(cols);
  DequantizeRow(act, q.data(), f.data(), cols);
  for (int64_t i = 0; i < cols; ++i) out[i] = f[i];
  return out;
}

struct Case {
  GgmlType type;
  MatmulIsa isa;
  bool random_bytes;
  WeightLayout layout = WeightLayout::kGguf;
};

// A repacked layout's mark in test names.
std::string LayoutSuffix(WeightLayout layout, const char* quads, const char* tq1_as_tq2) {
  switch (layout) {
    case WeightLayout::kGguf:
      return "";
    case WeightLayout::kIq1sQuads:
      return quads;
    case WeightLayout::kTq1AsTq2:
      return tq1_as_tq2;
  }
  return "";
}

void PrintTo(const Case& c, std::ostream* os) {
  *os << GetTypeTraits(c.type).name << LayoutSuffix(c.layout, " (quads)", " (as TQ2_0)") << " "
      << MatmulIsaName(c.isa) << (c.random_bytes ? " random bytes" : " quantized");
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return std::string(GetTypeTraits(info.param.type).name) +
         LayoutSuffix(info.param.layout, "quads", "astq2") + "_" + MatmulIsaName(info.param.isa) +
         (info.param.random_bytes ? "_randombytes" : "_quantized");
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (int isa = 0; isa <= static_cast<int>(BestSupportedMatmulIsa()); ++isa) {
    const auto level = static_cast<MatmulIsa>(isa);
    for (GgmlType t : kAllTypes) {
      cases.push_back({t, level, false});
      if (!IsFloatType(t)) cases.push_back({t, level, true});
    }
    for (bool random : {false, true}) {
      cases.push_back({GgmlType::kIQ1_S, level, random, WeightLayout::kIq1sQuads});
      cases.push_back({GgmlType::kTQ1_0, level, random, WeightLayout::kTq1AsTq2});
    }
  }
  return cases;
}

class MatMulTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { ASSERT_TRUE(SetMatmulIsaForTesting(GetParam().isa).ok()); }
  void TearDown() override { (void)SetMatmulIsaForTesting(BestSupportedMatmulIsa()); }

  // Runs MatMul (on the weights repacked into the case's layout) and checks every output against
  // the double-precision reference computed from the GGUF bytes.
  void Check(int64_t rows, int64_t cols, int64_t n_tokens, int n_threads, ActPrecision precision,
             uint32_t seed) {
    const Case& c = GetParam();
    std::mt19937 rng(seed);
    const std::vector<uint8_t> w = c.random_bytes ? RandomBlockWeights(c.type, rows, cols, rng)
                                                  : QuantizedWeights(c.type, rows, cols, rng);
    const std::vector<float> x = RandomFloats(n_tokens * cols, rng);
    std::vector<float> y(n_tokens * rows, std::nanf(""));
    ThreadPool pool(n_threads);
    const WeightView gguf{c.type, w.data(), rows, cols};
    RepackedWeights repacked;
    if (c.layout != WeightLayout::kGguf) {
      absl::StatusOr<RepackedWeights> r = RepackWeights(gguf, c.layout, &pool);
      ASSERT_TRUE(r.ok()) << r.status();
      repacked = std::move(r).value();
    }
    MatMul(c.layout == WeightLayout::kGguf ? gguf : repacked.view(), x.data(), n_tokens, y.data(),
           pool, precision);

    std::vector<float> wrow(cols);
    int failures = 0;
    for (int64_t t = 0; t < n_tokens; ++t) {
      const std::vector<double> a =
          ReferenceActivation(c.type, x.data() + t * cols, cols, precision);
      for (int64_t r = 0; r < rows; ++r) {
        DequantizeRow(c.type, w.data() + r * RowBytes(c.type, cols), wrow.data(), cols);
        double ref = 0, mag = 0;
        for (int64_t i = 0; i < cols; ++i) {
          ref += wrow[i] * a[i];
          mag += std::fabs(wrow[i] * a[i]);
        }
        const float got = y[t * rows + r];
        if (!(std::fabs(got - ref) <= 1e-5 * mag + 1e-30) && ++failures <= 5) {
          ADD_FAILURE() << "token " << t << " row " << r << ": got " << got << ", reference " << ref
                        << " (sum |w*x| " << mag << ") rows=" << rows << " cols=" << cols
                        << " n_tokens=" << n_tokens;
        }
      }
    }
    EXPECT_EQ(failures, 0);
  }
};

TEST_P(MatMulTest, QuantizedActivations) {
  const int64_t cols = UsesQ8_0(GetParam().type) || IsFloatType(GetParam().type) ? 352 : 512;
  uint32_t seed = 1;
  for (int64_t n_tokens : {1, 3, 8, 17}) {
    Check(37, cols, n_tokens, 2, ActPrecision::kQuantized, seed++);
  }
}

TEST_P(MatMulTest, ThreeThreadsLongRows) { Check(29, 7168, 5, 3, ActPrecision::kQuantized, 99); }

TEST_P(MatMulTest, FloatPath) {
  for (int64_t n_tokens : {1, 9}) Check(19, 768, n_tokens, 2, ActPrecision::kFloat, 7);
}

// Tile kernels take up to 4 rows and 8 tokens per call: every remainder of rows per thread chunk
// and of tokens per tile.
TEST_P(MatMulTest, RowAndTokenTiles) {
  const int64_t cols = UsesQ8_0(GetParam().type) || IsFloatType(GetParam().type) ? 96 : 768;
  uint32_t seed = 40;
  for (int64_t rows : {1, 2, 3, 5, 6, 7, 9}) {
    for (int64_t n_tokens : {1, 2, 5, 9}) {
      Check(rows, cols, n_tokens, rows % 2 ? 1 : 3, ActPrecision::kQuantized, seed++);
    }
  }
}

// Rows long enough for several column passes (each adds into y) even for one token, and for the
// single-token kernels' groups of 32 blocks to end in a partial group.
TEST_P(MatMulTest, ColumnPasses) {
  if (IsFloatType(GetParam().type) || UsesQ8_0(GetParam().type)) GTEST_SKIP() << "one pass";
  Check(5, 256 * 120, 1, 2, ActPrecision::kQuantized, 77);
  Check(6, 256 * 29, 9, 2, ActPrecision::kQuantized, 78);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MatMulTest, ::testing::ValuesIn(AllCases()), CaseName);

// Activations packed once serve two weight matrices of the same type (gate and up).
TEST(PackedActivationsTest, OnePackTwoMatrices) {
  std::mt19937 rng(5);
  const int64_t rows = 21, cols = 1024, n_tokens = 4;
  const std::vector<uint8_t> w1 = QuantizedWeights(GgmlType::kTQ2_0, rows, cols, rng);
  const std::vector<uint8_t> w2 = QuantizedWeights(GgmlType::kTQ2_0, rows, cols, rng);
  const std::vector<float> x = RandomFloats(n_tokens * cols, rng);
  ThreadPool pool(2);
  PackedActivations packed;
  packed.Pack(GgmlType::kTQ2_0, x.data(), n_tokens, cols, &pool);
  EXPECT_EQ(packed.stride() % 64, 0);
  for (const auto* w : {&w1, &w2}) {
    const WeightView view{GgmlType::kTQ2_0, w->data(), rows, cols};
    std::vector<float> got(n_tokens * rows), want(n_tokens * rows);
    MatMulPacked(view, packed, got.data(), pool);
    MatMul(view, x.data(), n_tokens, want.data(), pool);
    EXPECT_EQ(got, want);
  }
}

// The vector kernels quantize activations with their own code; where their format is plain Q8_K
// or Q8_0 the bytes must equal the reference quantizer's, including rounding ties, a zero block
// and a largest magnitude that occurs with both signs (the first one decides the sign of d).
TEST(PackActivationsTest, BytesMatchReferenceQuantizer) {
  const int64_t n = 1024;
  std::mt19937 rng(11);
  std::vector<float> x = RandomFloats(n, rng, 2.0f);
  for (int i = 256; i < 512; ++i) x[i] = 0.0f;  // block 1: all zero
  x[512 + 5] = -9.0f;                           // block 2: tie of |max|, negative first
  x[512 + 100] = 9.0f;
  for (int i = 768; i < 1024; ++i) x[i] = static_cast<float>((i % 64) - 32) + 0.5f;  // halves
  x[768] = 127.0f;  // block 3: scale exactly 1, so every product is an exact .5 tie
  for (int isa = 0; isa <= static_cast<int>(BestSupportedMatmulIsa()); ++isa) {
    for (GgmlType type : kAllTypes) {
      const matmul_internal::TypeKernels& k =
          matmul_internal::KernelsFor(static_cast<MatmulIsa>(isa)).For(type);
      const bool q8k = k.act_block_bytes == 292, q8_0 = k.act_block_bytes == 34;
      if (!q8k && !q8_0) continue;  // float, or a kernel-specific re-ordered layout
      const GgmlType act = q8k ? GgmlType::kQ8_K : GgmlType::kQ8_0;
      std::vector<uint8_t> want(RowBytes(act, n)), got(RowBytes(act, n) + 64, 0xCD);
      if (q8k) {
        QuantizeRowQ8K(x.data(), want.data(), n);
      } else {
        QuantizeRowQ8_0(x.data(), want.data(), n);
      }
      k.pack(x.data(), n, got.data());
      got.resize(want.size());
      EXPECT_EQ(got, want) << GetTypeTraits(type).name << " "
                           << MatmulIsaName(static_cast<MatmulIsa>(isa));
    }
  }
}

TEST(MatmulIsaTest, NamesAndLimits) {
  EXPECT_STREQ(MatmulIsaName(MatmulIsa::kScalar), "scalar");
  EXPECT_STREQ(MatmulIsaName(MatmulIsa::kAvx512), "avx512");
  EXPECT_TRUE(SetMatmulIsaForTesting(MatmulIsa::kScalar).ok());
  EXPECT_EQ(ActiveMatmulIsa(), MatmulIsa::kScalar);
  EXPECT_TRUE(SetMatmulIsaForTesting(BestSupportedMatmulIsa()).ok());
  if (BestSupportedMatmulIsa() != MatmulIsa::kAvx512) {
    EXPECT_FALSE(SetMatmulIsaForTesting(MatmulIsa::kAvx512).ok());
  }
}

}  // namespace
}  // namespace tritmoe
