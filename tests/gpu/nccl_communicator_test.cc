// The NCCL Communicator on one GPU (the group of one: what every rank's own block of an
// all-to-all takes), against host copies of the same collectives: every byte of an AllToAllV with
// offsets, AllReduce (sum, max; float, double, int64), AllGather, Broadcast, Barrier, and the
// interface's argument checks. Skips without a GPU. The multi-rank AllToAllV (NVLink peers) is
// checked element by element by bench/nccl_a2a_bench under mpirun on 2+ GPUs (docs/PERF.md).
#include <cuda_runtime_api.h>

#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "comm/communicator.h"
#include "experts/cuda/device_buffer.h"
#include "gtest/gtest.h"
#include "runtime/gpu/nccl_communicator.h"
#include "tests/gpu/gpu_test_util.h"

namespace tritmoe {
namespace {

std::unique_ptr<gpu::NcclCommunicator> Make() {
  LocalCommunicator host;
  auto c = gpu::NcclCommunicator::Create(host);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(*c) : nullptr;
}

TEST(NcclCommunicatorTest, GroupOfOne) {
  TM_SKIP_WITHOUT_GPU();
  auto c = Make();
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->rank(), 0);
  EXPECT_EQ(c->size(), 1);
  EXPECT_EQ(c->backend_name(), "nccl");

  // AllToAllV: 1000 bytes from offset 24 land at offset 100.
  std::mt19937 rng(1);
  std::vector<uint8_t> src(1200), got(1200, 0xEE);
  for (uint8_t& b : src) b = static_cast<uint8_t>(rng());
  DeviceBuffer ds(src.size()), dr(got.size());
  ds.CopyFromHost(src.data(), src.size());
  dr.CopyFromHost(got.data(), got.size());
  const int64_t sc[1] = {1000}, sd[1] = {24}, rc[1] = {1000}, rd[1] = {100};
  ASSERT_TRUE(c->AllToAllV(ds.get(), sc, sd, dr.get(), rc, rd).ok());
  dr.CopyToHost(got.data(), got.size());
  for (int i = 0; i < 1200; ++i) {
    const uint8_t want = i >= 100 && i < 1100 ? src[i - 100 + 24] : 0xEE;
    ASSERT_EQ(got[i], want) << i;
  }
  // Zero counts with null buffers are allowed.
  const int64_t zero[1] = {0};
  EXPECT_TRUE(c->AllToAllV(nullptr, zero, zero, nullptr, zero, zero).ok());
  // Mismatched spans are refused before NCCL is called.
  const int64_t two[2] = {1, 1};
  EXPECT_FALSE(c->AllToAllV(ds.get(), two, two, dr.get(), two, two).ok());

  // AllReduce over one rank leaves the values; AllGather and Broadcast copy.
  std::vector<float> f(777);
  std::iota(f.begin(), f.end(), -3.5f);
  DeviceBuffer df(f.size() * sizeof(float));
  df.CopyFromHost(f.data(), df.bytes());
  ASSERT_TRUE(
      c->AllReduce(df.get(), static_cast<int64_t>(f.size()), DataType::kFloat32, ReduceOp::kSum)
          .ok());
  ASSERT_TRUE(
      c->AllReduce(df.get(), static_cast<int64_t>(f.size()), DataType::kFloat32, ReduceOp::kMax)
          .ok());
  std::vector<float> fb(f.size());
  df.CopyToHost(fb.data(), df.bytes());
  EXPECT_EQ(fb, f);
  std::vector<int64_t> iv = {1, -2, int64_t{1} << 40};
  DeviceBuffer di(iv.size() * 8), dg(iv.size() * 8);
  di.CopyFromHost(iv.data(), di.bytes());
  ASSERT_TRUE(c->AllReduce(di.get(), 3, DataType::kInt64, ReduceOp::kSum).ok());
  ASSERT_TRUE(c->AllGather(di.get(), 24, dg.get()).ok());
  std::vector<int64_t> ib(3);
  dg.CopyToHost(ib.data(), 24);
  EXPECT_EQ(ib, iv);
  ASSERT_TRUE(c->Broadcast(df.get(), 16, 0).ok());
  EXPECT_FALSE(c->Broadcast(df.get(), 16, 1).ok());  // root out of range
  EXPECT_TRUE(c->Barrier().ok());
}

TEST(NcclCommunicatorTest, MissingDeviceIsAnError) {
  TM_SKIP_WITHOUT_GPU();
  LocalCommunicator host;
  auto c = gpu::NcclCommunicator::Create(host, 1000);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition) << c.status();
}

}  // namespace
}  // namespace tritmoe
