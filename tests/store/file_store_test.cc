// The file store against the memory-mapped model it reads (the same bytes for any range, single
// file and split set), its checksum manifest, and each way a file can be bad: a corrupt chunk
// (with and without a manifest), a truncated shard (before and after open), a manifest of other
// files, a missing tensor, a range past the end. Bad bytes are never returned as good.
#include "runtime/store/file_store.h"

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "gtest/gtest.h"
#include "runtime/gguf/gguf.h"
#include "runtime/store/chunk_layout.h"
#include "store_test_util.h"

namespace tritmoe {
namespace {

using testing::CopyModel;
using testing::FileSize;
using testing::FlipByte;
using testing::ScratchDir;
using testing::SharedModel;

FileStoreOptions Verify(FileStoreOptions::Verify verify) {
  FileStoreOptions o;
  o.verify = verify;
  return o;
}

FileStoreOptions SmallChunks(FileStoreOptions::Verify verify) {
  FileStoreOptions o;
  o.verify = verify;
  o.chunk_bytes = 4096;  // experts of the tiny model span several chunks
  return o;
}

// Every byte of every tensor, read whole and in random sub-ranges, equals the mapping's.
void ExpectSameBytes(FileStore& store, const gguf::GgufModel& ref, uint32_t seed) {
  std::mt19937_64 rng(seed);
  for (const gguf::TensorInfo& t : ref.tensors()) {
    const uint8_t* want = ref.TensorData(t);
    std::vector<uint8_t> got(t.nbytes);
    ASSERT_TRUE(store.Read({{t.name, 0, t.nbytes, got.data()}}).ok()) << t.name;
    ASSERT_EQ(std::memcmp(got.data(), want, t.nbytes), 0) << t.name;
    for (int k = 0; k < 3; ++k) {
      const uint64_t off = rng() % t.nbytes, size = rng() % (t.nbytes - off) + 1;
      std::vector<uint8_t> part(size);
      ASSERT_TRUE(store.Read({{t.name, off, size, part.data()}}).ok());
      ASSERT_EQ(std::memcmp(part.data(), want + off, size), 0) << t.name << " @" << off;
    }
  }
}

const gguf::TensorInfo& Tensor(const gguf::GgufModel& m, const std::string& name) {
  const gguf::TensorInfo* t = m.FindTensor(name);
  EXPECT_NE(t, nullptr) << name;
  return *t;
}

uint64_t FileOffset(const gguf::GgufModel& m, const gguf::TensorInfo& t) {
  return m.shard(t.shard).data_offset() + t.offset;
}

TEST(ChunkLayoutTest, ExpertMatricesAreWholeChunks) {
  // 16 matrices of 10000 bytes in 4096-byte chunks: 3 chunks each, the last 1808 bytes.
  const ChunkLayout l = ChunkLayout::For(160000, 16, 1, 4096);
  EXPECT_EQ(l.unit_bytes, 10000u);
  EXPECT_EQ(l.chunks_per_unit(), 3u);
  EXPECT_EQ(l.n_chunks(), 48u);
  EXPECT_EQ(l.ChunkAt(10000), 3u);
  EXPECT_EQ(l.ChunkBegin(3), 10000u);
  EXPECT_EQ(l.ChunkEnd(2), 10000u);
  EXPECT_EQ(l.ChunkEnd(47), 160000u);
  for (uint64_t c = 0; c < l.n_chunks(); ++c) {
    EXPECT_EQ(l.ChunkAt(l.ChunkBegin(c)), c);
    EXPECT_EQ(l.ChunkAt(l.ChunkEnd(c) - 1), c);
  }
  const ChunkLayout flat = ChunkLayout::For(5000, 1, 1, 4096);
  EXPECT_EQ(flat.n_chunks(), 2u);
  EXPECT_EQ(flat.ChunkEnd(1), 5000u);
}

TEST(FileStoreTest, SameBytesAsTheMappingSingleFileAndSplit) {
  for (int max_tensors : {0, 17}) {
    const std::string path =
        CopyModel(SharedModel(3, max_tensors), ScratchDir("bytes" + std::to_string(max_tensors)));
    auto ref = gguf::GgufModel::Open(path);
    ASSERT_TRUE(ref.ok()) << ref.status();
    if (max_tensors > 0) {
      ASSERT_GT((*ref)->n_shards(), 2);
    }
    auto store = FileStore::Open(path, SmallChunks(FileStoreOptions::Verify::kFirstRead));
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_FALSE((*store)->verified_by_manifest());
    EXPECT_EQ((*store)->tensors().size(), (*ref)->tensors().size());
    ExpectSameBytes(**store, **ref, 1);
    ExpectSameBytes(**store, **ref, 2);  // now every chunk is checked against its first read

    auto manifest = (*store)->ComputeManifest(4096);
    ASSERT_TRUE(manifest.ok()) << manifest.status();
    const std::string mpath = ChecksumManifest::DefaultPath(path);
    ASSERT_TRUE(manifest->Write(mpath).ok());
    auto verified = FileStore::Open(path, Verify(FileStoreOptions::Verify::kManifest));
    ASSERT_TRUE(verified.ok()) << verified.status();
    EXPECT_TRUE((*verified)->verified_by_manifest());
    EXPECT_EQ((*verified)->chunk_bytes(), 4096u);  // the manifest's, not the option's default
    ExpectSameBytes(**verified, **ref, 3);
  }
}

TEST(FileStoreTest, ManifestRoundTripsAndIsRequiredWhenAskedFor) {
  const std::string dir = ScratchDir("manifest");
  const std::string path = SharedModel();
  auto none = FileStore::Open(path, Verify(FileStoreOptions::Verify::kManifest));
  EXPECT_TRUE(absl::IsNotFound(none.status())) << none.status();
  auto store = FileStore::Open(path);
  ASSERT_TRUE(store.ok());
  auto m = (*store)->ComputeManifest(1000);
  ASSERT_TRUE(m.ok());
  const std::string mpath = dir + "/copy.tmsum";
  ASSERT_TRUE(m->Write(mpath).ok());
  auto back = ChecksumManifest::Read(mpath);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->chunk_bytes, 1000u);
  ASSERT_EQ(back->tensors.size(), m->tensors.size());
  for (size_t i = 0; i < m->tensors.size(); ++i) {
    EXPECT_EQ(back->tensors[i].name, m->tensors[i].name);
    EXPECT_EQ(back->tensors[i].crcs, m->tensors[i].crcs);
  }
  // A malformed manifest names its line.
  std::ofstream(dir + "/bad.tmsum") << "tritmoe-checksums 1\nchunk_bytes 64\nshard x y\n";
  auto bad = ChecksumManifest::Read(dir + "/bad.tmsum");
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status()));
  EXPECT_NE(bad.status().message().find("line 3"), std::string::npos) << bad.status();
}

TEST(FileStoreTest, CorruptChunkIsDataLossNamingTensorAndOffsetNeighboursStillRead) {
  const std::string path = CopyModel(SharedModel(), ScratchDir("corrupt"));
  {
    auto store = FileStore::Open(path, SmallChunks(FileStoreOptions::Verify::kFirstRead));
    auto m = (*store)->ComputeManifest(4096);
    ASSERT_TRUE(m->Write(ChecksumManifest::DefaultPath(path)).ok());
  }
  auto ref = gguf::GgufModel::Open(path);
  const gguf::TensorInfo& t = Tensor(**ref, "blk.1.ffn_up_exps.weight");
  const uint64_t expert_bytes = t.nbytes / t.ne[2];
  // Expert 5 of the up projection, 100 bytes in.
  FlipByte(path, FileOffset(**ref, t) + 5 * expert_bytes + 100);

  auto store = FileStore::Open(path);  // kAuto finds the manifest
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->verified_by_manifest());
  std::vector<uint8_t> buf(expert_bytes, 0xEE);
  absl::Status st = (*store)->Read({{t.name, 5 * expert_bytes, expert_bytes, buf.data()}});
  ASSERT_TRUE(absl::IsDataLoss(st)) << st;
  EXPECT_NE(st.message().find("blk.1.ffn_up_exps.weight"), std::string::npos) << st;
  EXPECT_NE(st.message().find("corrupt chunk"), std::string::npos) << st;
  EXPECT_NE(st.message().find(path), std::string::npos) << st;
  EXPECT_NE(st.message().find("at file offset"), std::string::npos) << st;
  // A sub-range of the bad chunk is refused too, even if it does not cover the bad byte.
  st = (*store)->Read({{t.name, 5 * expert_bytes + 200, 16, buf.data()}});
  EXPECT_TRUE(absl::IsDataLoss(st)) << st;
  // Experts 4 and 6 share no chunk with it.
  for (int e : {4, 6}) {
    st = (*store)->Read({{t.name, e * expert_bytes, expert_bytes, buf.data()}});
    EXPECT_TRUE(st.ok()) << st;
    EXPECT_EQ(std::memcmp(buf.data(), (*ref)->TensorData(t) + e * expert_bytes, expert_bytes), 0);
  }
}

TEST(FileStoreTest, WithoutManifestAChunkThatChangesAfterItsFirstReadIsDataLoss) {
  const std::string path = CopyModel(SharedModel(), ScratchDir("changed"));
  auto store = FileStore::Open(path, SmallChunks(FileStoreOptions::Verify::kAuto));
  ASSERT_TRUE(store.ok());
  ASSERT_FALSE((*store)->verified_by_manifest());
  auto ref = gguf::GgufModel::Open(path);
  const gguf::TensorInfo& t = Tensor(**ref, "blk.1.ffn_down_exps.weight");
  std::vector<uint8_t> buf(t.nbytes);
  ASSERT_TRUE((*store)->Read({{t.name, 0, t.nbytes, buf.data()}}).ok());
  FlipByte(path, FileOffset(**ref, t) + 7);
  absl::Status st = (*store)->Read({{t.name, 0, t.nbytes, buf.data()}});
  ASSERT_TRUE(absl::IsDataLoss(st)) << st;
  EXPECT_NE(st.message().find("changed"), std::string::npos) << st;
}

TEST(FileStoreTest, TruncatedShardIsAClearError) {
  const std::string first = CopyModel(SharedModel(3, 17), ScratchDir("truncated"));
  auto ref = gguf::GgufModel::Open(first);
  ASSERT_TRUE(ref.ok());
  const int last = (*ref)->n_shards() - 1;
  const std::string shard = (*ref)->shard(last).path();
  const gguf::TensorInfo* victim = nullptr;
  for (const auto& t : (*ref)->tensors()) {
    if (t.shard == last) victim = &t;  // the last tensor of the last shard
  }
  ASSERT_NE(victim, nullptr);

  // Cut under an open store: the read fails with DataLoss naming the shard.
  auto store = FileStore::Open(first, SmallChunks(FileStoreOptions::Verify::kFirstRead));
  ASSERT_TRUE(store.ok()) << store.status();
  std::filesystem::resize_file(shard, FileSize(shard) - 100);
  std::vector<uint8_t> buf(victim->nbytes);
  absl::Status st = (*store)->Read({{victim->name, 0, victim->nbytes, buf.data()}});
  ASSERT_TRUE(absl::IsDataLoss(st)) << st;
  EXPECT_NE(st.message().find(shard), std::string::npos) << st;
  EXPECT_NE(st.message().find("truncated"), std::string::npos) << st;

  // Opening the cut set fails, naming the shard.
  auto reopened = FileStore::Open(first);
  ASSERT_FALSE(reopened.ok());
  EXPECT_NE(reopened.status().message().find(shard), std::string::npos) << reopened.status();
}

TEST(FileStoreTest, ManifestOfOtherFilesIsRefused) {
  const std::string dir = ScratchDir("mismatch");
  const std::string a = SharedModel();
  const std::string b = SharedModel(3, 17);
  auto sa = FileStore::Open(a);
  auto ma = (*sa)->ComputeManifest(4096);
  ASSERT_TRUE(ma->Write(dir + "/a.tmsum").ok());
  FileStoreOptions o;
  o.manifest_path = dir + "/a.tmsum";
  auto sb = FileStore::Open(b, o);
  ASSERT_TRUE(absl::IsFailedPrecondition(sb.status())) << sb.status();
  EXPECT_NE(sb.status().message().find("does not match"), std::string::npos);
}

TEST(FileStoreTest, MissingTensorAndOutOfRange) {
  const std::string path = SharedModel();
  auto store = FileStore::Open(path);
  ASSERT_TRUE(store.ok());
  uint8_t b[8];
  absl::Status st = (*store)->Read({{"blk.9.ffn_up_exps.weight", 0, 8, b}});
  EXPECT_TRUE(absl::IsNotFound(st)) << st;
  EXPECT_NE(st.message().find("blk.9.ffn_up_exps.weight"), std::string::npos);
  const StoreTensor* t = (*store)->FindTensor("output_norm.weight");
  ASSERT_NE(t, nullptr);
  st = (*store)->Read({{t->name, t->nbytes - 4, 8, b}});
  EXPECT_TRUE(absl::IsOutOfRange(st)) << st;
}

TEST(FileStoreTest, ManyReadersAtOnce) {
  const std::string path = SharedModel();
  auto ref = gguf::GgufModel::Open(path);
  auto store = FileStore::Open(path, SmallChunks(FileStoreOptions::Verify::kFirstRead));
  ASSERT_TRUE(store.ok());
  std::vector<const gguf::TensorInfo*> exps;
  for (const auto& t : (*ref)->tensors()) {
    if (t.name.find("_exps") != std::string::npos) exps.push_back(&t);
  }
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < 6; ++k) {
    threads.emplace_back([&, k] {
      std::mt19937 rng(k);
      for (int i = 0; i < 200; ++i) {
        const gguf::TensorInfo& t = *exps[rng() % exps.size()];
        const uint64_t eb = t.nbytes / t.ne[2], e = rng() % t.ne[2];
        std::vector<uint8_t> buf(eb);
        absl::Status st = (*store)->Read({{t.name, e * eb, eb, buf.data()}});
        if (!st.ok() || std::memcmp(buf.data(), (*ref)->TensorData(t) + e * eb, eb) != 0) ++bad;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
}

}  // namespace
}  // namespace tritmoe
