// DequantizeRow against llama.cpp's golden outputs, compared as float32 bit patterns:
//  * decode_<TYPE>.txt: random block bytes -> golden floats;
//  * quant_<TYPE>_*.txt: the golden quantized bytes -> the golden "dequantized" floats.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "experts/dequantize.h"
#include "experts/fp16.h"
#include "experts/quant_type.h"
#include "gtest/gtest.h"
#include "tests/quant/testvector_reader.h"

namespace tritmoe {
namespace {

using testing::ReadTestVector;
using testing::TestVector;
using testing::TestVectorDir;

// Decodes `bytes` as `type` and compares every output's bits with `want`; returns mismatches.
int64_t CountMismatches(GgmlType type, const std::vector<uint8_t>& bytes,
                        const std::vector<uint32_t>& want) {
  const TypeTraits& t = GetTypeTraits(type);
  EXPECT_EQ(static_cast<int64_t>(bytes.size()) * t.block_elems,
            static_cast<int64_t>(want.size()) * t.block_bytes);
  std::vector<float> got(want.size());
  DequantizeRow(type, bytes.data(), got.data(), static_cast<int64_t>(got.size()));
  int64_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const uint32_t g = FloatToBits(got[i]);
    if (g != want[i]) {
      if (++bad <= 5) {
        ADD_FAILURE() << t.name << " element " << i << " (block " << i / t.block_elems
                      << "): got 0x" << std::hex << g << " (" << got[i] << ") want 0x" << want[i]
                      << " (" << BitsToFloat(want[i]) << ")" << std::dec;
      }
    }
  }
  return bad;
}

GgmlType TypeOf(const TestVector& tv) {
  auto type = ParseGgmlType(tv.Param("type"));
  EXPECT_TRUE(type.ok()) << tv.path << ": " << type.status();
  return type.ok() ? *type : GgmlType::kF32;
}

class DecodeGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DecodeGoldenTest, BitExact) {
  auto tv = ReadTestVector(TestVectorDir() + "/decode_" + GetParam() + ".txt");
  ASSERT_TRUE(tv.ok()) << tv.status();
  const GgmlType type = TypeOf(*tv);
  EXPECT_EQ(GetTypeTraits(type).name, GetParam());
  ASSERT_TRUE(tv->HasBytes("blocks"));
  ASSERT_TRUE(tv->HasFloats("dequantized"));
  ASSERT_EQ(tv->Bytes("blocks").size(), 24u * GetTypeTraits(type).block_bytes);
  EXPECT_EQ(CountMismatches(type, tv->Bytes("blocks"), tv->floats.at("dequantized")), 0);
}

INSTANTIATE_TEST_SUITE_P(AllDecodeFiles, DecodeGoldenTest,
                         ::testing::Values("Q4_0", "Q8_0", "Q2_K", "Q4_K", "Q6_K", "IQ2_XXS",
                                           "IQ1_S", "IQ1_M", "TQ1_0", "TQ2_0"),
                         [](const auto& info) { return info.param; });

class QuantFileDecodeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(QuantFileDecodeTest, GoldenBytesDecodeToGoldenFloats) {
  auto tv = ReadTestVector(TestVectorDir() + "/quant_" + GetParam() + ".txt");
  ASSERT_TRUE(tv.ok()) << tv.status();
  const GgmlType type = TypeOf(*tv);
  ASSERT_TRUE(tv->HasBytes("quantized"));
  ASSERT_TRUE(tv->HasFloats("dequantized"));
  ASSERT_FALSE(tv->Bytes("quantized").empty());
  EXPECT_EQ(CountMismatches(type, tv->Bytes("quantized"), tv->floats.at("dequantized")), 0);
}

INSTANTIATE_TEST_SUITE_P(AllQuantFiles, QuantFileDecodeTest,
                         ::testing::Values("BF16_noimatrix", "F16_noimatrix", "IQ1_M_imatrix",
                                           "IQ1_M_noimatrix", "IQ1_S_imatrix", "IQ2_XXS_imatrix",
                                           "Q2_K_imatrix", "Q2_K_noimatrix", "Q4_0_imatrix",
                                           "Q4_0_noimatrix", "Q4_K_imatrix", "Q4_K_noimatrix",
                                           "Q6_K_imatrix", "Q6_K_noimatrix", "Q8_0_noimatrix",
                                           "Q8_K_activation", "TQ1_0_noimatrix", "TQ2_0_noimatrix"),
                         [](const auto& info) { return info.param; });

// Every golden file in the directory is covered by one of the lists above.
TEST(DequantizeGolden, ListsCoverDirectory) {
  EXPECT_EQ(testing::ListTestVectors(TestVectorDir(), "decode_").size(), 10u);
  EXPECT_EQ(testing::ListTestVectors(TestVectorDir(), "quant_").size(), 18u);
}

TEST(DequantizeRow, F32IsACopy) {
  const std::vector<float> x = {1.5f, -0.0f, 3e-39f, -7.25f};
  std::vector<float> y(4);
  DequantizeRow(GgmlType::kF32, x.data(), y.data(), 4);
  EXPECT_EQ(0, std::memcmp(x.data(), y.data(), 16));
}

TEST(DequantizeRow, HalfFormatsExactValues) {
  // fp16: 1.0, -2.0, smallest subnormal, +inf; bf16: 1.0, -2.0.
  const uint16_t h[4] = {0x3C00, 0xC000, 0x0001, 0x7C00};
  float y[4];
  DequantizeRow(GgmlType::kF16, h, y, 4);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], -2.0f);
  EXPECT_EQ(y[2], 5.9604645e-08f);
  EXPECT_TRUE(std::isinf(y[3]));
  const uint16_t b[2] = {0x3F80, 0xC000};
  DequantizeRow(GgmlType::kBF16, b, y, 2);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], -2.0f);
}

// A hand-built block with known values, independent of the golden files.
TEST(DequantizeRow, Q8_0HandBuilt) {
  uint8_t block[34] = {};
  block[0] = 0x00;
  block[1] = 0x38;  // fp16 0.5
  for (int j = 0; j < 32; ++j) block[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 16));
  float y[32];
  DequantizeRow(GgmlType::kQ8_0, block, y, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 0.5f * (j - 16));
}

TEST(DequantizeRow, TQ2_0HandBuilt) {
  uint8_t block[66] = {};
  // Element 128h + 32l + m uses bits 2l of qs[32h + m]; set element 33 (h=0, l=1, m=1) to code 2
  // (+1) and element 200 (h=1, l=2, m=8) to code 0 (-1); everything else code 1 (0).
  for (int i = 0; i < 64; ++i) block[i] = 0x55;
  block[1] = static_cast<uint8_t>((0x55 & ~(3 << 2)) | (2 << 2));
  block[40] = static_cast<uint8_t>(0x55 & ~(3 << 4));
  block[64] = 0x00;
  block[65] = 0x40;  // fp16 2.0
  float y[256];
  DequantizeRow(GgmlType::kTQ2_0, block, y, 256);
  for (int i = 0; i < 256; ++i) {
    const float want = i == 33 ? 2.0f : i == 200 ? -2.0f : 0.0f;
    EXPECT_EQ(y[i], want) << i;
  }
}

}  // namespace
}  // namespace tritmoe
