// The device expert exchange (runtime/gpu/device_expert_exchange.h) on one GPU, over a real NCCL
// communicator of one rank (the exchange with itself: every expert served here):
//  * GpuModel with the exchange attached against the resident path, on generated tiny and small
//    models, f16 and ud-1.58: logits BIT-IDENTICAL at every step (a prefill of two sequences, then
//    decode steps: the first eager, the next replayed from CUDA graphs that contain the NCCL
//    calls), greedy tokens identical, and a step with an empty batch (this rank without tokens:
//    every MoE layer's exchange with zero tokens) leaves the next steps bit-identical;
//  * the exchange's kernels against host twins on a two-rank placement with replicas: which
//    choices a rank serves, its partial sums, the origin's rank-order sum;
//  * two ranks in one process on one GPU (one thread and one GpuModel each; the collectives
//    replaced by device copies between the threads, the same DeviceExpertExchange code): every
//    routed choice served by exactly one rank (a replicated expert included), partial sums back to
//    their origins: logits within the float-reordering bounds of the engine's np=2 test against
//    one model running both sequences, with a step where rank 1 has no tokens;
//  * attaching is refused where it cannot apply (host-staged exchange, other shapes).
// Skips without an sm_90 GPU.
#include <unistd.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "experts/cuda/device_buffer.h"
#include "gtest/gtest.h"
#include "runtime/gpu/device_expert_exchange.h"
#include "runtime/gpu/exchange_kernels.h"
#include "runtime/gpu/gpu_kv_cache.h"
#include "runtime/gpu/gpu_model.h"
#include "runtime/gpu/moe_route.h"
#include "runtime/gpu/nccl_communicator.h"
#include "runtime/model/expert_exchange.h"
#include "runtime/modelgen/model_generator.h"
#include "runtime/modelgen/model_shape.h"
#include "runtime/modelgen/quant_recipe.h"
#include "tests/common/logits_compare.h"
#include "tests/gpu/gpu_test_util.h"

namespace tritmoe {
namespace {

using gpu::DeviceExchangeConfig;
using gpu::DeviceExchangeLayer;
using gpu::DeviceExpertExchange;
using gpu::GpuModel;
using gpu::GpuModelOptions;
using gpu::GpuSequenceInput;

std::string Model(const std::string& shape_name, const std::string& recipe) {
  static std::map<std::string, std::string>* paths = new std::map<std::string, std::string>();
  const std::string key = shape_name + "-" + recipe;
  if (auto it = paths->find(key); it != paths->end()) return it->second;
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / ("tritmoe_dex_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / (key + ".gguf")).string();
  auto shape = GetModelShape(shape_name, 0);
  auto rec = QuantRecipe::Parse(recipe);
  EXPECT_TRUE(shape.ok() && rec.ok());
  GenerateOptions o;
  o.threads = static_cast<int>(std::max(4u, std::thread::hardware_concurrency()));
  const absl::Status s = GenerateModel(*shape, *rec, o, path);
  EXPECT_TRUE(s.ok()) << s;
  (*paths)[key] = path;
  return path;
}

std::unique_ptr<GpuModel> Load(const std::string& path, ExpertExchange* host_exchange = nullptr) {
  GpuModelOptions o;
  o.kv_type = KvCacheType::kF32;
  o.max_context = 64;
  o.threads = 4;
  o.exchange = host_exchange;
  auto m = GpuModel::Load(path, o);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

// Every MoE layer of `c` with each expert on rank 0 only.
DeviceExchangeConfig OneRankConfig(const ModelConfig& c) {
  DeviceExchangeConfig x;
  x.n_expert = c.n_expert;
  x.k = c.n_expert_used;
  x.n_embd = c.n_embd;
  x.max_ff = c.n_ff_exp;
  for (int il = 0; il < c.n_layer; ++il) {
    if (!c.IsMoeLayer(il)) continue;
    DeviceExchangeLayer l;
    for (int e = 0; e <= c.n_expert; ++e) l.replica_offsets.push_back(e);
    l.replica_ranks.assign(c.n_expert, 0);
    x.layers.push_back(std::move(l));
  }
  return x;
}

const std::vector<int32_t> kPromptA = {1, 5, 42, 79, 116, 153, 190};
const std::vector<int32_t> kPromptB = {7, 300, 12, 999, 4};
const std::vector<std::vector<int32_t>> kDecode = {
    {11, 13}, {500, 2}, {64, 1000}, {3, 17}, {250, 9}};

// Logits of every step (prefill, then decode), an empty step after the first decode when asked,
// and greedy tokens of two more decode steps.
struct ScenarioResult {
  std::vector<std::vector<float>> logits;
  std::vector<std::vector<int32_t>> greedy;
};

ScenarioResult RunScenario(GpuModel& m, bool empty_step) {
  ScenarioResult run;
  auto a = m.NewKvCache(), b = m.NewKvCache();
  EXPECT_TRUE(a.ok() && b.ok());
  if (!a.ok() || !b.ok()) return run;
  StepOutput out;
  absl::Status s = m.Step(
      {{a->get(), kPromptA, LogitsRequest::kAll}, {b->get(), kPromptB, LogitsRequest::kLast}},
      &out);
  EXPECT_TRUE(s.ok()) << s;
  run.logits.push_back(out.logits);
  for (size_t i = 0; i < kDecode.size(); ++i) {
    const auto& d = kDecode[i];
    s = m.Step({{a->get(), {&d[0], 1}, LogitsRequest::kLast},
                {b->get(), {&d[1], 1}, LogitsRequest::kLast}},
               &out);
    EXPECT_TRUE(s.ok()) << s;
    run.logits.push_back(out.logits);
    if (i == 0 && empty_step) {
      StepOutput none;
      s = m.Step(std::span<const GpuSequenceInput>(), &none);
      EXPECT_TRUE(s.ok()) << s;
      EXPECT_TRUE(none.logits.empty());
    }
  }
  std::vector<int32_t> tok = {kDecode.back()[0], kDecode.back()[1]};
  for (int i = 0; i < 3; ++i) {
    std::vector<int32_t> next;
    const std::vector<GpuSequenceInput> batch = {{a->get(), {&tok[0], 1}, LogitsRequest::kLast},
                                                 {b->get(), {&tok[1], 1}, LogitsRequest::kLast}};
    s = m.StepGreedy(batch, &next);
    EXPECT_TRUE(s.ok()) << s;
    run.greedy.push_back(next);
    if (next.size() == 2) tok = next;
  }
  return run;
}

class DeviceExchangeModelTest
    : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

// The scenario on the resident path and with the exchange attached (with an empty step after the
// first decode step when `empty_step`): every logit bit-identical, the same greedy tokens.
void ExpectBitIdentical(const std::string& shape, const std::string& recipe, bool empty_step) {
  const std::string path = Model(shape, recipe);
  auto resident = Load(path);
  auto exchanged = Load(path);
  ASSERT_NE(resident, nullptr);
  ASSERT_NE(exchanged, nullptr);
  LocalCommunicator host;
  auto nccl = gpu::NcclCommunicator::Create(host, 0);
  ASSERT_TRUE(nccl.ok()) << nccl.status();
  auto dex = DeviceExpertExchange::Create(OneRankConfig(exchanged->config()), &host, nccl->get());
  ASSERT_TRUE(dex.ok()) << dex.status();
  ASSERT_TRUE(exchanged->AttachDeviceExchange(dex->get()).ok());

  const ScenarioResult want = RunScenario(*resident, false);
  const ScenarioResult got = RunScenario(*exchanged, empty_step);
  ASSERT_EQ(got.logits.size(), want.logits.size());
  for (size_t s = 0; s < want.logits.size(); ++s) {
    ASSERT_EQ(got.logits[s].size(), want.logits[s].size()) << "step " << s;
    ASSERT_FALSE(want.logits[s].empty());
    size_t differ = 0;
    for (size_t i = 0; i < want.logits[s].size(); ++i) {
      if (std::memcmp(&got.logits[s][i], &want.logits[s][i], sizeof(float)) != 0) ++differ;
    }
    EXPECT_EQ(differ, 0u) << "step " << s << ": " << differ << " of " << want.logits[s].size()
                          << " logits differ in their bits";
  }
  EXPECT_EQ(got.greedy, want.greedy);
  std::printf("%s-%s: %zu steps bit-identical to the resident path\n", shape.c_str(),
              recipe.c_str(), want.logits.size());
  // Its CUDA graphs hold NCCL work: the model goes before the communicator (ncclCommDestroy
  // waits for such graphs, which would otherwise be destroyed after it: a hang).
  exchanged.reset();
}

TEST_P(DeviceExchangeModelTest, SelfExchangeIsBitIdenticalToResident) {
  TM_SKIP_WITHOUT_GPU();
  const auto& [shape, recipe] = GetParam();
  ExpectBitIdentical(shape, recipe, false);
}

// A step with an empty batch (this rank without tokens: every MoE layer's exchange with zero
// tokens) between decode steps changes nothing after it.
TEST_P(DeviceExchangeModelTest, EmptyStepChangesNothing) {
  TM_SKIP_WITHOUT_GPU();
  const auto& [shape, recipe] = GetParam();
  ExpectBitIdentical(shape, recipe, true);
}

INSTANTIATE_TEST_SUITE_P(Models, DeviceExchangeModelTest,
                         ::testing::Combine(::testing::Values("tiny", "small"),
                                            ::testing::Values("f16", "ud-1.58")),
                         [](const auto& info) {
                           std::string s = std::get<0>(info.param) + "_" + std::get<1>(info.param);
                           for (char& ch : s) {
                             if (ch == '-' || ch == '.') ch = '_';
                           }
                           return s;
                         });

TEST(DeviceExchangeTest, AttachIsRefusedWhereItCannotApply) {
  TM_SKIP_WITHOUT_GPU();
  const std::string path = Model("tiny", "ud-1.58");
  LocalCommunicator host;
  auto nccl = gpu::NcclCommunicator::Create(host, 0);
  ASSERT_TRUE(nccl.ok()) << nccl.status();
  LocalExpertExchange local;
  auto staged = Load(path, &local);
  ASSERT_NE(staged, nullptr);
  DeviceExchangeConfig cfg = OneRankConfig(staged->config());
  auto dex = DeviceExpertExchange::Create(cfg, &host, nccl->get());
  ASSERT_TRUE(dex.ok()) << dex.status();
  EXPECT_EQ(staged->AttachDeviceExchange(dex->get()).code(), absl::StatusCode::kFailedPrecondition);
  auto plain = Load(path);
  ASSERT_NE(plain, nullptr);
  EXPECT_FALSE(plain->AttachDeviceExchange(nullptr).ok());
  // A table for one MoE layer fewer, and one naming a rank outside the group.
  DeviceExchangeConfig fewer = cfg;
  fewer.layers.pop_back();
  auto dex2 = DeviceExpertExchange::Create(fewer, &host, nccl->get());
  ASSERT_TRUE(dex2.ok());
  const absl::Status s = plain->AttachDeviceExchange(dex2->get());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  DeviceExchangeConfig bad = cfg;
  bad.layers[0].replica_ranks[0] = 1;
  EXPECT_EQ(DeviceExpertExchange::Create(bad, &host, nccl->get()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- Two ranks in one process ----------------------------------------------------------------

// n ranks as n threads of one process on one GPU: each collective is a rendezvous (a barrier) at
// which every rank publishes its buffers; each then copies what it receives on its own stream
// after the sender's stream reached the call (an event), and the senders' streams wait until
// every receiver has copied. Not capturable (the models run without CUDA graphs).
class ThreadGroup {
 public:
  explicit ThreadGroup(int n) : n_(n), barrier_(n), slots_(n) {
    for (Slot& s : slots_) {
      cudaEventCreateWithFlags(&s.ready, cudaEventDisableTiming);
      cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming);
    }
  }
  ~ThreadGroup() {
    for (Slot& s : slots_) {
      cudaEventDestroy(s.ready);
      cudaEventDestroy(s.done);
    }
  }
  int size() const { return n_; }

  // What rank r published at the current collective.
  struct Slot {
    const void* host_send = nullptr;
    std::vector<gpu::GatherPart> parts;
    const void* send = nullptr;
    std::vector<int64_t> send_displs;
    cudaEvent_t ready = nullptr, done = nullptr;
  };

  void HostAllGather(int r, const void* send, int64_t bytes, void* recv) {
    slots_[r].host_send = send;
    barrier_.arrive_and_wait();
    for (int p = 0; p < n_; ++p) {
      std::memcpy(static_cast<uint8_t*>(recv) + p * bytes, slots_[p].host_send, bytes);
    }
    barrier_.arrive_and_wait();
  }

  // copies(p): the receiver's copies from rank p, enqueued on `stream`.
  template <typename Publish, typename Copies>
  absl::Status Device(int r, cudaStream_t stream, Publish&& publish, Copies&& copies) {
    Slot& me = slots_[r];
    publish(me);
    cudaEventRecord(me.ready, stream);
    barrier_.arrive_and_wait();
    absl::Status st;
    for (int p = 0; p < n_; ++p) {
      cudaStreamWaitEvent(stream, slots_[p].ready, 0);
      const cudaError_t e = copies(p, slots_[p]);
      if (e != cudaSuccess && st.ok()) st = absl::InternalError(cudaGetErrorString(e));
    }
    cudaEventRecord(me.done, stream);
    barrier_.arrive_and_wait();
    for (int p = 0; p < n_; ++p) cudaStreamWaitEvent(stream, slots_[p].done, 0);
    barrier_.arrive_and_wait();  // slots and events are reused by the next collective
    return st;
  }

 private:
  const int n_;
  std::barrier<> barrier_;
  std::vector<Slot> slots_;
};

class ThreadHost final : public Communicator {
 public:
  ThreadHost(ThreadGroup* g, int rank) : g_(g), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return g_->size(); }
  int local_rank() const override { return rank_; }
  int local_size() const override { return g_->size(); }
  std::string backend_name() const override { return "threads"; }

 protected:
  absl::Status DoAllToAllV(const void*, std::span<const int64_t>, std::span<const int64_t>, void*,
                           std::span<const int64_t>, std::span<const int64_t>) override {
    return absl::UnimplementedError("ThreadHost: AllToAllV");
  }
  absl::Status DoAllReduce(void*, int64_t, DataType, ReduceOp) override {
    return absl::UnimplementedError("ThreadHost: AllReduce");
  }
  absl::Status DoAllGather(const void* send, int64_t bytes, void* recv) override {
    g_->HostAllGather(rank_, send, bytes, recv);
    return absl::OkStatus();
  }
  absl::Status DoBroadcast(void*, int64_t, int) override {
    return absl::UnimplementedError("ThreadHost: Broadcast");
  }
  absl::Status DoBarrier() override { return absl::UnimplementedError("ThreadHost: Barrier"); }

 private:
  ThreadGroup* g_;
  int rank_;
};

class ThreadDevice final : public gpu::DeviceCollectives {
 public:
  ThreadDevice(ThreadGroup* g, int rank) : g_(g), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return g_->size(); }
  absl::Status EnqueueGatherV(std::span<const gpu::GatherPart> parts,
                              std::span<const int32_t> tokens, cudaStream_t stream) override {
    return g_->Device(
        rank_, stream, [&](ThreadGroup::Slot& me) { me.parts.assign(parts.begin(), parts.end()); },
        [&](int p, const ThreadGroup::Slot& from) {
          for (size_t i = 0; i < parts.size(); ++i) {
            int64_t offset = 0;
            for (int q = 0; q < p; ++q) offset += int64_t{tokens[q]} * parts[i].row_bytes;
            const int64_t bytes = int64_t{tokens[p]} * parts[i].row_bytes;
            if (bytes == 0) continue;
            const cudaError_t e =
                cudaMemcpyAsync(static_cast<uint8_t*>(parts[i].recv) + offset, from.parts[i].send,
                                bytes, cudaMemcpyDeviceToDevice, stream);
            if (e != cudaSuccess) return e;
          }
          return cudaSuccess;
        });
  }
  absl::Status EnqueueAllToAllV(const void* send, std::span<const int64_t> send_bytes,
                                std::span<const int64_t> send_displs, void* recv,
                                std::span<const int64_t> recv_bytes,
                                std::span<const int64_t> recv_displs,
                                cudaStream_t stream) override {
    (void)send_bytes;
    return g_->Device(
        rank_, stream,
        [&](ThreadGroup::Slot& me) {
          me.send = send;
          me.send_displs.assign(send_displs.begin(), send_displs.end());
        },
        [&](int p, const ThreadGroup::Slot& from) {
          if (recv_bytes[p] == 0) return cudaSuccess;
          return cudaMemcpyAsync(static_cast<uint8_t*>(recv) + recv_displs[p],
                                 static_cast<const uint8_t*>(from.send) + from.send_displs[rank_],
                                 recv_bytes[p], cudaMemcpyDeviceToDevice, stream);
        });
  }

 private:
  ThreadGroup* g_;
  int rank_;
};

// Two ranks, sequence A on rank 0 and B on rank 1 (each rank its own model without graphs),
// against one resident model running both: a prefill (A with logits at every row), decode steps,
// and one step in which only A runs (rank 1 exchange-only). Experts split in halves, expert 0 on
// both ranks (its choices split by token). Bounds of engine_device_test TwoRanksMatchOneRank.
TEST_P(DeviceExchangeModelTest, TwoRanksInOneProcessMatchOneModel) {
  TM_SKIP_WITHOUT_GPU();
  const auto& [shape, recipe] = GetParam();
  const std::string path = Model(shape, recipe);
  auto resident = Load(path);
  ASSERT_NE(resident, nullptr);
  const ModelConfig& c = resident->config();
  DeviceExchangeConfig cfg = OneRankConfig(c);
  for (DeviceExchangeLayer& l : cfg.layers) {
    l.replica_offsets = {0};
    l.replica_ranks.clear();
    for (int e = 0; e < c.n_expert; ++e) {
      if (e == 0) l.replica_ranks.push_back(1);  // expert 0: copies on ranks 1 and 0
      l.replica_ranks.push_back(e < c.n_expert / 2 ? 0 : 1);
      l.replica_offsets.push_back(static_cast<int32_t>(l.replica_ranks.size()));
    }
  }
  // The steps: per step, rank 0's tokens of A and rank 1's of B (empty: none).
  struct Step {
    std::vector<int32_t> a, b;
  };
  std::vector<Step> steps = {{kPromptA, kPromptB}};
  for (const auto& d : kDecode) steps.push_back({{d[0]}, {d[1]}});
  steps.insert(steps.begin() + 3, Step{{77}, {}});
  // Reference: one model, both sequences in one batch.
  std::vector<std::vector<float>> want_a, want_b;
  {
    auto a = resident->NewKvCache(), b = resident->NewKvCache();
    ASSERT_TRUE(a.ok() && b.ok());
    for (size_t i = 0; i < steps.size(); ++i) {
      std::vector<GpuSequenceInput> batch;
      const LogitsRequest la = i == 0 ? LogitsRequest::kAll : LogitsRequest::kLast;
      batch.push_back({a->get(), steps[i].a, la});
      if (!steps[i].b.empty()) batch.push_back({b->get(), steps[i].b, LogitsRequest::kLast});
      StepOutput out;
      const absl::Status s = resident->Step(batch, &out);
      ASSERT_TRUE(s.ok()) << s;
      const size_t split = out.n_rows[0] * c.n_vocab;
      want_a.emplace_back(out.logits.begin(), out.logits.begin() + split);
      want_b.emplace_back(out.logits.begin() + split, out.logits.end());
    }
  }
  ThreadGroup group(2);
  std::vector<std::vector<std::vector<float>>> got(2);
  std::vector<absl::Status> status(2);
  auto rank = [&](int r) {
    cudaSetDevice(0);
    GpuModelOptions o;
    o.kv_type = KvCacheType::kF32;
    o.max_context = 64;
    o.threads = 4;
    o.cuda_graphs = false;  // the thread collectives cannot be captured
    auto m = GpuModel::Load(path, o);
    ThreadHost host(&group, r);
    ThreadDevice device(&group, r);
    // Every rank reaches every collective even after a failure here (else the other waits).
    absl::StatusOr<std::unique_ptr<DeviceExpertExchange>> dex =
        DeviceExpertExchange::Create(cfg, &host, &device);
    absl::Status s = m.ok() ? dex.status() : m.status();
    if (s.ok()) s = (*m)->AttachDeviceExchange(dex->get());
    auto cache = s.ok() ? (*m)->NewKvCache() : absl::StatusOr<std::unique_ptr<gpu::GpuKvCache>>(s);
    if (!cache.ok()) s = cache.status();
    for (size_t i = 0; i < steps.size(); ++i) {
      const std::vector<int32_t>& tokens = r == 0 ? steps[i].a : steps[i].b;
      std::vector<GpuSequenceInput> batch;
      if (!tokens.empty() && s.ok()) {
        const LogitsRequest l = i == 0 && r == 0 ? LogitsRequest::kAll : LogitsRequest::kLast;
        batch.push_back({cache->get(), tokens, l});
      }
      StepOutput out;
      if (s.ok()) s = (*m)->Step(batch, &out);
      if (!s.ok()) {
        // A failed rank still has to meet the other at every collective: give up on both.
        ADD_FAILURE() << "rank " << r << ": " << s;
        std::abort();
      }
      got[r].push_back(out.logits);
    }
    status[r] = s;
  };
  std::thread t1(rank, 1);
  rank(0);
  t1.join();
  ASSERT_TRUE(status[0].ok() && status[1].ok());
  testing::Agreement ag;
  for (size_t i = 0; i < steps.size(); ++i) {
    ASSERT_EQ(got[0][i].size(), want_a[i].size()) << "step " << i;
    ASSERT_EQ(got[1][i].size(), want_b[i].size()) << "step " << i;
    for (size_t row = 0; row * c.n_vocab < want_a[i].size(); ++row) {
      ag.AddRow(got[0][i].data() + row * c.n_vocab, want_a[i].data() + row * c.n_vocab, c.n_vocab);
    }
    if (!want_b[i].empty()) ag.AddRow(got[1][i].data(), want_b[i].data(), c.n_vocab);
  }
  std::printf(
      "%s-%s: 2 ranks in one process vs one model: %zu rows, median / max RelError "
      "%.3g / %.3g, argmax mismatches %d\n",
      shape.c_str(), recipe.c_str(), ag.row_err.size(), ag.Median(), ag.Max(), ag.argmax_mismatch);
  if (recipe == "f16") {
    EXPECT_LE(ag.Max(), 1e-4);
    EXPECT_EQ(ag.argmax_mismatch, 0);
  } else {
    EXPECT_LE(ag.Median(), 0.05);
    EXPECT_LE(ag.argmax_mismatch, static_cast<int>(ag.row_err.size()) / 4);
  }
}

// The kernels as rank 1 of 2: 7 tokens of k = 3 over 6 experts; expert e on rank e % 2, expert 5
// also on rank 0 (copies by token parity: rank 0 for even tokens, rank 1 for odd).
TEST(DeviceExchangeTest, KernelsMatchHostTwinsOnTwoRanks) {
  TM_SKIP_WITHOUT_GPU();
  const int T = 7, k = 3, E = 6, n = 40, rank = 1;
  std::vector<int32_t> offsets = {0, 1, 2, 3, 4, 5, 7}, ranks = {0, 1, 0, 1, 0, 1, 0};
  ranks[5] = 1;  // expert 5: ranks {1, 0}
  ranks[6] = 0;
  std::mt19937 rng(3);
  std::vector<int32_t> experts(T * k);
  for (int32_t& e : experts) e = static_cast<int32_t>(rng() % E);
  experts[4] = 5;  // token 1 (odd): copy 1 = rank 0; token 2 (even): copy 0 = rank 1
  experts[6] = 5;
  const std::vector<float> w = testing::RandomFloats(T * k, rng, 0.1f, 1.0f);
  auto up = [](const void* p, size_t bytes) {
    DeviceBuffer b(bytes);
    b.CopyFromHost(p, bytes);
    return b;
  };
  DeviceBuffer d_exp = up(experts.data(), experts.size() * 4), d_off = up(offsets.data(), 28),
               d_ranks = up(ranks.data(), ranks.size() * 4), d_w = up(w.data(), w.size() * 4);
  DeviceBuffer d_masked(T * k * 4), d_offsets((E + 2) * 4), d_pair_token(T * k * 4),
      d_slot_pair(T * k * 4);
  gpu::MaskChoicesParams mp;
  mp.experts = d_exp.as<int32_t>();
  mp.replica_offsets = d_off.as<int32_t>();
  mp.replica_ranks = d_ranks.as<int32_t>();
  mp.n_tokens = T;
  mp.k = k;
  mp.n_expert = E;
  mp.rank = rank;
  mp.masked = d_masked.as<int32_t>();
  ASSERT_EQ(gpu::LaunchMaskChoices(mp, nullptr), cudaSuccess);
  std::vector<int32_t> masked(T * k);
  d_masked.CopyToHost(masked.data(), masked.size() * 4);
  for (int i = 0; i < T * k; ++i) {
    const int e = experts[i], g = i / k;
    const int copies = offsets[e + 1] - offsets[e];
    const bool mine = ranks[offsets[e] + g % copies] == rank;
    EXPECT_EQ(masked[i], mine ? e : E) << "choice " << i;
  }
  EXPECT_EQ(masked[6], 5);  // token 2 (even) -> copy 0 = rank 1
  EXPECT_EQ(masked[4], E);  // token 1 (odd) -> copy 1 = rank 0
  gpu::GroupParams gp;
  gp.experts = d_masked.as<int32_t>();
  gp.n_tokens = T;
  gp.k = k;
  gp.n_expert = E + 1;
  gp.offsets = d_offsets.as<int32_t>();
  gp.pair_token = d_pair_token.as<int32_t>();
  gp.slot_pair = d_slot_pair.as<int32_t>();
  ASSERT_EQ(gpu::LaunchGroupByExpert(gp, nullptr), cudaSuccess);
  std::vector<int32_t> slot_pair(T * k);
  d_slot_pair.CopyToHost(slot_pair.data(), slot_pair.size() * 4);
  // Expert outputs: pair p's row, values that identify it.
  const std::vector<float> y = testing::RandomFloats(size_t(T) * k * n, rng);
  DeviceBuffer d_y = up(y.data(), y.size() * 4), d_partial(size_t(T) * n * 4);
  gpu::PartialCombineParams pc;
  pc.masked = d_masked.as<int32_t>();
  pc.slot_pair = d_slot_pair.as<int32_t>();
  pc.w = d_w.as<float>();
  pc.y = d_y.as<float>();
  pc.partial = d_partial.as<float>();
  pc.n_tokens = T;
  pc.k = k;
  pc.n = n;
  pc.n_expert = E;
  ASSERT_EQ(gpu::LaunchPartialCombine(pc, nullptr), cudaSuccess);
  std::vector<float> partial(size_t(T) * n);
  d_partial.CopyToHost(partial.data(), partial.size() * 4);
  for (int g = 0; g < T; ++g) {
    for (int c = 0; c < n; ++c) {
      float acc = 0.0f;
      for (int j = 0; j < k; ++j) {
        const int i = g * k + j;
        if (masked[i] == E) continue;
        const float prod = w[i] * y[size_t(slot_pair[i]) * n + c];
        acc = acc + prod;
      }
      ASSERT_EQ(partial[size_t(g) * n + c], acc) << g << " " << c;
    }
  }
  // The origin's sum of 3 ranks' partials for its 2 tokens, + shared, + residual.
  const int parts = 3, mine = 2;
  const std::vector<float> p = testing::RandomFloats(size_t(parts) * mine * n, rng);
  const std::vector<float> sh = testing::RandomFloats(size_t(mine) * n, rng);
  std::vector<float> x = testing::RandomFloats(size_t(mine) * n, rng);
  DeviceBuffer d_p = up(p.data(), p.size() * 4), d_sh = up(sh.data(), sh.size() * 4),
               d_x = up(x.data(), x.size() * 4);
  gpu::RankSumParams rs;
  rs.x = d_x.as<float>();
  rs.parts = d_p.as<float>();
  rs.shared = d_sh.as<float>();
  rs.n_parts = parts;
  rs.n_tokens = mine;
  rs.n = n;
  ASSERT_EQ(gpu::LaunchRankSum(rs, nullptr), cudaSuccess);
  std::vector<float> got(x.size());
  d_x.CopyToHost(got.data(), got.size() * 4);
  for (size_t i = 0; i < x.size(); ++i) {
    float acc = p[i];
    for (int r = 1; r < parts; ++r) acc = acc + p[r * mine * n + i];
    acc = acc + sh[i];
    ASSERT_EQ(got[i], x[i] + acc) << i;
  }
}

}  // namespace
}  // namespace tritmoe
