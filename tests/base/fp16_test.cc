#include "experts/fp16.h"

#include <cmath>

#include "gtest/gtest.h"

namespace tritmoe {
namespace {

// Independent reference: exact conversion through double and explicit nearest-even rounding
// over the list of all representable halves.
TEST(Fp16Test, RoundTripEveryHalf) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = Fp16ToFp32(static_cast<uint16_t>(h));
    const uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0x1f && mant != 0) {
      EXPECT_TRUE(std::isnan(f));
      continue;
    }
    double expect = exp == 0 ? std::ldexp(mant, -24)
                             : (exp == 0x1f ? INFINITY : std::ldexp(1024 + mant, exp - 25));
    if (h & 0x8000) expect = -expect;
    ASSERT_EQ(static_cast<double>(f), expect) << std::hex << h;
    if (!(exp == 0 && mant == 0 && (h & 0x8000)))
      ASSERT_EQ(Fp32ToFp16(f), h) << std::hex << h;
  }
}

TEST(Fp16Test, RoundsToNearestEven) {
  // Halfway between 1.0 (0x3c00) and the next half (0x3c01): ties to even -> 0x3c00.
  EXPECT_EQ(Fp32ToFp16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(Fp32ToFp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(Fp32ToFp16(65520.0f), 0x7c00);  // rounds up to infinity
  EXPECT_EQ(Fp32ToFp16(65519.0f), 0x7bff);
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.0f, -25)), 0x0000);  // tie between 0 and the smallest subnormal
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(Fp32ToFp16(NAN) & 0x7e00, 0x7e00);
}

TEST(Bf16Test, RoundsToNearestEven) {
  EXPECT_EQ(Fp32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Fp32ToBf16(BitsToFloat(0x3f808000)), 0x3f80);  // tie, even stays
  EXPECT_EQ(Fp32ToBf16(BitsToFloat(0x3f818000)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(Fp32ToBf16(BitsToFloat(0x3f808001)), 0x3f81);
  EXPECT_EQ(Bf16ToFp32(0xc000), -2.0f);
}

}  // namespace
}  // namespace tritmoe
