// GPU quantized GEMV vs CPU twins.
//
// CPU-only tests (always run): the GGUF <-> GPU tile layout conversion is a bijection for every
// type (byte-exact round trip; TQ1_0 value-exact since its base-3 bytes are re-encoded).
//
// GPU tests (skipped without an sm_90 GPU), for every type, several token counts and shapes:
//  * exact twin: the CPU repeats the activation quantization bit for bit (same float ops), then
//    y_q = sum_kb d_kb * sum_c w[c] * q[c] in double with w from DequantizeRow on the original
//    GGUF rows. The GPU does exact int32 arithmetic per 256 columns and float32 afterwards, so
//    |y - y_q| <= 1e-5 * sum_c |w_c * d_kb * q_c| (float32 rounding of ~K/256 partial sums).
//  * float reference y_ref = sum_c w[c] * x[c] in double. The only approximation is the int8
//    activation: |x_c - d_kb * q_c| <= d_kb / 2 with d_kb = max|x in block kb| / 127, hence the
//    rigorous per-element bound |y - y_ref| <= sum_c |w_c| * d_kb(c) / 2 (+ the float32 term
//    above), and, for random data, ||y - y_ref|| / ||y_ref|| ~ 0.5%; we require < 2%.
//  * every output element is written (outputs are poisoned with NaN first), and nothing beyond.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "experts/cuda/device_buffer.h"
#include "experts/cuda/quant_gemv.h"
#include "experts/cuda/quant_gemv_launch.h"
#include "experts/dequantize.h"
#include "experts/fp16.h"
#include "experts/quant_type.h"
#include "gtest/gtest.h"
#include "tests/gpu/gpu_test_util.h"

namespace tritmoe {
namespace {

const GgmlType kTypes[] = {GgmlType::kIQ1_S, GgmlType::kTQ1_0, GgmlType::kTQ2_0, GgmlType::kIQ2_XXS,
                           GgmlType::kQ4_K,  GgmlType::kQ6_K,  GgmlType::kQ8_0};

std::string TypeName(GgmlType t) { return GetTypeTraits(t).name; }

// Random GGUF rows: random bytes (every bit pattern of indices, signs and codes), with the fp16
// scales replaced by sane positive values so that results stay finite.
std::vector<uint8_t> RandomRows(GgmlType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  const TypeTraits& tr = GetTypeTraits(type);
  std::vector<uint8_t> data(rows * RowBytes(type, cols));
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& b : data) b = static_cast<uint8_t>(byte(rng));
  std::vector<int> scale_offsets;
  switch (type) {
    case GgmlType::kIQ1_S:
    case GgmlType::kIQ2_XXS:
    case GgmlType::kQ8_0:
      scale_offsets = {0};
      break;
    case GgmlType::kQ4_K:
      scale_offsets = {0, 2};
      break;
    case GgmlType::kQ6_K:
      scale_offsets = {208};
      break;
    case GgmlType::kTQ1_0:
      scale_offsets = {52};
      break;
    case GgmlType::kTQ2_0:
      scale_offsets = {64};
      break;
    default:
      break;
  }
  std::uniform_real_distribution<float> scale(0.002f, 0.02f);
  for (size_t blk = 0; blk < data.size() / tr.block_bytes; ++blk) {
    for (int off : scale_offsets) {
      const uint16_t h = Fp32ToFp16(scale(rng));
      std::memcpy(&data[blk * tr.block_bytes + off], &h, 2);
    }
  }
  return data;
}

std::vector<float> Dequantize(GgmlType type, const std::vector<uint8_t>& data, int64_t rows,
                              int64_t cols) {
  std::vector<float> w(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    DequantizeRow(type, data.data() + r * RowBytes(type, cols), w.data() + r * cols, cols);
  }
  return w;
}

// ---------------------------------------------------------------------------------------------
// CPU-only: layout round trip.

TEST(GpuLayoutTest, RoundTripIsExact) {
  std::mt19937 rng(1);
  for (GgmlType type : kTypes) {
    for (int64_t rows : {16, 37}) {
      const int64_t cols = 512;
      SCOPED_TRACE(TypeName(type) + " rows=" + std::to_string(rows));
      const std::vector<uint8_t> src = RandomRows(type, rows, cols, rng);
      const absl::StatusOr<int64_t> bytes = GpuWeightBytes(type, rows, cols);
      ASSERT_TRUE(bytes.ok()) << bytes.status();
      EXPECT_EQ(*bytes, (rows + 15) / 16 * 16 * RowBytes(type, cols));
      std::vector<uint8_t> packed(*bytes, 0xAB);
      ASSERT_TRUE(RepackForGpu(type, src.data(), rows, cols, packed.data()).ok());
      // Row-range repack (as a parallel loader would do it) gives the same bytes.
      std::vector<uint8_t> pieces(*bytes, 0xCD);
      ASSERT_TRUE(RepackRowsForGpu(type, src.data(), rows, cols, 0, 16, pieces.data()).ok());
      ASSERT_TRUE(RepackRowsForGpu(type, src.data(), rows, cols, 16, rows, pieces.data()).ok());
      EXPECT_EQ(packed, pieces);
      std::vector<uint8_t> back(src.size(), 0);
      ASSERT_TRUE(UnpackGpuLayout(type, packed.data(), rows, cols, back.data()).ok());
      if (type == GgmlType::kTQ1_0) {
        EXPECT_EQ(Dequantize(type, back, rows, cols), Dequantize(type, src, rows, cols));
      } else {
        EXPECT_EQ(back, src);
      }
    }
  }
}

TEST(GpuLayoutTest, RejectsUnsupportedShapesAndTypes) {
  EXPECT_FALSE(GpuWeightBytes(GgmlType::kQ2_K, 16, 256).ok());
  EXPECT_FALSE(GpuWeightBytes(GgmlType::kIQ1_S, 16, 128).ok());
  EXPECT_FALSE(GpuWeightBytes(GgmlType::kQ8_0, 16, 96).ok());
  EXPECT_FALSE(GpuGemvSupports(GgmlType::kF32));
  EXPECT_TRUE(GpuGemvSupports(GgmlType::kIQ1_S));
  std::vector<uint8_t> src(32 * RowBytes(GgmlType::kTQ2_0, 256)), dst(src.size());
  EXPECT_FALSE(RepackRowsForGpu(GgmlType::kTQ2_0, src.data(), 32, 256, 8, 32, dst.data()).ok());
}

// ---------------------------------------------------------------------------------------------
// GPU tests.

// The CPU twin of QuantizeActivationsGpu: d and q per 256 columns, same float operations.
struct QuantizedX {
  std::vector<float> d;  // [rows][nkb]
  std::vector<int> q;    // [rows][cols]
};
QuantizedX QuantizeX(const std::vector<float>& x, int64_t rows, int64_t cols) {
  const int64_t nkb = cols / 256;
  QuantizedX out;
  out.d.resize(rows * nkb);
  out.q.resize(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t kb = 0; kb < nkb; ++kb) {
      const float* v = &x[r * cols + kb * 256];
      float amax = 0.0f;
      for (int j = 0; j < 256; ++j) amax = std::max(amax, std::fabs(v[j]));
      const float d = amax / 127.0f;
      const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
      out.d[r * nkb + kb] = d;
      for (int j = 0; j < 256; ++j) {
        out.q[r * cols + kb * 256 + j] = static_cast<int>(std::nearbyint(v[j] * id));
      }
    }
  }
  return out;
}

struct Expected {
  double exact = 0;        // with the quantized activations
  double exact_scale = 0;  // sum |w * d * q|
  double ref = 0;          // with the float activations
  double bound = 0;        // sum |w| * d / 2
};

// Expected value of output (weight row w[0..cols), activation row xr of x / xq).
Expected Twin(const float* w, const std::vector<float>& x, const QuantizedX& xq, int64_t xr,
              int64_t cols) {
  const int64_t nkb = cols / 256;
  Expected e;
  for (int64_t kb = 0; kb < nkb; ++kb) {
    const double d = xq.d[xr * nkb + kb];
    double s = 0, sa = 0;
    for (int j = 0; j < 256; ++j) {
      const int64_t c = kb * 256 + j;
      const double q = xq.q[xr * cols + c];
      s += static_cast<double>(w[c]) * q;
      sa += std::fabs(static_cast<double>(w[c]) * q);
      e.ref += static_cast<double>(w[c]) * static_cast<double>(x[xr * cols + c]);
      e.bound += std::fabs(static_cast<double>(w[c])) * d / 2;
    }
    e.exact += d * s;
    e.exact_scale += d * sa;
  }
  return e;
}

struct ErrorStats {
  double err2 = 0, ref2 = 0;
  int checked = 0;
};

void CheckOutput(float got, const Expected& e, ErrorStats* stats, const std::string& where) {
  ASSERT_TRUE(std::isfinite(got)) << where << " not written or not finite";
  const double slack = 1e-5 * e.exact_scale + 1e-30;
  ASSERT_LE(std::fabs(got - e.exact), slack)
      << where << ": gpu " << got << " vs exact twin " << e.exact;
  ASSERT_LE(std::fabs(got - e.ref), e.bound * (1 + 1e-6) + slack)
      << where << ": gpu " << got << " vs float reference " << e.ref;
  stats->err2 += (got - e.ref) * (got - e.ref);
  stats->ref2 += e.ref * e.ref;
  ++stats->checked;
}

// n random experts of `type`, rows x cols each: their bytes and their dequantized values.
struct RandomExperts {
  std::vector<std::vector<uint8_t>> q;
  std::vector<std::vector<float>> w;
  RandomExperts(GgmlType type, int n, int64_t rows, int64_t cols, std::mt19937& rng) {
    for (int e = 0; e < n; ++e) {
      q.push_back(RandomRows(type, rows, cols, rng));
      w.push_back(Dequantize(type, q.back(), rows, cols));
    }
  }
};

// A grouped launch's outputs y [pairs][rows] against the exact twin: expert e's pairs are
// offsets[e] .. offsets[e + 1], pair p reads activation row x_rows[p] (row p when x_rows is
// empty). Returns at the first fatal failure.
void CheckGroupedOutputs(const std::vector<float>& y, const std::vector<std::vector<float>>& w,
                         const std::vector<float>& x, const QuantizedX& xq,
                         const std::vector<int32_t>& offsets, const std::vector<int32_t>& x_rows,
                         int64_t rows, int64_t cols, ErrorStats* stats) {
  for (size_t e = 0; e + 1 < offsets.size(); ++e) {
    for (int p = offsets[e]; p < offsets[e + 1]; ++p) {
      for (int64_t r = 0; r < rows; ++r) {
        CheckOutput(y[p * rows + r],
                    Twin(&w[e][r * cols], x, xq, x_rows.empty() ? p : x_rows[p], cols), stats,
                    "expert " + std::to_string(e) + " pair " + std::to_string(p) +
                        " r=" + std::to_string(r));
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
  }
}

std::vector<float> RandomX(int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(rows * cols);
  for (float& v : x) v = nd(rng);
  // An outlier on every other row and an all-zero 256-block exercise the scale and d = 0 paths.
  for (int64_t r = 0; r < rows; ++r) {
    if (r % 2 == 0) x[r * cols + (r * 37) % cols] = 5.0f;
    if (cols >= 512 && r % 3 == 1) std::fill(&x[r * cols + 256], &x[r * cols + 512], 0.0f);
  }
  return x;
}

struct DeviceMatrix {
  DeviceBuffer buf;
  GpuWeightView view;
};

DeviceMatrix Upload(GgmlType type, const std::vector<std::vector<uint8_t>>& experts, int64_t rows,
                    int64_t cols) {
  const int64_t bytes = *GpuWeightBytes(type, rows, cols);
  const int64_t stride = (bytes + 255) / 256 * 256;
  std::vector<uint8_t> packed(stride * experts.size(), 0);
  for (size_t e = 0; e < experts.size(); ++e) {
    TM_CHECK(RepackForGpu(type, experts[e].data(), rows, cols, packed.data() + e * stride).ok());
  }
  DeviceMatrix m;
  m.buf = DeviceBuffer(packed.size());
  m.buf.CopyFromHost(packed.data(), packed.size());
  m.view.type = type;
  m.view.data = m.buf.get();
  m.view.rows = rows;
  m.view.cols = cols;
  m.view.n_experts = static_cast<int>(experts.size());
  m.view.expert_stride_bytes = stride;
  return m;
}

// Every GPU test runs with each kernel variant forced (the automatic choice depends on the
// problem size): 1 split-K, 2 pipelined (4 warps), 3 pipelined (8 warps), 4 split-K over 4 token
// chunks, 5-7 pipelined over 4 or 8 token chunks (4 or 8 warps); 4-7 apply to launches of more
// than 8 tokens per matrix (the others fall back).
class QuantGemvGpuTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override { gpu_internal::SetGemvKernelForTesting(GetParam()); }
  void TearDown() override { gpu_internal::SetGemvKernelForTesting(0); }
};

TEST_P(QuantGemvGpuTest, DenseMatchesCpuTwins) {
  TM_SKIP_WITHOUT_GPU();
  std::mt19937 rng(7);
  struct Shape {
    int64_t rows, cols;
  };
  const Shape shapes[] = {{96, 2048}, {72, 768}, {16, 256}};
  for (GgmlType type : kTypes) {
    ErrorStats stats;
    for (const Shape& s : shapes) {
      const std::vector<uint8_t> wq = RandomRows(type, s.rows, s.cols, rng);
      const std::vector<float> w = Dequantize(type, wq, s.rows, s.cols);
      DeviceMatrix dm = Upload(type, {wq}, s.rows, s.cols);
      for (int64_t n : {1, 3, 8, 13, 40}) {
        SCOPED_TRACE(TypeName(type) + " " + std::to_string(s.rows) + "x" + std::to_string(s.cols) +
                     " tokens=" + std::to_string(n));
        const std::vector<float> x = RandomX(n, s.cols, rng);
        const QuantizedX xq = QuantizeX(x, n, s.cols);
        DeviceBuffer dx(x.size() * 4), ws(GpuActivationBytes(n, s.cols));
        const int64_t y_stride = s.rows + 5;  // checks the stride and that padding stays untouched
        DeviceBuffer dy(n * y_stride * 4);
        dx.CopyFromHost(x.data(), x.size() * 4);
        dy.Fill(0xFF);  // NaN
        GpuActivations act;
        ASSERT_TRUE(
            QuantizeActivationsGpu(dx.as<float>(), n, s.cols, ws.get(), ws.bytes(), nullptr, &act)
                .ok());
        const absl::Status st = GpuGemv(dm.view, act, dy.as<float>(), nullptr, y_stride);
        ASSERT_TRUE(st.ok()) << st;
        TM_CHECK_CUDA(cudaDeviceSynchronize());
        std::vector<float> y(n * y_stride);
        dy.CopyToHost(y.data(), y.size() * 4);
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t r = 0; r < s.rows; ++r) {
            const Expected e = Twin(&w[r * s.cols], x, xq, t, s.cols);
            CheckOutput(y[t * y_stride + r], e, &stats,
                        "t=" + std::to_string(t) + " r=" + std::to_string(r));
            if (HasFatalFailure()) return;
          }
          for (int64_t r = s.rows; r < y_stride; ++r) {
            ASSERT_TRUE(std::isnan(y[t * y_stride + r])) << "wrote beyond rows at t=" << t;
          }
        }
      }
    }
    const double rel = std::sqrt(stats.err2 / stats.ref2);
    std::printf("%-8s kernel %d dense: %d outputs, ||y - y_float|| / ||y_float|| = %.2e\n",
                TypeName(type).c_str(), GetParam(), stats.checked, rel);
    EXPECT_LT(rel, 2e-2) << TypeName(type);
  }
}

TEST_P(QuantGemvGpuTest, GroupedExpertsMatchCpuTwins) {
  TM_SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  const int n_experts = 7, n_tokens = 12, top_k = 3;
  const int64_t rows = 48, cols = 1024;
  for (GgmlType type : kTypes) {
    SCOPED_TRACE(TypeName(type));
    const RandomExperts ex(type, n_experts, rows, cols, rng);
    DeviceMatrix dm = Upload(type, ex.q, rows, cols);
    // Routing: every token picks top_k distinct experts among 0..n_experts-2 (the last expert
    // gets no pairs); expert 2 is picked by every token, so it has 12 pairs (two 8-token chunks).
    std::vector<std::vector<int>> by_expert(n_experts);
    for (int t = 0; t < n_tokens; ++t) {
      std::vector<int> picks = {2};
      while (static_cast<int>(picks.size()) < top_k) {
        const int e = std::uniform_int_distribution<int>(0, n_experts - 2)(rng);
        if (std::find(picks.begin(), picks.end(), e) == picks.end()) picks.push_back(e);
      }
      for (int e : picks) by_expert[e].push_back(t);
    }
    std::vector<int32_t> offsets = {0}, x_rows;
    int max_pairs = 0;
    for (int e = 0; e < n_experts; ++e) {
      for (int t : by_expert[e]) x_rows.push_back(t);
      offsets.push_back(static_cast<int32_t>(x_rows.size()));
      max_pairs = std::max(max_pairs, static_cast<int>(by_expert[e].size()));
    }
    const int64_t n_pairs = static_cast<int64_t>(x_rows.size());
    const std::vector<float> x = RandomX(n_tokens, cols, rng);
    const QuantizedX xq = QuantizeX(x, n_tokens, cols);
    DeviceBuffer dx(x.size() * 4), ws(GpuActivationBytes(n_tokens, cols));
    DeviceBuffer doff(offsets.size() * 4), drows(x_rows.size() * 4), dy(n_pairs * rows * 4);
    dx.CopyFromHost(x.data(), x.size() * 4);
    doff.CopyFromHost(offsets.data(), offsets.size() * 4);
    drows.CopyFromHost(x_rows.data(), x_rows.size() * 4);
    dy.Fill(0xFF);
    GpuActivations act;
    ASSERT_TRUE(
        QuantizeActivationsGpu(dx.as<float>(), n_tokens, cols, ws.get(), ws.bytes(), nullptr, &act)
            .ok());
    GpuExpertRouting routing;
    routing.expert_offsets = doff.as<int32_t>();
    routing.x_rows = drows.as<int32_t>();
    routing.max_pairs_per_expert = max_pairs;
    const absl::Status st = GpuExpertGemv(dm.view, act, routing, dy.as<float>(), nullptr);
    ASSERT_TRUE(st.ok()) << st;
    TM_CHECK_CUDA(cudaDeviceSynchronize());
    std::vector<float> y(n_pairs * rows);
    dy.CopyToHost(y.data(), y.size() * 4);
    ErrorStats stats;
    CheckGroupedOutputs(y, ex.w, x, xq, offsets, x_rows, rows, cols, &stats);
    if (HasFatalFailure()) return;
    EXPECT_EQ(stats.checked, n_pairs * rows);
    EXPECT_LT(std::sqrt(stats.err2 / stats.ref2), 2e-2);
  }
}

// The decode shapes of DeepSeek-V3 experts, once each, against the exact twin (catches
// indexing that only breaks with many column blocks or row groups).
TEST_P(QuantGemvGpuTest, DeepSeekExpertShapes) {
  TM_SKIP_WITHOUT_GPU();
  std::mt19937 rng(3);
  for (GgmlType type : {GgmlType::kIQ1_S, GgmlType::kTQ1_0, GgmlType::kTQ2_0}) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{2048, 7168}, {7168, 2048}}) {
      SCOPED_TRACE(TypeName(type) + " " + std::to_string(rows) + "x" + std::to_string(cols));
      const int64_t n = 2;
      const std::vector<uint8_t> wq = RandomRows(type, rows, cols, rng);
      const std::vector<float> w = Dequantize(type, wq, rows, cols);
      DeviceMatrix dm = Upload(type, {wq}, rows, cols);
      const std::vector<float> x = RandomX(n, cols, rng);
      const QuantizedX xq = QuantizeX(x, n, cols);
      DeviceBuffer dx(x.size() * 4), ws(GpuActivationBytes(n, cols)), dy(n * rows * 4);
      dx.CopyFromHost(x.data(), x.size() * 4);
      dy.Fill(0xFF);
      GpuActivations act;
      ASSERT_TRUE(
          QuantizeActivationsGpu(dx.as<float>(), n, cols, ws.get(), ws.bytes(), nullptr, &act)
              .ok());
      ASSERT_TRUE(GpuGemv(dm.view, act, dy.as<float>(), nullptr).ok());
      TM_CHECK_CUDA(cudaDeviceSynchronize());
      std::vector<float> y(n * rows);
      dy.CopyToHost(y.data(), y.size() * 4);
      ErrorStats stats;
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
          CheckOutput(y[t * rows + r], Twin(&w[r * cols], x, xq, t, cols), &stats,
                      "t=" + std::to_string(t) + " r=" + std::to_string(r));
          if (HasFatalFailure()) return;
        }
      }
      EXPECT_LT(std::sqrt(stats.err2 / stats.ref2), 2e-2);
    }
  }
}

// The IQ1_S decoders (nibble, the first one; lean with 1 or 2 row groups per warp, interleaved
// or not) compute the same integers in the same order, and so do the IQ2_XXS ones (the first one;
// lean with 1 or 2 row groups per warp, interleaved or not): outputs must be bit-identical, and
// match the exact twin. Rows are not a multiple of the pipelined kernel's tiles per CTA (4 or 8
// warps x 2 row groups), so CTAs with a partial set of row groups and a missing second row group
// per warp are covered.
struct DecoderSet {
  GgmlType type;
  void (*set)(int);  // the *ForTesting setter; -1 restores the default
  const int* ids;    // the first is the reference the others are compared with
  int n;
};
const int kIq1sDecoders[] = {1, 0, 2, 3};
const int kIq2xxsDecoders[] = {1, 0, 2, 3};
const DecoderSet kDecoderSets[] = {
    {GgmlType::kIQ1_S, &gpu_internal::SetIq1sDecoderForTesting, kIq1sDecoders, 4},
    {GgmlType::kIQ2_XXS, &gpu_internal::SetIq2xxsDecoderForTesting, kIq2xxsDecoders, 4},
};

void CheckDecodersAgree(const DecoderSet& set, const std::vector<int32_t>& offsets, int max_pairs,
                        int64_t total_pairs = 0) {
  SCOPED_TRACE(TypeName(set.type));
  std::mt19937 rng(5);
  const GgmlType type = set.type;
  const int n_experts = static_cast<int>(offsets.size()) - 1;
  const int64_t rows = 16 * 13 + 5, cols = 1536;
  const RandomExperts ex(type, n_experts, rows, cols, rng);
  DeviceMatrix dm = Upload(type, ex.q, rows, cols);
  const int64_t n_pairs = offsets.back();
  const std::vector<float> x = RandomX(n_pairs, cols, rng);
  const QuantizedX xq = QuantizeX(x, n_pairs, cols);
  DeviceBuffer dx(x.size() * 4), ws(GpuActivationBytes(n_pairs, cols));
  DeviceBuffer doff(offsets.size() * 4), dy(n_pairs * rows * 4);
  dx.CopyFromHost(x.data(), x.size() * 4);
  doff.CopyFromHost(offsets.data(), offsets.size() * 4);
  GpuActivations act;
  ASSERT_TRUE(
      QuantizeActivationsGpu(dx.as<float>(), n_pairs, cols, ws.get(), ws.bytes(), nullptr, &act)
          .ok());
  GpuExpertRouting routing;
  routing.expert_offsets = doff.as<int32_t>();
  routing.max_pairs_per_expert = max_pairs;
  routing.total_pairs = total_pairs;
  std::vector<std::vector<float>> ys;
  for (int i = 0; i < set.n; ++i) {
    const int decoder = set.ids[i];
    SCOPED_TRACE("decoder " + std::to_string(decoder));
    set.set(decoder);
    dy.Fill(0xFF);
    const absl::Status st = GpuExpertGemv(dm.view, act, routing, dy.as<float>(), nullptr);
    set.set(-1);  // the default (TRITMOE_* from the environment, else built in)
    ASSERT_TRUE(st.ok()) << st;
    TM_CHECK_CUDA(cudaDeviceSynchronize());
    std::vector<float> y(n_pairs * rows);
    dy.CopyToHost(y.data(), y.size() * 4);
    ErrorStats stats;
    CheckGroupedOutputs(y, ex.w, x, xq, offsets, {}, rows, cols, &stats);
    if (::testing::Test::HasFatalFailure()) return;
    EXPECT_EQ(stats.checked, n_pairs * rows);
    ys.push_back(std::move(y));
  }
  for (size_t i = 1; i < ys.size(); ++i) {
    EXPECT_EQ(0, std::memcmp(ys[i].data(), ys[0].data(), ys[0].size() * 4))
        << "decoder " << set.ids[i];
  }
}

TEST_P(QuantGemvGpuTest, DecodersAgree) {
  TM_SKIP_WITHOUT_GPU();
  // Expert 0: 1 pair (one-token items), expert 1: 11 pairs (two 8-token chunks), expert 2: 4.
  // Then 70 pairs on one expert: 9 chunks, i.e. two items of 8 chunks (the last one partial)
  // or three of 4 for the multi-chunk kernels, which decode a tile once for all their chunks.
  for (const DecoderSet& set : kDecoderSets) {
    CheckDecodersAgree(set, {0, 1, 12, 16}, 11);
    if (HasFatalFailure()) return;
    CheckDecodersAgree(set, {0, 70, 71, 104}, 70);
    if (HasFatalFailure()) return;
  }
}

// The automatic kernel choice with 40 one-pair experts: on an H200 (132 SMs) too few items for
// two row groups per warp (80) but enough for one (160), so the two-row-group decoders fall back
// to the pipelined kernel with one row group per warp.
TEST(QuantGemvGpuAutoTest, DecodersAgreeWithFewItems) {
  TM_SKIP_WITHOUT_GPU();
  gpu_internal::SetGemvKernelForTesting(0);
  std::vector<int32_t> offsets(41);
  for (int e = 0; e <= 40; ++e) offsets[e] = e;
  for (const DecoderSet& set : kDecoderSets) {
    CheckDecodersAgree(set, offsets, 1);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

// The automatic choice with 20 pairs on one expert and one on each of 39 others: the multi-chunk
// kernels when the total is unknown, the one-chunk ones when the total (59 pairs, < 8 per
// expert) says most experts have one chunk. Both against the CPU twin, decoders bit-identical.
TEST(QuantGemvGpuAutoTest, PairsHintPicksEitherKernel) {
  TM_SKIP_WITHOUT_GPU();
  gpu_internal::SetGemvKernelForTesting(0);
  std::vector<int32_t> offsets = {0, 20};
  for (int e = 1; e < 40; ++e) offsets.push_back(offsets.back() + 1);
  for (const DecoderSet& set : kDecoderSets) {
    for (int64_t total : {int64_t{0}, int64_t{offsets.back()}}) {
      SCOPED_TRACE("total_pairs " + std::to_string(total));
      CheckDecodersAgree(set, offsets, 20, total);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

std::string KernelName(const ::testing::TestParamInfo<int>& info) {
  static const char* const kNames[] = {"auto",  "splitk",    "pipe4",     "pipe8",
                                       "multi", "pmulti4x4", "pmulti8x4", "pmulti8x8"};
  return kNames[info.param];
}
INSTANTIATE_TEST_SUITE_P(Kernels, QuantGemvGpuTest, ::testing::Values(1, 2, 3, 4, 5, 6, 7),
                         KernelName);

}  // namespace
}  // namespace tritmoe
