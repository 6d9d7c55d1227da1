// CRC-32C against published check values and the portable table version.
#include "runtime/store/crc32c.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tritmoe {
namespace {

TEST(Crc32cTest, KnownValues) {
  EXPECT_EQ(Crc32c("", 0), 0u);
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);  // the standard check value
  // RFC 3720 (iSCSI) B.4: 32 bytes of zeros, of 0xFF, and an incrementing sequence.
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xFF), inc(32);
  for (int i = 0; i < 32; ++i) inc[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(Crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(Crc32c(inc.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(Crc32cPortable("123456789", 9), 0xE3069283u);
}

TEST(Crc32cTest, HardwareMatchesPortableAndChains) {
  std::mt19937 rng(5);
  std::vector<uint8_t> buf(60000);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  for (size_t start : {0, 1, 3, 7}) {
    // Past 12 KiB the hardware version runs three lanes and combines them.
    for (size_t n : {0, 1, 7, 8, 9, 63, 64, 1000, 4993, 12287, 12288, 12289, 40000, 59990}) {
      ASSERT_EQ(Crc32c(buf.data() + start, n), Crc32cPortable(buf.data() + start, n))
          << start << " " << n;
      const size_t cut = n / 3;
      EXPECT_EQ(Crc32c(buf.data() + start + cut, n - cut, Crc32c(buf.data() + start, cut)),
                Crc32c(buf.data() + start, n));
    }
  }
}

}  // namespace
}  // namespace tritmoe
