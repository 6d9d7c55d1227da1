// The latent KV cache: storage round trip per element type, padding, positions, capacity.
#include "runtime/model/kv_cache.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "experts/fp16.h"
#include "gtest/gtest.h"

namespace tritmoe {
namespace {

KvCacheConfig Config(KvCacheType type, int kv_lora = 32, int n_rot = 16, int64_t capacity = 8) {
  KvCacheConfig c;
  c.n_layer = 2;
  c.kv_lora_rank = kv_lora;
  c.n_rot = n_rot;
  c.type = type;
  c.capacity = capacity;
  return c;
}

std::vector<float> Rows(int64_t n, int64_t elems, float seed) {
  std::vector<float> v(n * elems);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(seed + 0.37f * i) * (1.0f + (i % 7));
  return v;
}

TEST(KvCacheTest, ParsesTypes) {
  EXPECT_EQ(*ParseKvCacheType("f16"), KvCacheType::kF16);
  EXPECT_EQ(*ParseKvCacheType("Q8_0"), KvCacheType::kQ8_0);
  EXPECT_EQ(*ParseKvCacheType("q4_0"), KvCacheType::kQ4_0);
  EXPECT_EQ(*ParseKvCacheType("f32"), KvCacheType::kF32);
  absl::StatusOr<KvCacheType> bad = ParseKvCacheType("q5_1");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("q5_1"), std::string::npos);
}

TEST(KvCacheTest, RowSizes) {
  // R1: 512 + 64 = 576 values, no padding.
  EXPECT_EQ(Config(KvCacheType::kF16, 512, 64).row_bytes(), 1152);
  EXPECT_EQ(Config(KvCacheType::kQ8_0, 512, 64).row_bytes(), 18 * 34);
  EXPECT_EQ(Config(KvCacheType::kQ4_0, 512, 64).row_bytes(), 18 * 18);
  // 32 + 16 = 48 values: padded to 64 for the 32-element blocks, not for f16.
  EXPECT_EQ(Config(KvCacheType::kQ4_0).padded_row_elems(), 64);
  EXPECT_EQ(Config(KvCacheType::kF16).padded_row_elems(), 48);
}

TEST(KvCacheTest, F32AndF16RoundTrip) {
  for (KvCacheType type : {KvCacheType::kF32, KvCacheType::kF16}) {
    auto cache = KvCache::Create(Config(type));
    ASSERT_TRUE(cache.ok());
    const std::vector<float> rows = Rows(3, 48, 0.5f);
    (*cache)->Write(1, 2, 3, rows.data());
    std::vector<float> back(3 * 48);
    (*cache)->Read(1, 2, 3, back.data());
    for (size_t i = 0; i < rows.size(); ++i) {
      const float want = type == KvCacheType::kF32 ? rows[i] : Fp16ToFp32(Fp32ToFp16(rows[i]));
      EXPECT_EQ(back[i], want) << i;
    }
  }
}

// Error bounds of the block formats: Q8_0 within half a step (amax/127) plus the fp16 rounding
// of the scale; Q4_0 within one step (amax/8) of its block, which here includes the padding.
TEST(KvCacheTest, QuantizedRoundTripWithinBlockBounds) {
  for (KvCacheType type : {KvCacheType::kQ8_0, KvCacheType::kQ4_0}) {
    auto cache = KvCache::Create(Config(type));
    ASSERT_TRUE(cache.ok());
    const std::vector<float> rows = Rows(4, 48, 1.5f);
    (*cache)->Write(0, 0, 4, rows.data());
    std::vector<float> back(4 * 48);
    (*cache)->Read(0, 0, 4, back.data());
    double worst = 0.0;
    for (int t = 0; t < 4; ++t) {
      for (int b = 0; b < 2; ++b) {  // blocks [0, 32) and [32, 48) (+ 16 zeros)
        const int lo = 32 * b, hi = b == 0 ? 32 : 48;
        float amax = 0.0f;
        for (int i = lo; i < hi; ++i) amax = std::max(amax, std::fabs(rows[t * 48 + i]));
        const double step = type == KvCacheType::kQ8_0 ? amax / 127.0 : amax / 8.0;
        const double bound = type == KvCacheType::kQ8_0 ? 0.5 * step + 2e-3 * amax : 1.01 * step;
        for (int i = lo; i < hi; ++i) {
          const double err = std::fabs(back[t * 48 + i] - rows[t * 48 + i]);
          EXPECT_LE(err, bound) << "type " << KvCacheTypeName(type) << " token " << t << " elem "
                                << i;
          worst = std::max(worst, err / amax);
        }
      }
    }
    EXPECT_GT(worst, 0.0);  // it really is quantized
  }
}

TEST(KvCacheTest, LayersAndPositionsAreIndependent) {
  auto cache = KvCache::Create(Config(KvCacheType::kQ8_0));
  ASSERT_TRUE(cache.ok());
  const std::vector<float> a = Rows(2, 48, 0.0f), b = Rows(2, 48, 9.0f);
  std::vector<float> a_back(2 * 48), b_back(2 * 48), again(2 * 48);
  (*cache)->Write(0, 0, 2, a.data());
  (*cache)->Read(0, 0, 2, a_back.data());
  (*cache)->Write(1, 0, 2, b.data());  // other layer
  (*cache)->Write(0, 2, 2, b.data());  // later positions
  (*cache)->Read(0, 0, 2, again.data());
  EXPECT_EQ(a_back, again);
  (*cache)->Read(1, 0, 2, b_back.data());
  (*cache)->Read(0, 2, 2, again.data());
  EXPECT_EQ(b_back, again);
}

TEST(KvCacheTest, CapacityCommitTruncate) {
  auto cache = KvCache::Create(Config(KvCacheType::kF16, 32, 16, 5));
  ASSERT_TRUE(cache.ok());
  KvCache& c = **cache;
  EXPECT_TRUE(c.CheckRoom(5).ok());
  c.Commit(3);
  EXPECT_EQ(c.size(), 3);
  absl::Status full = c.CheckRoom(3);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("capacity of 5"), std::string::npos) << full.message();
  EXPECT_TRUE(c.CheckRoom(2).ok());
  c.Truncate(1);
  EXPECT_EQ(c.size(), 1);
  c.Clear();
  EXPECT_EQ(c.size(), 0);
  EXPECT_EQ(c.bytes(), 2 * 5 * 48 * 2);
}

TEST(KvCacheTest, RejectsBadConfig) {
  EXPECT_FALSE(KvCache::Create(Config(KvCacheType::kF16, 32, 16, 0)).ok());
  EXPECT_FALSE(KvCache::Create(Config(KvCacheType::kF16, 0, 16, 4)).ok());
}

}  // namespace
}  // namespace tritmoe
