// The expert cache: the slot count a budget buys, LRFU eviction, handing every expert over once
// with fewer slots than experts, prefetch, errors that leave no bad slot behind (against an
// in-memory store with known bytes); and Model::Step through the cache against the resident run:
// bitwise identical logits for every budget from one expert per layer to unlimited, prefetch on
// and off, and a corrupt expert failing the step rather than changing its output.
#include "runtime/store/expert_cache.h"

#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include "gtest/gtest.h"
#include "runtime/gguf/gguf.h"
#include "runtime/store/cached_expert_source.h"
#include "runtime/store/file_store.h"
#include "store_test_util.h"

namespace tritmoe {
namespace {

using testing::MakeModel;
using testing::RunScript;
using testing::SameBits;
using testing::ScratchDir;

// Byte i of tensor t is a hash of (t, i); counts reads; can be made to fail.
class FakeStore final : public ExpertStore {
 public:
  FakeStore(int n_layers, int n_expert, uint64_t matrix_bytes) {
    std::vector<StoreTensor> t;
    for (int l = 0; l < n_layers; ++l) {
      for (const char* m : {"gate", "up", "down"}) {
        StoreTensor st;
        st.name = "blk." + std::to_string(l) + ".ffn_" + m + "_exps.weight";
        st.nbytes = matrix_bytes * n_expert;
        t.push_back(st);
      }
    }
    SetTensors(std::move(t));
  }
  static uint8_t ByteOf(std::string_view tensor, uint64_t i) {
    return static_cast<uint8_t>(std::hash<std::string_view>{}(tensor)*31 + i * 2654435761u);
  }
  const std::string& name() const override { return name_; }
  absl::Status Read(std::span<const ReadRequest> requests) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++calls;
    for (const ReadRequest& r : requests) {
      if (absl::Status s = CheckRequest(r); !s.ok()) return s;
      if (fail) return absl::DataLossError("fake: bad chunk in " + std::string(r.tensor));
      for (uint64_t i = 0; i < r.size; ++i) r.dst[i] = ByteOf(r.tensor, r.offset + i);
      ++reads;
    }
    return absl::OkStatus();
  }
  std::mutex mu_;
  int calls = 0;  // Read calls
  int reads = 0;  // ranges read
  bool fail = false;

 private:
  std::string name_ = "fake";
};

std::vector<ExpertLayerLayout> Layouts(int n_layers, int n_expert, uint64_t matrix_bytes) {
  std::vector<ExpertLayerLayout> out;
  for (int l = 0; l < n_layers; ++l) {
    ExpertLayerLayout lay;
    lay.layer = l;
    lay.n_expert = n_expert;
    const char* names[3] = {"gate", "up", "down"};
    for (int m = 0; m < 3; ++m) {
      lay.tensor[m] = "blk." + std::to_string(l) + ".ffn_" + names[m] + "_exps.weight";
      lay.bytes[m] = matrix_bytes;
    }
    out.push_back(lay);
  }
  return out;
}

// Checks that b holds expert e's three matrices.
::testing::AssertionResult HoldsExpert(const ExpertBytes& b, int layer, int e, uint64_t mb) {
  const char* names[3] = {"gate", "up", "down"};
  for (int m = 0; m < 3; ++m) {
    const std::string t = "blk." + std::to_string(layer) + ".ffn_" + names[m] + "_exps.weight";
    for (uint64_t i = 0; i < mb; ++i) {
      if (b[m][i] != FakeStore::ByteOf(t, e * mb + i)) {
        return ::testing::AssertionFailure()
               << "layer " << layer << " expert " << e << " matrix " << m << " byte " << i;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

constexpr uint64_t kMb = 200;  // matrix bytes; slot = 3 * 256 (64-aligned) - 56 = 712

TEST(ExpertCacheTest, BudgetBuysSlotsPerLayer) {
  FakeStore store(2, 8, kMb);
  const int64_t one_of_each = 2 * (256 + 256 + 200);
  struct Case {
    int64_t budget;
    int slots;
  } cases[] = {{0, 8}, {1, 1}, {one_of_each - 1, 1}, {3 * one_of_each, 3}, {100 * one_of_each, 8}};
  for (const Case& c : cases) {
    auto cache = ExpertCache::Create(&store, Layouts(2, 8, kMb), {}, {.budget_bytes = c.budget});
    ASSERT_TRUE(cache.ok()) << cache.status();
    EXPECT_EQ((*cache)->slots_per_layer(), c.slots) << c.budget;
  }
  // Only local experts count.
  std::vector<bool> local(8, false);
  local[1] = local[6] = true;
  auto cache = ExpertCache::Create(&store, Layouts(2, 8, kMb), local, {});
  EXPECT_EQ((*cache)->slots_per_layer(), 2);
  std::vector<int32_t> non_local = {3};
  absl::Status st = (*cache)->ForEach(0, non_local, [](size_t, const ExpertBytes&) {});
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
  EXPECT_FALSE(ExpertCache::Create(&store, Layouts(2, 8, kMb), {}, {.budget_bytes = -1}).ok());
}

TEST(ExpertCacheTest, OneSlotHandsEveryExpertOverOnceWithItsBytes) {
  FakeStore store(2, 8, kMb);
  auto cache = ExpertCache::Create(&store, Layouts(2, 8, kMb), {}, {.budget_bytes = 1});
  ASSERT_TRUE(cache.ok());
  const std::vector<int32_t> experts = {0, 3, 5, 7};
  std::vector<int> seen(experts.size(), 0);
  absl::Status st = (*cache)->ForEach(1, experts, [&](size_t i, const ExpertBytes& b) {
    ++seen[i];
    EXPECT_TRUE(HoldsExpert(b, 1, experts[i], kMb));
  });
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(seen, std::vector<int>(4, 1));
  ExpertCacheStats s = (*cache)->Stats();
  EXPECT_EQ(s.layers[1].misses, 4);
  EXPECT_EQ(s.layers[1].hits, 0);
  EXPECT_EQ(s.layers[1].evictions, 3);
  EXPECT_EQ(s.layers[1].bytes_read, 4 * 3 * static_cast<int64_t>(kMb));
  EXPECT_EQ(s.layers[0].requests(), 0);
  // Expert 7 is still there.
  const std::vector<int32_t> again = {7};
  ASSERT_TRUE((*cache)->ForEach(1, again, [](size_t, const ExpertBytes&) {}).ok());
  EXPECT_EQ((*cache)->Stats().layers[1].hits, 1);
}

TEST(ExpertCacheTest, MissesOfALayerAreOneBatchedRead) {
  FakeStore store(1, 8, kMb);
  auto cache = ExpertCache::Create(&store, Layouts(1, 8, kMb), {}, {});
  const std::vector<int32_t> experts = {1, 2, 4, 6, 7};
  ASSERT_TRUE((*cache)->ForEach(0, experts, [](size_t, const ExpertBytes&) {}).ok());
  EXPECT_EQ(store.calls, 1);
  EXPECT_EQ(store.reads, 15);
  ASSERT_TRUE((*cache)->ForEach(0, experts, [](size_t, const ExpertBytes&) {}).ok());
  EXPECT_EQ(store.calls, 1);  // all hits
  EXPECT_EQ((*cache)->Stats().layers[0].hits, 5);
}

TEST(ExpertCacheTest, LrfuKeepsTheFrequentOverTheOnceRecent) {
  FakeStore store(1, 8, kMb);
  const int64_t slot = 256 + 256 + 200;
  auto cache = ExpertCache::Create(&store, Layouts(1, 8, kMb), {},
                                   {.budget_bytes = 2 * slot, .lrfu_lambda = 0.3});
  ASSERT_EQ((*cache)->slots_per_layer(), 2);
  auto use = [&](std::vector<int32_t> e) {
    ASSERT_TRUE((*cache)->ForEach(0, e, [](size_t, const ExpertBytes&) {}).ok());
  };
  for (int i = 0; i < 5; ++i) use({0});  // expert 0: used on five steps
  use({1});                              // expert 1: once, now
  use({2});                              // needs a slot: LRU would drop 0, LRFU drops 1
  const int64_t misses = (*cache)->Stats().layers[0].misses;
  use({0});
  EXPECT_EQ((*cache)->Stats().layers[0].misses, misses) << "expert 0 was evicted";
  use({1});
  EXPECT_EQ((*cache)->Stats().layers[0].misses, misses + 1) << "expert 1 should have gone";
}

TEST(ExpertCacheTest, FailedReadReturnsTheStoreErrorAndLeavesNoBadSlot) {
  FakeStore store(1, 8, kMb);
  auto cache = ExpertCache::Create(&store, Layouts(1, 8, kMb), {}, {.budget_bytes = 1});
  const std::vector<int32_t> experts = {2, 3};
  store.fail = true;
  int calls = 0;
  absl::Status st = (*cache)->ForEach(0, experts, [&](size_t, const ExpertBytes&) { ++calls; });
  ASSERT_TRUE(absl::IsDataLoss(st)) << st;
  EXPECT_NE(st.message().find("layer 0"), std::string::npos) << st;
  EXPECT_NE(st.message().find("bad chunk"), std::string::npos) << st;
  EXPECT_EQ(calls, 0);
  store.fail = false;
  st = (*cache)->ForEach(0, experts, [&](size_t i, const ExpertBytes& b) {
    ++calls;
    EXPECT_TRUE(HoldsExpert(b, 0, experts[i], kMb));
  });
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(calls, 2);
}

TEST(ExpertCacheTest, PrefetchLoadsAheadAndTurnsMissesIntoHits) {
  FakeStore store(2, 8, kMb);
  auto cache = ExpertCache::Create(&store, Layouts(2, 8, kMb), {}, {.prefetch = true});
  const std::vector<int32_t> predicted = {5, 1, 6};
  (*cache)->Prefetch(1, predicted);
  for (int i = 0; i < 500 && (*cache)->Stats().layers[1].prefetched < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_EQ((*cache)->Stats().layers[1].prefetched, 3);
  const std::vector<int32_t> needed = {1, 5, 7};
  ASSERT_TRUE((*cache)
                  ->ForEach(1, needed,
                            [&](size_t i, const ExpertBytes& b) {
                              EXPECT_TRUE(HoldsExpert(b, 1, needed[i], kMb));
                            })
                  .ok());
  const LayerCacheStats s = (*cache)->Stats().layers[1];
  EXPECT_EQ(s.hits, 2);
  EXPECT_EQ(s.misses, 1);
  EXPECT_EQ(s.prefetch_used, 2);
  // Without the option, Prefetch does nothing.
  auto plain = ExpertCache::Create(&store, Layouts(2, 8, kMb), {}, {});
  (*plain)->Prefetch(1, predicted);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ((*plain)->Stats().layers[1].prefetched, 0);
}

// --- Model::Step through the cache ---------------------------------------------------------

class CachedModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(ScratchDir("model"));
    path_ = new std::string(MakeModel(*dir_, "tiny4", 4));  // 3 MoE layers
    ModelOptions o;
    o.threads = 2;
    // The cache hands out experts in the file's layout: the same bytes as reading them in place,
    // so bit-identical logits (the CPU repack would change the float summation order).
    o.repack_experts = false;
    auto model = Model::Load(*path_, o);
    ASSERT_TRUE(model.ok()) << model.status();
    resident_ = new std::vector<float>(RunScript(**model));
    ASSERT_FALSE(resident_->empty());
    const Weights& w = (*model)->weights();
    const LayerWeights& l = w.layer(1);
    expert_bytes_ =
        l.gate_exps.matrix_bytes() + l.up_exps.matrix_bytes() + l.down_exps.matrix_bytes();
  }
  static void TearDownTestSuite() {
    delete resident_;
    delete path_;
    delete dir_;
  }

  // Runs the script with the experts from `store` through a cache of `options`.
  static std::vector<float> RunCached(ExpertStore* store, const ExpertCacheOptions& options,
                                      ExpertCacheStats* stats) {
    CachedExpertSource source(store, options);
    ModelOptions o;
    o.threads = 2;
    o.expert_source = &source;
    auto model = Model::Load(*path_, o);
    EXPECT_TRUE(model.ok()) << model.status();
    if (!model.ok()) return {};
    std::vector<float> logits = RunScript(**model);
    *stats = source.Stats();
    return logits;
  }

  static std::string* dir_;
  static std::string* path_;
  static std::vector<float>* resident_;
  static int64_t expert_bytes_;
};
std::string* CachedModelTest::dir_ = nullptr;
std::string* CachedModelTest::path_ = nullptr;
std::vector<float>* CachedModelTest::resident_ = nullptr;
int64_t CachedModelTest::expert_bytes_ = 0;

TEST_F(CachedModelTest, IdenticalLogitsForEveryBudgetWithPrefetchOnAndOff) {
  auto store = FileStore::Open(*path_);
  ASSERT_TRUE(store.ok()) << store.status();
  const int n_moe = 3, n_expert = 16;
  // Budgets in slots per layer: one expert (fetch, compute, evict in turn), fewer than the 4
  // active, a few, half, unlimited.
  for (int slots : {1, 3, 5, 8, 0}) {
    for (bool prefetch : {false, true}) {
      // Slots are 64-byte aligned per matrix: a budget of `slots` experts' raw bytes per layer
      // would buy fewer; give each slot 192 spare bytes.
      const int64_t budget = slots == 0 ? 0 : slots * n_moe * (expert_bytes_ + 192);
      ExpertCacheStats stats;
      std::vector<float> logits =
          RunCached(store->get(), {.budget_bytes = budget, .prefetch = prefetch}, &stats);
      SCOPED_TRACE(::testing::Message() << slots << " slots/layer, prefetch " << prefetch);
      EXPECT_TRUE(SameBits(logits, *resident_));
      EXPECT_EQ(stats.slots_per_layer, slots == 0 ? n_expert : slots);
      const LayerCacheStats total = stats.Total();
      EXPECT_GT(total.requests(), 0);
      EXPECT_EQ(total.bytes_read, (total.misses + total.prefetched) * expert_bytes_);
      EXPECT_EQ(total.tokens, 13 + 6 + 7);
      if (slots == 0) {
        EXPECT_LE(total.misses + total.prefetched, n_moe * n_expert);
      }
      if (slots == 1 && !prefetch) {
        EXPECT_GT(total.evictions, 0);
      }
      if (prefetch && slots != 0) {
        EXPECT_GT(total.prefetched, 0);
      }
    }
  }
}

TEST_F(CachedModelTest, StoreOfAnotherModelIsRefusedAtLoad) {
  const std::string other = MakeModel(*dir_, "other", 4, "pure-q8_0");
  auto store = FileStore::Open(other);
  ASSERT_TRUE(store.ok());
  CachedExpertSource source(store->get(), {});
  ModelOptions o;
  o.expert_source = &source;
  auto model = Model::Load(*path_, o);
  ASSERT_TRUE(absl::IsFailedPrecondition(model.status())) << model.status();
  EXPECT_NE(model.status().message().find("_exps.weight"), std::string::npos);
}

TEST_F(CachedModelTest, CorruptExpertFailsTheStepInsteadOfChangingTheOutput) {
  // A copy of the model with a manifest, then one byte of an expert flipped.
  const std::string copy = *dir_ + "/corrupt.gguf";
  std::filesystem::copy_file(*path_, copy, std::filesystem::copy_options::overwrite_existing);
  {
    auto s = FileStore::Open(copy);
    ASSERT_TRUE((*s)->ComputeManifest(1 << 20)->Write(ChecksumManifest::DefaultPath(copy)).ok());
  }
  auto ref = gguf::GgufModel::Open(copy);
  // Corrupt every expert of layer 2's gate so that any routing hits it.
  const gguf::TensorInfo* t = (*ref)->FindTensor("blk.2.ffn_gate_exps.weight");
  ASSERT_NE(t, nullptr);
  const uint64_t eb = t->nbytes / t->ne[2];
  for (int e = 0; e < t->ne[2]; ++e) {
    testing::FlipByte(copy, (*ref)->shard(0).data_offset() + t->offset + e * eb + 3);
  }
  auto store = FileStore::Open(copy);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->verified_by_manifest());
  CachedExpertSource source(store->get(), {.budget_bytes = 1});
  ModelOptions o;
  o.threads = 2;
  o.expert_source = &source;
  auto model = Model::Load(*path_, o);  // replicated weights from the good file
  ASSERT_TRUE(model.ok());
  auto cache = (*model)->NewKvCache(16);
  const std::vector<int32_t> prompt = {1, 2, 3};
  StepOutput out;
  absl::Status st = (*model)->Step({{cache->get(), prompt, LogitsRequest::kLast}}, &out);
  ASSERT_TRUE(absl::IsDataLoss(st)) << st;
  EXPECT_NE(st.message().find("blk.2.ffn_gate_exps.weight"), std::string::npos) << st;
  EXPECT_TRUE(out.logits.empty());
}

}  // namespace
}  // namespace tritmoe
