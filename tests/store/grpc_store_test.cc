// The gRPC store: an in-process server (and a `tritmoe store` subprocess) against the file store
// it serves: the same bytes and bitwise the same logits through the cache; recovery that resumes
// (streams cut every two chunks, a chunk corrupted on the wire once, a server that goes away and
// comes back on the same port); and clear errors where retrying is wrong (a chunk corrupt every
// time, a corrupt or truncated file on the server, a missing tensor) or gives up (a server that
// stays down), never wrong output and never a hang.
#include "runtime/store/grpc_store.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>

#include "gtest/gtest.h"
#include "runtime/gguf/gguf.h"
#include "runtime/store/cached_expert_source.h"
#include "runtime/store/file_store.h"
#include "runtime/store/store_server.h"
#include "store_test_util.h"

namespace tritmoe {
namespace {

using testing::CopyModel;
using testing::FlipByte;
using testing::RunScript;
using testing::SameBits;
using testing::ScratchDir;
using testing::SharedModel;

GrpcStoreOptions FastRetries(int attempts = 4) {
  GrpcStoreOptions o;
  o.max_attempts = attempts;
  o.initial_backoff = absl::Milliseconds(10);
  o.max_backoff = absl::Milliseconds(100);
  o.call_timeout = absl::Seconds(20);
  return o;
}

StoreServerOptions Local(int port = 0, uint64_t chunk_bytes = 1 << 20) {
  StoreServerOptions o;
  o.host = "127.0.0.1";
  o.port = port;
  o.chunk_bytes = chunk_bytes;
  return o;
}

std::string Spec(int port) { return "grpc://127.0.0.1:" + std::to_string(port); }

// Reads every expert tensor of the store whole; compares with the mapping.
::testing::AssertionResult SameExpertBytes(ExpertStore& store, const gguf::GgufModel& ref) {
  for (const gguf::TensorInfo& t : ref.tensors()) {
    if (t.name.find("_exps") == std::string::npos) continue;
    std::vector<uint8_t> buf(t.nbytes);
    absl::Status st = store.Read({{t.name, 0, t.nbytes, buf.data()}});
    if (!st.ok()) return ::testing::AssertionFailure() << st;
    if (std::memcmp(buf.data(), ref.TensorData(t), t.nbytes) != 0) {
      return ::testing::AssertionFailure() << t.name << " differs";
    }
  }
  return ::testing::AssertionSuccess();
}

class GrpcStoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    path_ = new std::string(SharedModel(4));
    ModelOptions o;
    o.threads = 2;
    // The cache hands out experts in the file's layout: the same bytes as reading them in place,
    // so bit-identical logits (the CPU repack would change the float summation order).
    o.repack_experts = false;
    auto model = Model::Load(*path_, o);
    ASSERT_TRUE(model.ok()) << model.status();
    resident_ = new std::vector<float>(RunScript(**model));
  }
  static void TearDownTestSuite() {
    delete resident_;
    delete path_;
  }
  void SetUp() override {
    auto fs = FileStore::Open(*path_);
    ASSERT_TRUE(fs.ok()) << fs.status();
    file_ = std::move(*fs);
    auto ref = gguf::GgufModel::Open(*path_);
    ASSERT_TRUE(ref.ok());
    ref_ = std::move(*ref);
  }

  std::vector<float> RunCached(ExpertStore* store, const ExpertCacheOptions& options) {
    CachedExpertSource source(store, options);
    ModelOptions o;
    o.threads = 2;
    o.expert_source = &source;
    auto model = Model::Load(*path_, o);
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? RunScript(**model) : std::vector<float>{};
  }

  static std::string* path_;
  static std::vector<float>* resident_;
  std::unique_ptr<FileStore> file_;
  std::unique_ptr<gguf::GgufModel> ref_;
};
std::string* GrpcStoreTest::path_ = nullptr;
std::vector<float>* GrpcStoreTest::resident_ = nullptr;

TEST_F(GrpcStoreTest, SameTableAndBytesAsTheFile) {
  auto server = StoreServer::Start(file_.get(), Local(0, 5000));  // chunks cut experts unevenly
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = GrpcStore::Connect(Spec((*server)->port()), FastRetries());
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->served_model(), *path_);
  ASSERT_EQ((*client)->tensors().size(), file_->tensors().size());
  for (size_t i = 0; i < file_->tensors().size(); ++i) {
    const StoreTensor &a = (*client)->tensors()[i], &b = file_->tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.type, b.type);
    EXPECT_EQ(a.ne, b.ne);
    EXPECT_EQ(a.nbytes, b.nbytes);
  }
  EXPECT_TRUE(SameExpertBytes(**client, *ref_));
  // Several ranges in one call, unaligned.
  const gguf::TensorInfo* t = ref_->FindTensor("blk.1.ffn_down_exps.weight");
  std::vector<uint8_t> a(777), b(12345);
  ASSERT_TRUE(
      (*client)->Read({{t->name, 3, 777, a.data()}, {t->name, 20000, 12345, b.data()}}).ok());
  EXPECT_EQ(std::memcmp(a.data(), ref_->TensorData(*t) + 3, 777), 0);
  EXPECT_EQ(std::memcmp(b.data(), ref_->TensorData(*t) + 20000, 12345), 0);
  EXPECT_EQ((*client)->retries(), 0);
}

TEST_F(GrpcStoreTest, IdenticalLogitsThroughTheCacheForEveryBudgetAndPrefetch) {
  auto server = StoreServer::Start(file_.get(), Local());
  ASSERT_TRUE(server.ok());
  auto client = GrpcStore::Connect(Spec((*server)->port()), FastRetries());
  ASSERT_TRUE(client.ok()) << client.status();
  for (int64_t budget : {int64_t{1}, int64_t{400} << 10, int64_t{0}}) {
    for (bool prefetch : {false, true}) {
      ExpertCacheOptions o;
      o.budget_bytes = budget;
      o.prefetch = prefetch;
      SCOPED_TRACE(::testing::Message() << "budget " << budget << " prefetch " << prefetch);
      EXPECT_TRUE(SameBits(RunCached(client->get(), o), *resident_));
    }
  }
}

TEST_F(GrpcStoreTest, StreamsCutEveryTwoChunksResumeToTheSameBytesAndLogits) {
  StoreServerOptions so = Local(0, 4096);
  so.fault_abort_after_chunks = 2;
  auto server = StoreServer::Start(file_.get(), so);
  ASSERT_TRUE(server.ok());
  auto client = GrpcStore::Connect(Spec((*server)->port()), FastRetries());
  ASSERT_TRUE(client.ok());
  EXPECT_TRUE(SameExpertBytes(**client, *ref_));
  EXPECT_GT((*client)->retries(), 10);
  ExpertCacheOptions o;
  o.budget_bytes = 1;
  EXPECT_TRUE(SameBits(RunCached(client->get(), o), *resident_));
}

TEST_F(GrpcStoreTest, ChunkCorruptedOnTheWireIsRetriedCorruptEveryTimeIsDataLoss) {
  StoreServerOptions so = Local(0, 4096);
  so.fault_corrupt_every = 5;
  auto server = StoreServer::Start(file_.get(), so);
  auto client = GrpcStore::Connect(Spec((*server)->port()), FastRetries());
  ASSERT_TRUE(client.ok());
  EXPECT_TRUE(SameExpertBytes(**client, *ref_));
  EXPECT_GT((*client)->retries(), 0);

  so.fault_corrupt_every = 0;
  so.fault_corrupt_always = true;
  auto bad = StoreServer::Start(file_.get(), so);
  auto bad_client = GrpcStore::Connect(Spec((*bad)->port()), FastRetries());
  ASSERT_TRUE(bad_client.ok());
  std::vector<uint8_t> buf(100);
  absl::Status st = (*bad_client)->Read({{"blk.1.ffn_up_exps.weight", 0, 100, buf.data()}});
  ASSERT_TRUE(absl::IsDataLoss(st)) << st;
  EXPECT_NE(st.message().find("corrupt chunk"), std::string::npos) << st;
  EXPECT_NE(st.message().find("twice"), std::string::npos) << st;
  EXPECT_NE(st.message().find(Spec((*bad)->port())), std::string::npos) << st;
  // Through the model: the step fails, no logits.
  CachedExpertSource source(bad_client->get(), {});
  ModelOptions mo;
  mo.expert_source = &source;
  auto model = Model::Load(*path_, mo);
  ASSERT_TRUE(model.ok());
  auto kv = (*model)->NewKvCache(8);
  const std::vector<int32_t> prompt = {1, 2, 3};
  StepOutput out;
  EXPECT_TRUE(absl::IsDataLoss((*model)->Step({{kv->get(), prompt}}, &out)));
}

TEST_F(GrpcStoreTest, ServerSideCorruptOrTruncatedFileFailsAtOnceWithoutRetries) {
  const std::string dir = ScratchDir("grpc_bad_file");
  const std::string copy = CopyModel(*path_, dir);
  {
    auto s = FileStore::Open(copy);
    ASSERT_TRUE((*s)->ComputeManifest(4096)->Write(ChecksumManifest::DefaultPath(copy)).ok());
  }
  const gguf::TensorInfo* t = ref_->FindTensor("blk.2.ffn_gate_exps.weight");
  FlipByte(copy, ref_->shard(0).data_offset() + t->offset + 10);
  auto backend = FileStore::Open(copy);
  ASSERT_TRUE(backend.ok());
  auto server = StoreServer::Start(backend->get(), Local());
  auto client = GrpcStore::Connect(Spec((*server)->port()), FastRetries());
  ASSERT_TRUE(client.ok());
  std::vector<uint8_t> buf(t->nbytes);
  absl::Status st = (*client)->Read({{t->name, 0, t->nbytes, buf.data()}});
  ASSERT_TRUE(absl::IsDataLoss(st)) << st;
  EXPECT_NE(st.message().find("blk.2.ffn_gate_exps.weight"), std::string::npos) << st;
  EXPECT_EQ((*client)->retries(), 0);

  // The last tensor of the file, cut under the running server.
  const gguf::TensorInfo& last = ref_->tensors().back();
  std::filesystem::resize_file(copy, std::filesystem::file_size(copy) - 64);
  std::vector<uint8_t> tail(last.nbytes);
  st = (*client)->Read({{last.name, 0, last.nbytes, tail.data()}});
  ASSERT_TRUE(absl::IsDataLoss(st)) << st;
  EXPECT_NE(st.message().find("truncated"), std::string::npos) << st;
  EXPECT_EQ((*client)->retries(), 0);
}

TEST_F(GrpcStoreTest, MissingTensorIsNotFoundAtOnce) {
  auto server = StoreServer::Start(file_.get(), Local());
  auto client = GrpcStore::Connect(Spec((*server)->port()), FastRetries());
  ASSERT_TRUE(client.ok());
  uint8_t b[4];
  absl::Status st = (*client)->Read({{"blk.7.ffn_up_exps.weight", 0, 4, b}});
  EXPECT_TRUE(absl::IsNotFound(st)) << st;
  EXPECT_EQ((*client)->retries(), 0);
}

TEST_F(GrpcStoreTest, ServerGoneIsUnavailableAfterRetriesAndResumesWhenBack) {
  auto server = StoreServer::Start(file_.get(), Local());
  ASSERT_TRUE(server.ok());
  const int port = (*server)->port();
  auto hasty = GrpcStore::Connect(Spec(port), FastRetries(3));
  GrpcStoreOptions slow = FastRetries(40);
  slow.max_backoff = absl::Milliseconds(200);
  auto patient = GrpcStore::Connect(Spec(port), slow);
  ASSERT_TRUE(hasty.ok() && patient.ok());
  EXPECT_TRUE(SameExpertBytes(**hasty, *ref_));
  (*server)->Shutdown();

  // Down for good, as far as a client with three attempts can tell: a clear error, quickly.
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<uint8_t> buf(64);
  absl::Status st = (*hasty)->Read({{"blk.1.ffn_up_exps.weight", 0, 64, buf.data()}});
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(absl::IsUnavailable(st)) << st;
  EXPECT_NE(st.message().find(Spec(port)), std::string::npos) << st;
  EXPECT_NE(st.message().find("attempts"), std::string::npos) << st;
  EXPECT_LT(waited, 10.0);

  // Back on the same port while a patient client retries: its read completes, same bytes.
  std::unique_ptr<StoreServer> again;
  std::thread restart([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto s = StoreServer::Start(file_.get(), Local(port));
    EXPECT_TRUE(s.ok()) << s.status();
    if (s.ok()) again = std::move(*s);
  });
  const gguf::TensorInfo* t = ref_->FindTensor("blk.3.ffn_down_exps.weight");
  std::vector<uint8_t> all(t->nbytes);
  st = (*patient)->Read({{t->name, 0, t->nbytes, all.data()}});
  restart.join();
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(std::memcmp(all.data(), ref_->TensorData(*t), t->nbytes), 0);
  EXPECT_GT((*patient)->retries(), 0);
}

// --- `tritmoe store` as a subprocess ------------------------------------------------------

// Starts `tritmoe store` on a free port; returns its pid and port (0 on failure).
std::pair<pid_t, int> StartStoreProcess(const std::string& model) {
  int out[2];
  if (::pipe(out) != 0) return {-1, 0};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::close(out[0]);
    ::close(out[1]);
    ::execl(TRITMOE_BINARY, TRITMOE_BINARY, "store", "--model", model.c_str(), "--host",
            "127.0.0.1", "--port", "0", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  FILE* f = ::fdopen(out[0], "r");
  char line[4096];
  int port = 0;
  if (std::fgets(line, sizeof line, f) != nullptr) {
    const char* colon = std::strrchr(line, ':');
    if (colon != nullptr) port = std::atoi(colon + 1);
  }
  std::fclose(f);
  return {pid, port};
}

TEST_F(GrpcStoreTest, StoreCommandServesIdenticalLogitsAndItsDeathIsACleanError) {
  auto [pid, port] = StartStoreProcess(*path_);
  ASSERT_GT(pid, 0);
  ASSERT_GT(port, 0) << "tritmoe store did not report its port";
  auto client = GrpcStore::Connect(Spec(port), FastRetries(3));
  ASSERT_TRUE(client.ok()) << client.status();
  ExpertCacheOptions o;
  o.budget_bytes = 1;
  o.prefetch = true;
  CachedExpertSource source(client->get(), o);
  ModelOptions mo;
  mo.threads = 2;
  mo.expert_source = &source;
  auto model = Model::Load(*path_, mo);
  ASSERT_TRUE(model.ok());
  EXPECT_TRUE(SameBits(RunScript(**model), *resident_));

  ::kill(pid, SIGKILL);  // dies without a goodbye
  int status = 0;
  ::waitpid(pid, &status, 0);
  auto kv = (*model)->NewKvCache(8);
  const std::vector<int32_t> prompt = {4, 5, 6};
  StepOutput out;
  absl::Status st = (*model)->Step({{kv->get(), prompt}}, &out);
  ASSERT_TRUE(absl::IsUnavailable(st)) << st;
  EXPECT_NE(st.message().find(Spec(port)), std::string::npos) << st;
}

}  // namespace
}  // namespace tritmoe
