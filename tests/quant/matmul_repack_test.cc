// The CPU weight layouts (experts/matmul_repack.h): IQ1_S quads hold exactly the GGUF bytes (round
// trip over every grid index and random blocks), decode to the same floats as the GGUF bytes, and
// the repack API rejects what it cannot hold. MatMul on repacked weights is checked against the
// reference in matmul_test.cc.
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "experts/dequantize.h"
#include "experts/fp16.h"
#include "experts/matmul.h"
#include "experts/matmul_iq1s_quads.h"
#include "experts/matmul_isa.h"
#include "experts/matmul_repack.h"
#include "experts/quant_type.h"
#include "gtest/gtest.h"

namespace tritmoe {
namespace {

constexpr int kIq1sBytes = 50;

// Random IQ1_S blocks; block b uses grid indices 32b..32b+31 (mod 2048), so 64 blocks cover every
// index. d is any finite fp16 (random top bits cleared below the exponent maximum).
std::vector<uint8_t> Iq1sBlocks(int64_t n_blocks, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<uint8_t> w(n_blocks * kIq1sBytes);
  for (int64_t b = 0; b < n_blocks; ++b) {
    uint8_t* p = w.data() + b * kIq1sBytes;
    const uint16_t d = static_cast<uint16_t>((byte(rng) << 8 | byte(rng)) & 0xBBFF);
    std::memcpy(p, &d, 2);
    for (int ib = 0; ib < 8; ++ib) {
      uint16_t qh = static_cast<uint16_t>((byte(rng) & 0xF) << 12);  // scale and delta sign
      for (int l = 0; l < 4; ++l) {
        const int idx = static_cast<int>((32 * b + 4 * ib + l) % 2048);
        p[2 + 4 * ib + l] = static_cast<uint8_t>(idx & 0xFF);
        qh = static_cast<uint16_t>(qh | ((idx >> 8) << (3 * l)));
      }
      std::memcpy(p + 34 + 2 * ib, &qh, 2);
    }
  }
  return w;
}

TEST(Iq1sQuadsTest, RoundTripEveryGridIndex) {
  const std::vector<uint8_t> gguf = Iq1sBlocks(64, 1);
  for (int64_t b = 0; b < 64; ++b) {
    uint8_t quads[iq1s_quads::kBlockBytes], back[kIq1sBytes];
    iq1s_quads::PackBlock(gguf.data() + b * kIq1sBytes, quads);
    iq1s_quads::UnpackBlock(quads, back);
    ASSERT_EQ(std::memcmp(back, gguf.data() + b * kIq1sBytes, kIq1sBytes), 0) << "block " << b;
  }
}

TEST(Iq1sQuadsTest, RandomBytesRoundTripAndDecode) {
  // Any 50 bytes are a valid IQ1_S block (every 11-bit index is a grid point).
  std::mt19937 rng(2);
  std::uniform_int_distribution<int> byte(0, 255);
  const int64_t rows = 7, cols = 256 * 5;
  std::vector<uint8_t> gguf(rows * RowBytes(GgmlType::kIQ1_S, cols));
  for (auto& v : gguf) v = static_cast<uint8_t>(byte(rng));
  const WeightView view{GgmlType::kIQ1_S, gguf.data(), rows, cols};
  absl::StatusOr<RepackedWeights> packed = RepackWeights(view, WeightLayout::kIq1sQuads);
  ASSERT_TRUE(packed.ok()) << packed.status();
  EXPECT_EQ(packed->bytes(), rows * cols / 256 * 64);
  EXPECT_EQ(packed->view().layout, WeightLayout::kIq1sQuads);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(packed->view().data) % 64, 0u);
  std::vector<uint8_t> back(gguf.size());
  ASSERT_TRUE(UnpackWeights(packed->view(), back.data()).ok());
  EXPECT_EQ(back, gguf);
  // The same float operations: bit-identical values (NaN where d is NaN).
  std::vector<float> want(cols), got(cols);
  const auto* q = static_cast<const uint8_t*>(packed->view().data);
  for (int64_t r = 0; r < rows; ++r) {
    DequantizeRow(GgmlType::kIQ1_S, gguf.data() + r * RowBytes(GgmlType::kIQ1_S, cols), want.data(),
                  cols);
    DequantizeLayoutRow(GgmlType::kIQ1_S, WeightLayout::kIq1sQuads,
                        q + r * LayoutRowBytes(GgmlType::kIQ1_S, WeightLayout::kIq1sQuads, cols),
                        got.data(), cols);
    EXPECT_EQ(std::memcmp(want.data(), got.data(), cols * sizeof(float)), 0) << "row " << r;
  }
}

TEST(Iq1sQuadsTest, FieldsHoldTheCodes) {
  // Block with known codes: element i of the grid entry 0 is -1 everywhere (u = 0), d = 1.
  std::vector<uint8_t> gguf = Iq1sBlocks(1, 3);
  uint8_t quads[64];
  iq1s_quads::PackBlock(gguf.data(), quads);
  std::vector<float> ref(256);
  DequantizeRow(GgmlType::kIQ1_S, gguf.data(), ref.data(), 256);
  const float d = Fp16ToFp32(iq1s_quads::DBits(quads));
  for (int i = 0; i < 256; ++i) {
    const int k = i / 32;
    const float dl = d * static_cast<float>(2 * iq1s_quads::Scale(quads, k) + 1);
    const float delta = iq1s_quads::DeltaNegative(quads, k) ? -0.125f : 0.125f;
    ASSERT_LT(iq1s_quads::Field(quads, k, (i % 32) / 4), 81u);
    EXPECT_EQ(dl * (static_cast<float>(iq1s_quads::Code(quads, i) - 1) + delta), ref[i]) << i;
  }
}

TEST(RepackWeightsTest, RejectsWhatTheLayoutCannotHold) {
  std::vector<uint8_t> buf(4 * 54 * 2);
  const absl::StatusOr<RepackedWeights> tq1 =
      RepackWeights({GgmlType::kTQ1_0, buf.data(), 2, 256}, WeightLayout::kIq1sQuads);
  ASSERT_FALSE(tq1.ok());
  EXPECT_EQ(tq1.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(tq1.status().message().find("TQ1_0"), std::string::npos) << tq1.status();

  const absl::StatusOr<RepackedWeights> cols =
      RepackWeights({GgmlType::kIQ1_S, buf.data(), 1, 300}, WeightLayout::kIq1sQuads);
  ASSERT_FALSE(cols.ok());
  EXPECT_NE(cols.status().message().find("300"), std::string::npos) << cols.status();

  const absl::StatusOr<RepackedWeights> twice = RepackWeights(
      {GgmlType::kIQ1_S, buf.data(), 1, 256, WeightLayout::kIq1sQuads}, WeightLayout::kIq1sQuads);
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("already"), std::string::npos) << twice.status();
}

TEST(RepackWeightsTest, PreferredLayout) {
  EXPECT_EQ(PreferredCpuLayout(GgmlType::kTQ1_0), WeightLayout::kGguf);
  EXPECT_EQ(PreferredCpuLayout(GgmlType::kQ4_K), WeightLayout::kGguf);
  EXPECT_EQ(PreferredCpuLayout(GgmlType::kIQ1_S), BestSupportedMatmulIsa() == MatmulIsa::kAvx512
                                                      ? WeightLayout::kIq1sQuads
                                                      : WeightLayout::kGguf);
  EXPECT_TRUE(LayoutSupports(WeightLayout::kGguf, GgmlType::kTQ2_0));
  EXPECT_FALSE(LayoutSupports(WeightLayout::kIq1sQuads, GgmlType::kIQ1_M));
  EXPECT_EQ(LayoutRowBytes(GgmlType::kIQ1_S, WeightLayout::kIq1sQuads, 7168), 28 * 64);
  EXPECT_EQ(LayoutRowBytes(GgmlType::kIQ1_S, WeightLayout::kGguf, 7168), 28 * 50);
}

}  // namespace
}  // namespace tritmoe
