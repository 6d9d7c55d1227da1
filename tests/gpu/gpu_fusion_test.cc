// The fused small ops of a GPU decode step against the separate kernels they replace, which
// gpu_ops_test holds against their CPU twins. The fused kernels do the same float operations, so
// every output must be bit-identical:
//  * RMSNorm with the residual add folded in (x += residual, written back) and with the next
//    GEMV's activation quantization folded in: x, y and the activation records;
//  * SwiGLU folded into the down projection's activation quantization: the records;
//  * routing + grouping by expert in one launch: experts, weights, offsets, and a valid CSR
//    (the order of pairs within an expert is unspecified in both).
#include <cuda_runtime_api.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "experts/cuda/device_buffer.h"
#include "experts/cuda/quant_gemv.h"
#include "gtest/gtest.h"
#include "runtime/gpu/elementwise.h"
#include "runtime/gpu/moe_route.h"
#include "tests/gpu/gpu_test_util.h"

namespace tritmoe {
namespace {

using testing::RandomFloats;

template <class T>
DeviceBuffer ToDevice(const std::vector<T>& v) {
  DeviceBuffer b(v.size() * sizeof(T));
  b.CopyFromHost(v.data(), v.size() * sizeof(T));
  return b;
}
template <class T>
std::vector<T> ToHost(const DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  b.CopyToHost(v.data(), n * sizeof(T));
  return v;
}
void Sync() { ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess); }

TEST(GpuFusionTest, RmsNormWithResidualAndQuantizationIsBitEqual) {
  TM_SKIP_WITHOUT_GPU();
  std::mt19937 rng(41);
  for (int n : {7168, 1536, 512}) {
    for (int T : {1, 5}) {
      for (int mode = 0; mode < 3; ++mode) {  // residual, quantization, both
        SCOPED_TRACE("n=" + std::to_string(n) + " T=" + std::to_string(T) +
                     " mode=" + std::to_string(mode));
        const bool res = mode != 1, quant = mode != 0;
        const std::vector<float> x0 = RandomFloats(T * n, rng, -3.0f, 3.0f);
        const std::vector<float> r0 = RandomFloats(T * n, rng, -3.0f, 3.0f);
        const std::vector<float> gain = RandomFloats(n, rng, 0.5f, 1.5f);
        const int64_t act_bytes = GpuActivationBytes(T, n);
        DeviceBuffer xa = ToDevice(x0), xb = ToDevice(x0), dr = ToDevice(r0), dg = ToDevice(gain);
        DeviceBuffer ya(T * n * sizeof(float)), yb(T * n * sizeof(float));
        DeviceBuffer aa(act_bytes), ab(act_bytes);
        aa.Fill(0);  // the records' unused bytes compare equal
        ab.Fill(0);
        gpu::RmsNormParams p;
        p.x_stride = n;
        p.y_stride = n;
        p.n_rows = T;
        p.n = n;
        p.gain = dg.as<float>();
        p.eps = 1e-6f;
        // Separate: add, norm, quantize.
        p.x = xa.as<float>();
        p.y = ya.as<float>();
        if (res) {
          ASSERT_EQ(gpu::LaunchAdd(xa.as<float>(), dr.as<float>(), T * n, nullptr), cudaSuccess);
        }
        ASSERT_EQ(gpu::LaunchRmsNorm(p, nullptr), cudaSuccess);
        GpuActivations act;
        if (quant) {  // braces: ASSERT_* expands to an if/else
          ASSERT_TRUE(
              QuantizeActivationsGpu(ya.as<float>(), T, n, aa.get(), act_bytes, nullptr, &act)
                  .ok());
        }
        // Fused.
        p.x = xb.as<float>();
        p.y = yb.as<float>();
        p.residual = res ? dr.as<float>() : nullptr;
        p.act = quant ? ab.as<uint8_t>() : nullptr;
        ASSERT_EQ(gpu::LaunchRmsNorm(p, nullptr), cudaSuccess);
        Sync();
        EXPECT_EQ(ToHost<uint32_t>(xa, T * n), ToHost<uint32_t>(xb, T * n));
        EXPECT_EQ(ToHost<uint32_t>(ya, T * n), ToHost<uint32_t>(yb, T * n));
        EXPECT_EQ(ToHost<uint8_t>(aa, act_bytes), ToHost<uint8_t>(ab, act_bytes));
        if (res) {
          EXPECT_NE(ToHost<float>(xb, 1)[0], x0[0]);  // the residual did land
        }
      }
    }
  }
  gpu::RmsNormParams bad;  // quantization needs n % 256 == 0
  DeviceBuffer b(1024);
  bad.x = bad.y = b.as<float>();
  bad.gain = b.as<float>();
  bad.n_rows = 1;
  bad.n = 100;
  bad.act = b.as<uint8_t>();
  EXPECT_EQ(gpu::LaunchRmsNorm(bad, nullptr), cudaErrorInvalidValue);
  cudaGetLastError();
}

TEST(GpuFusionTest, SwiGluQuantizationIsBitEqual) {
  TM_SKIP_WITHOUT_GPU();
  std::mt19937 rng(43);
  for (int ff : {2048, 256}) {
    for (int rows : {1, 8, 37}) {
      SCOPED_TRACE("ff=" + std::to_string(ff) + " rows=" + std::to_string(rows));
      const std::vector<float> gu = RandomFloats(rows * 2 * ff, rng, -6.0f, 6.0f);
      const int64_t act_bytes = GpuActivationBytes(rows, ff);
      DeviceBuffer dgu = ToDevice(gu), dact(rows * ff * sizeof(float));
      DeviceBuffer aa(act_bytes), ab(act_bytes);
      aa.Fill(0);
      ab.Fill(0);
      gpu::SwiGluParams sp;
      sp.gu = dgu.as<float>();
      sp.out = dact.as<float>();
      sp.n_rows = rows;
      sp.n_ff = ff;
      ASSERT_EQ(gpu::LaunchSwiGlu(sp, nullptr), cudaSuccess);
      GpuActivations a, b;
      ASSERT_TRUE(
          QuantizeActivationsGpu(dact.as<float>(), rows, ff, aa.get(), act_bytes, nullptr, &a)
              .ok());
      ASSERT_TRUE(
          QuantizeSwiGluActivationsGpu(dgu.as<float>(), rows, ff, ab.get(), act_bytes, nullptr, &b)
              .ok());
      Sync();
      EXPECT_EQ(b.n_rows, rows);
      EXPECT_EQ(b.cols, ff);
      EXPECT_EQ(ToHost<uint8_t>(aa, act_bytes), ToHost<uint8_t>(ab, act_bytes));
    }
  }
  GpuActivations out;
  DeviceBuffer b(1 << 16);
  EXPECT_FALSE(QuantizeSwiGluActivationsGpu(b.as<float>(), 1, 100, b.get(), 1 << 16, nullptr, &out)
                   .ok());  // width not a multiple of 256
  EXPECT_FALSE(QuantizeSwiGluActivationsGpu(b.as<float>(), 4, 2048, b.get(), 100, nullptr, &out)
                   .ok());  // workspace too small
}

TEST(GpuFusionTest, RouteAndGroupEqualsSeparateLaunches) {
  TM_SKIP_WITHOUT_GPU();
  std::mt19937 rng(47);
  const int E = 256, k = 8;
  for (int T : {1, 7, 16, 20}) {
    SCOPED_TRACE("T=" + std::to_string(T));
    const std::vector<float> logits = RandomFloats(T * E, rng, -4.0f, 4.0f);
    const std::vector<float> bias = RandomFloats(E, rng, -0.1f, 0.1f);
    DeviceBuffer dl = ToDevice(logits), db = ToDevice(bias);
    struct Out {
      DeviceBuffer experts, weights, offsets, token, slot;
    };
    auto make = [&] {
      return Out{DeviceBuffer(T * k * 4), DeviceBuffer(T * k * 4), DeviceBuffer((E + 1) * 4),
                 DeviceBuffer(T * k * 4), DeviceBuffer(T * k * 4)};
    };
    Out a = make(), b = make();
    auto params = [&](Out& o, gpu::RouteParams* rp, gpu::GroupParams* gp) {
      rp->logits = dl.as<float>();
      rp->bias = db.as<float>();
      rp->n_tokens = T;
      rp->n_expert = E;
      rp->k = k;
      rp->gating = gpu::kGatingSigmoid;
      rp->group_limited = true;
      rp->n_group = 8;
      rp->n_group_used = 4;
      rp->weights_norm = true;
      rp->weights_scale = 2.5f;
      rp->experts = o.experts.as<int32_t>();
      rp->weights = o.weights.as<float>();
      gp->experts = rp->experts;
      gp->n_tokens = T;
      gp->k = k;
      gp->n_expert = E;
      gp->offsets = o.offsets.as<int32_t>();
      gp->pair_token = o.token.as<int32_t>();
      gp->slot_pair = o.slot.as<int32_t>();
    };
    gpu::RouteParams rpa, rpb;
    gpu::GroupParams gpa, gpb;
    params(a, &rpa, &gpa);
    params(b, &rpb, &gpb);
    ASSERT_EQ(gpu::LaunchRoute(rpa, nullptr), cudaSuccess);
    ASSERT_EQ(gpu::LaunchGroupByExpert(gpa, nullptr), cudaSuccess);
    ASSERT_TRUE(gpu::RouteAndGroupFits(rpb));
    ASSERT_EQ(gpu::LaunchRouteAndGroup(rpb, gpb, nullptr), cudaSuccess);
    Sync();
    const int P = T * k;
    const std::vector<int32_t> experts = ToHost<int32_t>(b.experts, P);
    EXPECT_EQ(ToHost<int32_t>(a.experts, P), experts);
    EXPECT_EQ(ToHost<uint32_t>(a.weights, P), ToHost<uint32_t>(b.weights, P));
    const std::vector<int32_t> off = ToHost<int32_t>(b.offsets, E + 1);
    EXPECT_EQ(ToHost<int32_t>(a.offsets, E + 1), off);
    const std::vector<int32_t> tok = ToHost<int32_t>(b.token, P), slot = ToHost<int32_t>(b.slot, P);
    std::vector<int> used(P, 0);
    for (int i = 0; i < P; ++i) {
      const int e = experts[i], p = slot[i];
      ASSERT_GE(p, off[e]);
      ASSERT_LT(p, off[e + 1]);
      EXPECT_EQ(tok[p], i / k);
      ++used[p];
    }
    for (int p = 0; p < P; ++p) EXPECT_EQ(used[p], 1);
  }
  gpu::RouteParams big;
  big.n_tokens = 33;
  big.n_expert = E;
  big.k = k;
  EXPECT_FALSE(gpu::RouteAndGroupFits(big));
}

}  // namespace
}  // namespace tritmoe
