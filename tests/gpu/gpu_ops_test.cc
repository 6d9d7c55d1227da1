// The GPU forward pass's ops (runtime/gpu, experts/cuda/float_gemv.h) against their CPU twins, on
// random inputs drawn fresh per case, outputs poisoned with NaN before each launch. Bounds:
//  * float GEMV (F32/F16/BF16/Q8_0, dense and grouped with row gathers/scatters): the weights are
//    the CPU's decoded values and the products float32 FMAs, so |y - y_double| <=
//    1e-5 * sum |w x| (float32 rounding over up to a few thousand terms);
//  * embedding (every table type): bit-equal to DequantizeRow (same float operations);
//  * RMSNorm, RoPE, SwiGLU, combine: the same float operations as the twin, rounded one by one;
//    sums of squares in double in another order: <= 1e-6 relative (in practice equal);
//  * latent cache write (f32/f16/q8_0/q4_0): the stored rows decode to the CPU KvCache's values
//    (>= 99.5% bit-equal, all within one quantization step);
//  * absorbed MLA scores/softmax/weighted sum: against a double reference over the decoded
//    cache, max |err| / max |ref| <= 1e-5;
//  * router: the same experts in the same order as Route, weights within 1e-6 relative;
//  * grouping by expert: a valid CSR with the CPU's per-expert counts;
//  * argmax: the first index of the maximum, as std::max_element.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "experts/cuda/device_buffer.h"
#include "experts/cuda/float_gemv.h"
#include "experts/dequantize.h"
#include "experts/quantize.h"
#include "gtest/gtest.h"
#include "runtime/gpu/elementwise.h"
#include "runtime/gpu/embedding.h"
#include "runtime/gpu/gpu_kv_cache.h"
#include "runtime/gpu/mla_attention.h"
#include "runtime/gpu/moe_route.h"
#include "runtime/gpu/rope.h"
#include "runtime/gpu/rope_table.h"
#include "runtime/gpu/sampling.h"
#include "runtime/model/expert_exchange.h"
#include "runtime/model/kv_cache.h"
#include "runtime/model/rms_norm.h"
#include "runtime/model/rope.h"
#include "runtime/model/router.h"
#include "tests/gpu/gpu_test_util.h"

namespace tritmoe {
namespace {

using testing::RandomFloats;

template <class T>
DeviceBuffer ToDevice(const std::vector<T>& v) {
  DeviceBuffer b(std::max<size_t>(v.size(), 1) * sizeof(T));
  if (!v.empty()) b.CopyFromHost(v.data(), v.size() * sizeof(T));
  return b;
}
template <class T>
std::vector<T> ToHost(const DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  if (n > 0) b.CopyToHost(v.data(), n * sizeof(T));
  return v;
}
DeviceBuffer NanBuffer(size_t floats) {
  DeviceBuffer b(floats * sizeof(float));
  b.Fill(0xFF);  // all-ones bytes: a NaN in every float
  return b;
}
void Sync() { ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess); }

// Random rows of `type` (floats quantized by the CPU quantizer) and their decoded values.
struct Rows {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};
Rows RandomRows(GgmlType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  const std::vector<float> src = RandomFloats(rows * cols, rng);
  Rows r;
  r.bytes.resize(rows * RowBytes(type, cols));
  EXPECT_TRUE(QuantizeRows(type, src.data(), r.bytes.data(), rows, cols, nullptr).ok());
  r.values.resize(rows * cols);
  for (int64_t i = 0; i < rows; ++i) {
    DequantizeRow(type, r.bytes.data() + i * RowBytes(type, cols), &r.values[i * cols], cols);
  }
  return r;
}

// ---------------------------------------------------------------------------------------------

TEST(FloatGemvTest, DenseAndGroupedMatchDoubleReference) {
  TM_SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0}) {
    // 256 x 7168 (the router) and 70 x 4096 at <= 8 dense pairs take the row-per-CTA kernel.
    for (auto [rows, cols] : {std::pair<int, int>{5, 32},
                              {512, 128},
                              {37, 1024},
                              {70, 2048},
                              {70, 4096},
                              {256, 7168}}) {
      SCOPED_TRACE(std::string(GetTypeTraits(type).name) + " " + std::to_string(rows) + "x" +
                   std::to_string(cols));
      const int n_mat = 3, n_x = 11;
      const int64_t x_stride = cols + 4, y_stride = rows + 3;
      const Rows w = RandomRows(type, int64_t{n_mat} * rows, cols, rng);
      const std::vector<float> x = RandomFloats(n_x * x_stride, rng);
      DeviceBuffer dw = ToDevice(w.bytes), dx = ToDevice(x);
      const int64_t mat_bytes = rows * RowBytes(type, cols);
      // Grouped: matrix 1 has no pairs; pair p reads x_rows[p], writes y_rows[p].
      const std::vector<int32_t> offsets = {0, 4, 4, 13};
      const int n_pairs = 13;
      std::vector<int32_t> x_rows(n_pairs), y_rows(n_pairs);
      std::uniform_int_distribution<int> pick(0, n_x - 1);
      for (int p = 0; p < n_pairs; ++p) x_rows[p] = pick(rng);
      std::iota(y_rows.begin(), y_rows.end(), 2);  // rows 0, 1 never written
      std::shuffle(y_rows.begin(), y_rows.end(), rng);
      DeviceBuffer d_off = ToDevice(offsets), d_xr = ToDevice(x_rows), d_yr = ToDevice(y_rows);
      const int64_t y_rows_total = n_pairs + 2;
      DeviceBuffer dy = NanBuffer(y_rows_total * y_stride);
      FloatGemvParams p;
      p.type_id = static_cast<uint32_t>(type);
      p.w = dw.get();
      p.expert_stride = mat_bytes;
      p.rows = rows;
      p.cols = cols;
      p.n_experts = n_mat;
      p.offsets = d_off.as<int32_t>();
      p.max_pairs_per_expert = 9;
      p.x_rows = d_xr.as<int32_t>();
      p.x = dx.as<float>();
      p.x_stride = x_stride;
      p.y_rows = d_yr.as<int32_t>();
      p.y = dy.as<float>();
      p.y_stride = y_stride;
      ASSERT_EQ(LaunchFloatGemv(p, nullptr), cudaSuccess);
      Sync();
      const std::vector<float> y = ToHost<float>(dy, y_rows_total * y_stride);
      int bad = 0;
      for (int e = 0; e < n_mat; ++e) {
        for (int pp = offsets[e]; pp < offsets[e + 1]; ++pp) {
          for (int r = 0; r < rows; ++r) {
            double ref = 0, mag = 0;
            for (int c = 0; c < cols; ++c) {
              const double t = double(w.values[(int64_t(e) * rows + r) * cols + c]) *
                               x[x_rows[pp] * x_stride + c];
              ref += t;
              mag += std::fabs(t);
            }
            const float got = y[y_rows[pp] * y_stride + r];
            if (!(std::fabs(got - ref) <= 1e-5 * mag + 1e-30)) ++bad;
          }
        }
      }
      EXPECT_EQ(bad, 0);
      for (int64_t i = 0; i < 2 * y_stride; ++i) ASSERT_TRUE(std::isnan(y[i])) << "row 0/1 written";

      // Dense over matrix 0: pair p reads x row p, writes y row p; all n_x rows, and 5 (one
      // chunk: the row-per-CTA kernel for the long rows).
      for (const int n_dense : {n_x, 5}) {
        SCOPED_TRACE(n_dense);
        DeviceBuffer dy2 = NanBuffer(n_x * y_stride);
        FloatGemvParams d = p;
        d.n_experts = 1;
        d.offsets = nullptr;
        d.x_rows = nullptr;
        d.y_rows = nullptr;
        d.n_pairs = n_dense;
        d.y = dy2.as<float>();
        ASSERT_EQ(LaunchFloatGemv(d, nullptr), cudaSuccess);
        Sync();
        const std::vector<float> y2 = ToHost<float>(dy2, n_x * y_stride);
        bad = 0;
        for (int t = 0; t < n_dense; ++t) {
          for (int r = 0; r < rows; ++r) {
            double ref = 0, mag = 0;
            for (int c = 0; c < cols; ++c) {
              const double v = double(w.values[int64_t(r) * cols + c]) * x[t * x_stride + c];
              ref += v;
              mag += std::fabs(v);
            }
            if (!(std::fabs(y2[t * y_stride + r] - ref) <= 1e-5 * mag + 1e-30)) ++bad;
          }
        }
        EXPECT_EQ(bad, 0);
        // Rows past the pairs are not written.
        for (int64_t i = n_dense * y_stride; i < n_x * y_stride; ++i) {
          ASSERT_TRUE(std::isnan(y2[i])) << "row " << i / y_stride << " written";
        }
      }
    }
  }
}

TEST(FloatGemvTest, RejectsUnsupportedShapes) {
  EXPECT_FALSE(FloatGemvSupports(static_cast<uint32_t>(GgmlType::kF16), 48));
  EXPECT_FALSE(FloatGemvSupports(static_cast<uint32_t>(GgmlType::kQ4_K), 256));
  EXPECT_TRUE(FloatGemvSupports(static_cast<uint32_t>(GgmlType::kQ8_0), 128));
}

TEST(GpuOpsTest, RmsNormMatchesCpu) {
  TM_SKIP_WITHOUT_GPU();
  std::mt19937 rng(3);
  const int n = 700, x_stride = 704, n_src = 5;
  const std::vector<float> x = RandomFloats(n_src * x_stride, rng, -3.0f, 3.0f);
  const std::vector<float> gain = RandomFloats(n, rng, 0.5f, 1.5f);
  const std::vector<int32_t> in_rows = {3, 0, 4, 4, 1, 2};
  DeviceBuffer dx = ToDevice(x), dg = ToDevice(gain), dr = ToDevice(in_rows);
  DeviceBuffer dy = NanBuffer(in_rows.size() * n);
  gpu::RmsNormParams p;
  p.x = dx.as<float>();
  p.x_stride = x_stride;
  p.in_rows = dr.as<int32_t>();
  p.y = dy.as<float>();
  p.y_stride = n;
  p.n_rows = static_cast<int>(in_rows.size());
  p.n = n;
  p.gain = dg.as<float>();
  p.eps = 1e-6f;
  ASSERT_EQ(gpu::LaunchRmsNorm(p, nullptr), cudaSuccess);
  Sync();
  const std::vector<float> y = ToHost<float>(dy, in_rows.size() * n);
  for (size_t r = 0; r < in_rows.size(); ++r) {
    std::vector<float> ref(n);
    RmsNorm(&x[in_rows[r] * x_stride], 1, n, gain.data(), 1e-6f, ref.data());
    for (int i = 0; i < n; ++i) {
      ASSERT_NEAR(y[r * n + i], ref[i], 1e-6 * std::fabs(ref[i]) + 1e-12) << r << " " << i;
    }
  }
}

TEST(GpuOpsTest, RopeMatchesRopeTable) {
  TM_SKIP_WITHOUT_GPU();
  RopeConfig cfg;
  cfg.n_rot = 64;
  cfg.freq_base = 10000.0;
  cfg.scaling = RopeScalingType::kYarn;
  cfg.freq_scale = 1.0 / 40;
  cfg.n_ctx_orig = 4096;
  cfg.ext_factor = 1.0;
  cfg.corr_low = 10.0;
  cfg.corr_high = 23.0;
  const std::vector<int64_t> positions = {0, 1, 17, 4095, 4999};
  const gpu::RopeHostTable table = gpu::BuildRopeTable(cfg, 5000);
  std::mt19937 rng(5);
  const int T = 5, H = 3, in_head = 96, off = 32;
  const std::vector<float> in = RandomFloats(T * H * in_head, rng, -2.0f, 2.0f);
  std::vector<int32_t> pos(positions.begin(), positions.end());
  DeviceBuffer din = ToDevice(in), dpos = ToDevice(pos), dcos = ToDevice(table.cos),
               dsin = ToDevice(table.sin), dout = NanBuffer(T * H * 64);
  gpu::RopeParams p;
  p.in = din.as<float>();
  p.in_token_stride = H * in_head;
  p.in_head_stride = in_head;
  p.in_offset = off;
  p.out = dout.as<float>();
  p.out_token_stride = H * 64;
  p.out_head_stride = 64;
  p.n_tokens = T;
  p.n_heads = H;
  p.n_rot = 64;
  p.pos = dpos.as<int32_t>();
  p.cos = dcos.as<float>();
  p.sin = dsin.as<float>();
  ASSERT_EQ(gpu::LaunchRope(p, nullptr), cudaSuccess);
  Sync();
  const std::vector<float> out = ToHost<float>(dout, T * H * 64);
  const RopeTable ref(cfg, positions.data(), T);
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < H; ++h) {
      std::vector<float> v(&in[(t * H + h) * in_head + off], &in[(t * H + h) * in_head + off] + 64);
      ref.Apply(t, v.data());
      for (int i = 0; i < 64; ++i) {
        ASSERT_NEAR(out[(t * H + h) * 64 + i], v[i], 1e-6 * std::fabs(v[i]) + 1e-7)
            << "t " << t << " h " << h << " i " << i;
      }
    }
  }
}

TEST(GpuOpsTest, EmbeddingIsBitEqualToDequantizeRow) {
  TM_SKIP_WITHOUT_GPU();
  std::mt19937 rng(9);
  const int n_vocab = 50, cols = 512;
  const std::vector<int32_t> tokens = {3, 49, 0, 3, 17};
  for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0,
                        GgmlType::kQ4_K, GgmlType::kQ6_K}) {
    SCOPED_TRACE(GetTypeTraits(type).name);
    ASSERT_TRUE(gpu::EmbeddingSupports(static_cast<uint32_t>(type)));
    const Rows table = RandomRows(type, n_vocab, cols, rng);
    DeviceBuffer dt = ToDevice(table.bytes), dtok = ToDevice(tokens);
    DeviceBuffer dx = NanBuffer(tokens.size() * cols);
    gpu::EmbedParams p;
    p.type_id = static_cast<uint32_t>(type);
    p.table = dt.as<uint8_t>();
    p.row_bytes = RowBytes(type, cols);
    p.cols = cols;
    p.tokens = dtok.as<int32_t>();
    p.n_tokens = static_cast<int>(tokens.size());
    p.x = dx.as<float>();
    ASSERT_EQ(gpu::LaunchEmbed(p, nullptr), cudaSuccess);
    Sync();
    const std::vector<float> x = ToHost<float>(dx, tokens.size() * cols);
    for (size_t t = 0; t < tokens.size(); ++t) {
      for (int i = 0; i < cols; ++i) {
        ASSERT_EQ(x[t * cols + i], table.values[tokens[t] * cols + i]) << t << " " << i;
      }
    }
  }
  EXPECT_FALSE(gpu::EmbeddingSupports(static_cast<uint32_t>(GgmlType::kIQ1_S)));
}

// Latent rows written by the GPU decode to what the CPU KvCache stores for the same input.
TEST(GpuOpsTest, LatentWriteMatchesCpuCache) {
  TM_SKIP_WITHOUT_GPU();
  std::mt19937 rng(13);
  const int R = 256, n_rot = 32, kv_stride = 300, T = 3, layer = 1;
  for (KvCacheType kt :
       {KvCacheType::kF32, KvCacheType::kF16, KvCacheType::kQ8_0, KvCacheType::kQ4_0}) {
    SCOPED_TRACE(std::string(KvCacheTypeName(kt)));
    KvCacheConfig kc;
    kc.n_layer = 2;
    kc.kv_lora_rank = R;
    kc.n_rot = n_rot;
    kc.type = kt;
    kc.capacity = 8;
    auto ga = gpu::GpuKvCache::Create(kc), gb = gpu::GpuKvCache::Create(kc);
    auto ca = KvCache::Create(kc), cb = KvCache::Create(kc);
    ASSERT_TRUE(ga.ok() && gb.ok() && ca.ok() && cb.ok());
    const std::vector<float> kv = RandomFloats(T * kv_stride, rng, -2.0f, 2.0f);
    const std::vector<float> gain = RandomFloats(R, rng, 0.5f, 1.5f);
    // Rows: sequence a at positions 0 and 1, sequence b at 5.
    std::vector<gpu::AttnRow> rows(T);
    const int pos[T] = {0, 1, 5};
    for (int t = 0; t < T; ++t) {
      const gpu::GpuKvCache& c = t < 2 ? **ga : **gb;
      rows[t].cache = c.data();
      rows[t].layer_stride = c.layer_stride();
      rows[t].pos = pos[t];
    }
    DeviceBuffer dkv = ToDevice(kv), dg = ToDevice(gain), drows(T * sizeof(gpu::AttnRow));
    drows.CopyFromHost(rows.data(), T * sizeof(gpu::AttnRow));
    gpu::LatentWriteParams p;
    p.kv = dkv.as<float>();
    p.kv_stride = kv_stride;
    p.rows = drows.as<gpu::AttnRow>();
    p.layer = layer;
    p.n_tokens = T;
    p.R = R;
    p.n_rot = n_rot;
    p.padded = static_cast<int>(kc.padded_row_elems());
    p.row_bytes = kc.row_bytes();
    p.type_id = static_cast<uint32_t>(KvCacheGgmlType(kt));
    p.gain = dg.as<float>();
    p.eps = 1e-6f;
    ASSERT_EQ(gpu::LaunchLatentWrite(p, nullptr), cudaSuccess);
    Sync();
    const int L = R + n_rot;
    int64_t equal = 0, total = 0;
    for (int t = 0; t < T; ++t) {
      std::vector<float> row(L);
      RmsNorm(&kv[t * kv_stride], 1, R, gain.data(), 1e-6f, row.data());
      std::copy(&kv[t * kv_stride + R], &kv[t * kv_stride + L], row.begin() + R);
      KvCache& cpu = t < 2 ? **ca : **cb;
      cpu.Write(layer, pos[t], 1, row.data());
      std::vector<float> want(L), got(L);
      cpu.Read(layer, pos[t], 1, want.data());
      ASSERT_TRUE((t < 2 ? **ga : **gb).Read(layer, pos[t], 1, got.data()).ok());
      float amax = 0;
      for (float v : want) amax = std::max(amax, std::fabs(v));
      const double step = kt == KvCacheType::kQ4_0   ? amax / 7.0
                          : kt == KvCacheType::kQ8_0 ? amax / 127.0
                          : kt == KvCacheType::kF16  ? 1e-3 * amax
                                                     : 1e-6 * amax;
      for (int i = 0; i < L; ++i) {
        ++total;
        if (got[i] == want[i]) ++equal;
        ASSERT_LE(std::fabs(got[i] - want[i]), step * 1.01) << "t " << t << " i " << i;
      }
    }
    EXPECT_GE(equal, total * 995 / 1000);
  }
}

// Absorbed attention over two caches: a decode row at position 39 of sequence a, and three
// causal rows (positions 0..2) of sequence b.
TEST(GpuOpsTest, MlaAttentionMatchesDoubleReference) {
  TM_SKIP_WITHOUT_GPU();
  std::mt19937 rng(17);
  const int H = 8, R = 256, n_rot = 32, L = R + n_rot, layer = 0, max_keys = 64;
  const float kq_scale = 0.0625f;
  for (KvCacheType kt :
       {KvCacheType::kF32, KvCacheType::kF16, KvCacheType::kQ8_0, KvCacheType::kQ4_0}) {
    SCOPED_TRACE(std::string(KvCacheTypeName(kt)));
    KvCacheConfig kc;
    kc.n_layer = 1;
    kc.kv_lora_rank = R;
    kc.n_rot = n_rot;
    kc.type = kt;
    kc.capacity = 48;
    auto ga = gpu::GpuKvCache::Create(kc), gb = gpu::GpuKvCache::Create(kc);
    ASSERT_TRUE(ga.ok() && gb.ok());
    // Fill a (40 rows) and b (3 rows) through the write kernel.
    const int n_fill = 43;
    std::vector<gpu::AttnRow> fill(n_fill);
    for (int i = 0; i < n_fill; ++i) {
      const gpu::GpuKvCache& c = i < 40 ? **ga : **gb;
      fill[i].cache = c.data();
      fill[i].layer_stride = c.layer_stride();
      fill[i].pos = i < 40 ? i : i - 40;
    }
    const std::vector<float> kv = RandomFloats(n_fill * L, rng, -1.0f, 1.0f);
    const std::vector<float> ones(R, 1.0f);
    DeviceBuffer dkv = ToDevice(kv), dones = ToDevice(ones), dfill(n_fill * sizeof(gpu::AttnRow));
    dfill.CopyFromHost(fill.data(), fill.size() * sizeof(gpu::AttnRow));
    gpu::LatentWriteParams wp;
    wp.kv = dkv.as<float>();
    wp.kv_stride = L;
    wp.rows = dfill.as<gpu::AttnRow>();
    wp.layer = layer;
    wp.n_tokens = n_fill;
    wp.R = R;
    wp.n_rot = n_rot;
    wp.padded = static_cast<int>(kc.padded_row_elems());
    wp.row_bytes = kc.row_bytes();
    wp.type_id = static_cast<uint32_t>(KvCacheGgmlType(kt));
    wp.gain = dones.as<float>();
    wp.eps = 1e-6f;
    ASSERT_EQ(gpu::LaunchLatentWrite(wp, nullptr), cudaSuccess);
    Sync();
    std::vector<float> keys_a(40 * L), keys_b(3 * L);
    ASSERT_TRUE((*ga)->Read(layer, 0, 40, keys_a.data()).ok());
    ASSERT_TRUE((*gb)->Read(layer, 0, 3, keys_b.data()).ok());

    const int T = 4;
    std::vector<gpu::AttnRow> rows = {fill[39], fill[40], fill[41], fill[42]};
    const std::vector<float> qa = RandomFloats(T * H * L, rng, -1.0f, 1.0f);
    DeviceBuffer dqa = ToDevice(qa), drows(T * sizeof(gpu::AttnRow));
    drows.CopyFromHost(rows.data(), T * sizeof(gpu::AttnRow));
    DeviceBuffer dscores = NanBuffer(T * H * max_keys), dout = NanBuffer(T * H * R);
    gpu::MlaParams mp;
    mp.qa = dqa.as<float>();
    mp.rows = drows.as<gpu::AttnRow>();
    mp.layer = layer;
    mp.n_tokens = T;
    mp.n_heads = H;
    mp.R = R;
    mp.L = L;
    mp.row_bytes = kc.row_bytes();
    mp.type_id = wp.type_id;
    mp.scores = dscores.as<float>();
    mp.max_keys = max_keys;
    mp.kq_scale = kq_scale;
    mp.o_lat = dout.as<float>();
    ASSERT_EQ(gpu::LaunchMlaScores(mp, nullptr), cudaSuccess);
    ASSERT_EQ(gpu::LaunchMlaSoftmax(mp, nullptr), cudaSuccess);
    ASSERT_EQ(gpu::LaunchMlaWeightedSum(mp, nullptr), cudaSuccess);
    Sync();
    const std::vector<float> o = ToHost<float>(dout, T * H * R);
    double max_err = 0, max_ref = 0;
    for (int t = 0; t < T; ++t) {
      const float* keys = t == 0 ? keys_a.data() : keys_b.data();
      const int n = rows[t].pos + 1;
      for (int h = 0; h < H; ++h) {
        const float* q = &qa[(t * H + h) * L];
        std::vector<double> s(n);
        double mx = -1e300;
        for (int j = 0; j < n; ++j) {
          double d = 0;
          for (int i = 0; i < L; ++i) d += double(q[i]) * keys[j * L + i];
          s[j] = d * kq_scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (double& v : s) sum += (v = std::exp(v - mx));
        for (int c = 0; c < R; ++c) {
          double ref = 0;
          for (int j = 0; j < n; ++j) ref += s[j] / sum * keys[j * L + c];
          const double got = o[(t * H + h) * R + c];
          max_err = std::max(max_err, std::isnan(got) ? INFINITY : std::fabs(got - ref));
          max_ref = std::max(max_ref, std::fabs(ref));
        }
      }
    }
    EXPECT_LE(max_err / max_ref, 1e-5) << "max_err " << max_err << " max_ref " << max_ref;
  }
}

TEST(GpuOpsTest, HeadPairs) {
  TM_SKIP_WITHOUT_GPU();
  DeviceBuffer off(5 * sizeof(int32_t)), rows(12 * sizeof(int32_t));
  ASSERT_EQ(gpu::LaunchHeadPairs(3, 4, off.as<int32_t>(), rows.as<int32_t>(), nullptr),
            cudaSuccess);
  Sync();
  EXPECT_EQ(ToHost<int32_t>(off, 5), (std::vector<int32_t>{0, 3, 6, 9, 12}));
  const std::vector<int32_t> r = ToHost<int32_t>(rows, 12);
  for (int h = 0; h < 4; ++h) {
    for (int t = 0; t < 3; ++t) EXPECT_EQ(r[h * 3 + t], t * 4 + h);
  }
}

TEST(GpuOpsTest, RouterMatchesCpu) {
  TM_SKIP_WITHOUT_GPU();
  std::mt19937 rng(23);
  struct Case {
    int E, k, n_group, n_group_used;
    GatingFunc gating;
    bool norm, bias;
  };
  for (const Case& cs : {Case{64, 6, 8, 3, GatingFunc::kSigmoid, true, true},
                         Case{256, 8, 8, 4, GatingFunc::kSigmoid, true, true},
                         Case{16, 4, 0, 0, GatingFunc::kSoftmax, false, false},
                         Case{32, 3, 4, 2, GatingFunc::kSqrtSoftplus, true, false}}) {
    SCOPED_TRACE("E=" + std::to_string(cs.E) + " k=" + std::to_string(cs.k));
    RouterConfig rc;
    rc.n_expert = cs.E;
    rc.n_used = cs.k;
    rc.gating = cs.gating;
    rc.group_limited = cs.n_group > 0;
    rc.n_group = cs.n_group;
    rc.n_group_used = cs.n_group_used;
    rc.weights_norm = cs.norm;
    rc.weights_scale = 2.5f;
    const int T = 37;
    const std::vector<float> logits = RandomFloats(T * cs.E, rng, -4.0f, 4.0f);
    const std::vector<float> bias = RandomFloats(cs.E, rng, -0.1f, 0.1f);
    Routing ref;
    Route(rc, logits.data(), cs.bias ? bias.data() : nullptr, T, &ref);
    DeviceBuffer dl = ToDevice(logits), db = ToDevice(bias);
    DeviceBuffer de(T * cs.k * sizeof(int32_t)), dw = NanBuffer(T * cs.k);
    gpu::RouteParams p;
    p.logits = dl.as<float>();
    p.bias = cs.bias ? db.as<float>() : nullptr;
    p.n_tokens = T;
    p.n_expert = cs.E;
    p.k = cs.k;
    p.gating = static_cast<int>(cs.gating);
    p.group_limited = rc.group_limited;
    p.n_group = cs.n_group;
    p.n_group_used = cs.n_group_used;
    p.weights_norm = cs.norm;
    p.weights_scale = 2.5f;
    p.experts = de.as<int32_t>();
    p.weights = dw.as<float>();
    ASSERT_EQ(gpu::LaunchRoute(p, nullptr), cudaSuccess);
    Sync();
    EXPECT_EQ(ToHost<int32_t>(de, T * cs.k), ref.experts);
    const std::vector<float> w = ToHost<float>(dw, T * cs.k);
    for (int i = 0; i < T * cs.k; ++i) {
      EXPECT_NEAR(w[i], ref.weights[i], 1e-6 * std::fabs(ref.weights[i]) + 1e-7) << i;
    }
  }
}

TEST(GpuOpsTest, GroupByExpertSwiGluAndCombine) {
  TM_SKIP_WITHOUT_GPU();
  std::mt19937 rng(29);
  const int T = 45, k = 8, E = 256, n = 96;
  RouterConfig rc;
  rc.n_expert = E;
  rc.n_used = k;
  rc.gating = GatingFunc::kSigmoid;
  const std::vector<float> logits = RandomFloats(T * E, rng, -4.0f, 4.0f);
  Routing routing;
  Route(rc, logits.data(), nullptr, T, &routing);
  const int P = T * k;
  DeviceBuffer de = ToDevice(routing.experts), doff((E + 1) * sizeof(int32_t)),
               dtok(P * sizeof(int32_t)), dslot(P * sizeof(int32_t));
  gpu::GroupParams gp;
  gp.experts = de.as<int32_t>();
  gp.n_tokens = T;
  gp.k = k;
  gp.n_expert = E;
  gp.offsets = doff.as<int32_t>();
  gp.pair_token = dtok.as<int32_t>();
  gp.slot_pair = dslot.as<int32_t>();
  ASSERT_EQ(gpu::LaunchGroupByExpert(gp, nullptr), cudaSuccess);
  Sync();
  const std::vector<int32_t> off = ToHost<int32_t>(doff, E + 1);
  const std::vector<int32_t> tok = ToHost<int32_t>(dtok, P);
  const std::vector<int32_t> slot = ToHost<int32_t>(dslot, P);
  ExpertBatch cpu;
  const std::vector<float> hidden(T, 0.0f);
  GroupByExpert(hidden.data(), 1, routing, nullptr, &cpu);
  for (size_t i = 0; i < cpu.experts.size(); ++i) {
    const int e = cpu.experts[i];
    EXPECT_EQ(off[e + 1] - off[e], cpu.offsets[i + 1] - cpu.offsets[i]) << "expert " << e;
  }
  EXPECT_EQ(off[0], 0);
  EXPECT_EQ(off[E], P);
  std::vector<int> used(P, 0);
  for (int i = 0; i < P; ++i) {
    const int e = routing.experts[i], p = slot[i];
    ASSERT_GE(p, off[e]);
    ASSERT_LT(p, off[e + 1]);
    EXPECT_EQ(tok[p], i / k);
    ++used[p];
  }
  for (int p = 0; p < P; ++p) EXPECT_EQ(used[p], 1);

  // SwiGLU over the pairs, then the combine into x with a shared-expert term.
  const int ff = 64;
  const std::vector<float> gu = RandomFloats(P * 2 * ff, rng, -4.0f, 4.0f);
  DeviceBuffer dgu = ToDevice(gu), dact = NanBuffer(P * ff);
  gpu::SwiGluParams sp;
  sp.gu = dgu.as<float>();
  sp.out = dact.as<float>();
  sp.n_rows = P;
  sp.n_ff = ff;
  ASSERT_EQ(gpu::LaunchSwiGlu(sp, nullptr), cudaSuccess);
  const std::vector<float> y = RandomFloats(P * n, rng), sh = RandomFloats(T * n, rng),
                           x0 = RandomFloats(T * n, rng);
  DeviceBuffer dy = ToDevice(y), dsh = ToDevice(sh), dx = ToDevice(x0),
               dw = ToDevice(routing.weights);
  gpu::CombineParams cp;
  cp.x = dx.as<float>();
  cp.y = dy.as<float>();
  cp.pair = dslot.as<int32_t>();
  cp.w = dw.as<float>();
  cp.shared = dsh.as<float>();
  cp.n_tokens = T;
  cp.k = k;
  cp.n = n;
  ASSERT_EQ(gpu::LaunchCombine(cp, nullptr), cudaSuccess);
  Sync();
  const std::vector<float> act = ToHost<float>(dact, P * ff);
  for (int r = 0; r < P; ++r) {
    for (int c = 0; c < ff; ++c) {
      const float g = gu[r * 2 * ff + c], u = gu[r * 2 * ff + ff + c];
      const float ref = g / (1.0f + std::exp(-g)) * u;
      ASSERT_NEAR(act[r * ff + c], ref, 1e-6 * std::fabs(ref) + 1e-7);
    }
  }
  const std::vector<float> x = ToHost<float>(dx, T * n);
  for (int t = 0; t < T; ++t) {
    for (int c = 0; c < n; ++c) {
      float acc = 0.0f;
      for (int j = 0; j < k; ++j) acc += routing.weights[t * k + j] * y[slot[t * k + j] * n + c];
      acc += sh[t * n + c];
      const float ref = x0[t * n + c] + acc;
      ASSERT_NEAR(x[t * n + c], ref, 1e-6 * std::fabs(ref) + 1e-7);
    }
  }
}

TEST(GpuOpsTest, ArgmaxTakesTheFirstMaximum) {
  TM_SKIP_WITHOUT_GPU();
  std::mt19937 rng(31);
  const int n = 5000, rows = 4;
  std::vector<float> l = RandomFloats(rows * n, rng);
  l[5] = 3.0f;  // row 0: tie at 5 and 900
  l[900] = 3.0f;
  std::fill(l.begin() + n, l.begin() + 2 * n, 0.5f);  // row 1: all equal
  l[3 * n + n - 1] = 7.0f;                            // row 3: the last element
  DeviceBuffer dl = ToDevice(l), dout(rows * sizeof(int32_t));
  ASSERT_EQ(gpu::LaunchArgmax(dl.as<float>(), rows, n, dout.as<int32_t>(), nullptr), cudaSuccess);
  Sync();
  const std::vector<int32_t> got = ToHost<int32_t>(dout, rows);
  for (int r = 0; r < rows; ++r) {
    EXPECT_EQ(got[r],
              std::max_element(l.begin() + r * n, l.begin() + (r + 1) * n) - (l.begin() + r * n))
        << "row " << r;
  }
  EXPECT_EQ(got[0], 5);
  EXPECT_EQ(got[1], 0);
  EXPECT_EQ(got[3], n - 1);
}

}  // namespace
}  // namespace tritmoe
