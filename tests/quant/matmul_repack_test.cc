// The CPU weight layouts (experts/matmul_repack.h): IQ1_S quads hold exactly the GGUF bytes (round
// trip over every grid index and random blocks), decode to the same floats as the GGUF bytes (also
// as the kernels read them: negated codes where δ = -1/8), and the repack API rejects what it
// cannot hold. TQ1_0 in TQ2_0 blocks (kTq1AsTq2): random bytes and edge scales decode
// bit-identically to the TQ1_0 bytes (through TQ2_0's own decoder too), and the quantizer's bytes
// (every one of the 243 packed values) come back exactly. MatMul on repacked weights is checked
// against the reference in matmul_test.cc.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <random>
#include <vector>

#include "experts/dequantize.h"
#include "experts/fp16.h"
#include "experts/matmul.h"
#include "experts/matmul_iq1s_quads.h"
#include "experts/matmul_isa.h"
#include "experts/matmul_repack.h"
#include "experts/quant_type.h"
#include "experts/quantize.h"
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
  int negated_blocks = 0;
  for (int i = 0; i < 256; ++i) {
    const int k = i / 32;
    const float dl = d * static_cast<float>(2 * iq1s_quads::Scale(quads, k) + 1);
    const float delta = iq1s_quads::DeltaNegative(quads, k) ? -0.125f : 0.125f;
    const uint32_t field = iq1s_quads::Field(quads, k, (i % 32) / 4);
    ASSERT_LT(field, 81u);
    EXPECT_EQ(dl * (static_cast<float>(iq1s_quads::Code(quads, i) - 1) + delta), ref[i]) << i;
    // As the kernels read it: the stored digit u' with δ = +1/8 and the sign in the scale (a
    // sub-block with δ = -1/8 holds its codes negated).
    static constexpr uint32_t kPow3[4] = {1, 3, 9, 27};
    const int stored = static_cast<int>(field / kPow3[i % 4] % 3);
    const float sign = iq1s_quads::DeltaNegative(quads, k) ? -1.0f : 1.0f;
    EXPECT_EQ(sign * dl * (static_cast<float>(stored - 1) + 0.125f), ref[i]) << i;
    negated_blocks += iq1s_quads::DeltaNegative(quads, k) && i % 32 == 0;
  }
  EXPECT_GT(negated_blocks, 0);  // the random block has both delta signs
  EXPECT_LT(negated_blocks, 8);
}

constexpr int kTq1Bytes = 54;

// Repacks TQ1_0 `gguf` (rows x cols) into kTq1AsTq2, checking the copy's shape.
RepackedWeights RepackTq1(const std::vector<uint8_t>& gguf, int64_t rows, int64_t cols) {
  absl::StatusOr<RepackedWeights> packed =
      RepackWeights({GgmlType::kTQ1_0, gguf.data(), rows, cols}, WeightLayout::kTq1AsTq2);
  EXPECT_TRUE(packed.ok()) << packed.status();
  if (!packed.ok()) return RepackedWeights();
  EXPECT_EQ(packed->bytes(), rows * cols / 256 * 66);
  EXPECT_EQ(packed->view().type, GgmlType::kTQ1_0);
  EXPECT_EQ(packed->view().layout, WeightLayout::kTq1AsTq2);
  return std::move(packed).value();
}

// Every row of `packed` decodes to bit-identical floats (NaN where d is NaN) to the TQ1_0 bytes,
// through DequantizeLayoutRow and through the TQ2_0 decoder that matches the kernels' input.
void ExpectSameValues(const std::vector<uint8_t>& gguf, const RepackedWeights& packed, int64_t rows,
                      int64_t cols) {
  std::vector<float> want(cols), got(cols), tq2(cols);
  const auto* q = static_cast<const uint8_t*>(packed.view().data);
  const int64_t packed_row = LayoutRowBytes(GgmlType::kTQ1_0, WeightLayout::kTq1AsTq2, cols);
  ASSERT_EQ(packed_row, RowBytes(GgmlType::kTQ2_0, cols));
  for (int64_t r = 0; r < rows; ++r) {
    DequantizeRow(GgmlType::kTQ1_0, gguf.data() + r * RowBytes(GgmlType::kTQ1_0, cols), want.data(),
                  cols);
    DequantizeLayoutRow(GgmlType::kTQ1_0, WeightLayout::kTq1AsTq2, q + r * packed_row, got.data(),
                        cols);
    DequantizeRow(GgmlType::kTQ2_0, q + r * packed_row, tq2.data(), cols);
    EXPECT_EQ(std::memcmp(want.data(), got.data(), cols * sizeof(float)), 0) << "row " << r;
    EXPECT_EQ(std::memcmp(want.data(), tq2.data(), cols * sizeof(float)), 0) << "row " << r;
  }
}

TEST(Tq1AsTq2Test, RandomBytesAndEdgeScalesDecodeTheSame) {
  // Any 54 bytes are a TQ1_0 block (every byte decodes to codes 0..2). Block b's 52 code bytes
  // are 52b..52b+51 mod 256 in the first 5 blocks (every byte value), random after; d runs
  // through zeros, subnormals, the largest finite values, infinities and NaN, then random bits.
  const uint16_t kEdgeD[] = {0x0000, 0x8000, 0x0001, 0x83FF, 0x3C00, 0xBC00,
                             0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0xFFFF};
  std::mt19937 rng(4);
  std::uniform_int_distribution<int> byte(0, 255);
  const int64_t rows = 9, cols = 256 * 6;
  std::vector<uint8_t> gguf(rows * RowBytes(GgmlType::kTQ1_0, cols));
  for (auto& v : gguf) v = static_cast<uint8_t>(byte(rng));
  const int64_t n_blocks = rows * cols / 256;
  for (int64_t b = 0; b < n_blocks; ++b) {
    uint8_t* p = gguf.data() + b * kTq1Bytes;
    if (b < 5) {
      for (int i = 0; i < 52; ++i) p[i] = static_cast<uint8_t>((52 * b + i) % 256);
    }
    if (b < static_cast<int64_t>(std::size(kEdgeD))) std::memcpy(p + 52, &kEdgeD[b], 2);
  }
  const RepackedWeights packed = RepackTq1(gguf, rows, cols);
  ASSERT_NE(packed.view().data, nullptr);
  ExpectSameValues(gguf, packed, rows, cols);
  // Hand-made bytes outside the quantizer's 243 values come back as bytes with the same values.
  std::vector<uint8_t> back(gguf.size());
  ASSERT_TRUE(UnpackWeights(packed.view(), back.data()).ok());
  ExpectSameValues(back, packed, rows, cols);
}

TEST(Tq1AsTq2Test, QuantizerBytesRoundTripExactly) {
  // Quantized rows, then blocks of every packed value the quantizer writes: ceil(v * 256 / 243)
  // for the five-code bytes, and for qh (four codes, fifth 0) the same of 3u.
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t rows = 6, cols = 256 * 4;
  std::vector<float> x(rows * cols);
  for (auto& v : x) v = normal(rng);
  x[3] = 0.0f;
  std::fill(x.begin() + cols, x.begin() + 2 * cols, 0.0f);  // an all-zero row: d = 0
  std::vector<uint8_t> gguf(rows * RowBytes(GgmlType::kTQ1_0, cols));
  ASSERT_TRUE(QuantizeRows(GgmlType::kTQ1_0, x.data(), gguf.data(), rows, cols, nullptr).ok());
  // Rows 4 and 5 (8 blocks): every packed value, cycling.
  uint8_t* hand = gguf.data() + 4 * RowBytes(GgmlType::kTQ1_0, cols);
  for (int b = 0, v = 0, u = 0; b < 8; ++b) {
    uint8_t* p = hand + b * kTq1Bytes;
    for (int i = 0; i < 48; ++i, v = (v + 1) % 243)
      p[i] = static_cast<uint8_t>((v * 256 + 242) / 243);
    for (int j = 0; j < 4; ++j, u = (u + 1) % 81) {
      p[48 + j] = static_cast<uint8_t>((3 * u * 256 + 242) / 243);
    }
  }
  const RepackedWeights packed = RepackTq1(gguf, rows, cols);
  ASSERT_NE(packed.view().data, nullptr);
  ExpectSameValues(gguf, packed, rows, cols);
  std::vector<uint8_t> back(gguf.size());
  ASSERT_TRUE(UnpackWeights(packed.view(), back.data()).ok());
  EXPECT_EQ(back, gguf);
}

TEST(Tq1AsTq2Test, CodesLandWhereTq2Reads) {
  // One element at a time set to +d (code 2) in an otherwise zero (code 1) block: the TQ2_0 bytes
  // hold code 2 at that element's 2-bit field and code 1 everywhere else.
  std::vector<float> x(256);
  for (int i = 0; i < 256; ++i) {
    std::fill(x.begin(), x.end(), 0.0f);
    x[i] = 1.0f;
    std::vector<uint8_t> gguf(kTq1Bytes);
    ASSERT_TRUE(QuantizeRows(GgmlType::kTQ1_0, x.data(), gguf.data(), 1, 256, nullptr).ok());
    const RepackedWeights packed = RepackTq1(gguf, 1, 256);
    ASSERT_NE(packed.view().data, nullptr);
    const auto* q = static_cast<const uint8_t*>(packed.view().data);
    for (int e = 0; e < 256; ++e) {
      const int code = (q[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
      ASSERT_EQ(code, e == i ? 2 : 1) << "set element " << i << ", element " << e;
    }
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

  const absl::StatusOr<RepackedWeights> tq2 =
      RepackWeights({GgmlType::kTQ2_0, buf.data(), 1, 256}, WeightLayout::kTq1AsTq2);
  ASSERT_FALSE(tq2.ok());
  EXPECT_NE(tq2.status().message().find("TQ2_0"), std::string::npos) << tq2.status();
}

TEST(RepackWeightsTest, PreferredLayout) {
  EXPECT_EQ(PreferredCpuLayout(GgmlType::kTQ1_0), BestSupportedMatmulIsa() == MatmulIsa::kAvx512
                                                      ? WeightLayout::kTq1AsTq2
                                                      : WeightLayout::kGguf);
  EXPECT_EQ(PreferredCpuLayout(GgmlType::kTQ2_0), WeightLayout::kGguf);
  EXPECT_FALSE(LayoutSupports(WeightLayout::kTq1AsTq2, GgmlType::kTQ2_0));
  EXPECT_TRUE(LayoutSupports(WeightLayout::kTq1AsTq2, GgmlType::kTQ1_0));
  EXPECT_EQ(LayoutRowBytes(GgmlType::kTQ1_0, WeightLayout::kTq1AsTq2, 7168), 28 * 66);
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
