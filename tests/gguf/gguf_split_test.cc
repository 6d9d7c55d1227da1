// gguf-split shards: write 3 shards, open the set from any shard, and reject missing or
// mismatched shards with messages naming them.
#include <cstring>
#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/gguf/gguf.h"
#include "runtime/gguf/gguf_writer.h"
#include "tests/gguf/gguf_test_util.h"

namespace tritmoe::gguf {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

// Tensor i is F32 [8 * (i + 1)] filled with the value 100 * seed + i.
void AddTensors(GgufWriter& w, const std::vector<std::string>& names, int seed) {
  for (size_t i = 0; i < names.size(); ++i) {
    const int64_t n = 8 * static_cast<int64_t>(i + 1);
    const float v = static_cast<float>(100 * seed + i);
    ASSERT_TRUE(w.AddTensor(names[i], GgmlType::kF32, {n}, [n, v](uint8_t* dst) {
                   for (int64_t k = 0; k < n; ++k) std::memcpy(dst + 4 * k, &v, 4);
                   return absl::OkStatus();
                 }).ok());
  }
}

std::vector<std::string> Names(const std::string& stem, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(stem + std::to_string(i) + ".weight");
  return out;
}

std::vector<std::string> WriteSet(const std::string& prefix, const std::vector<std::string>& names,
                                  int per_shard, int seed = 1) {
  GgufWriter w;
  w.SetString("general.architecture", "deepseek2");
  w.SetUint32("deepseek2.block_count", 61);
  AddTensors(w, names, seed);
  std::vector<std::string> paths;
  absl::Status s = w.WriteSplit(prefix, per_shard, &paths);
  EXPECT_TRUE(s.ok()) << s;
  return paths;
}

TEST(GgufSplitTest, ThreeShardsRoundTripFromAnyShard) {
  const std::string dir = testing::ScratchDir();
  const std::vector<std::string> names = Names("t", 7);
  const std::vector<std::string> paths = WriteSet(dir + "/model", names, 3);
  ASSERT_EQ(paths, (std::vector<std::string>{dir + "/model-00001-of-00003.gguf",
                                             dir + "/model-00002-of-00003.gguf",
                                             dir + "/model-00003-of-00003.gguf"}));
  for (const std::string& p : paths) {
    SCOPED_TRACE(p);
    auto m = GgufModel::Open(p);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ((*m)->n_shards(), 3);
    EXPECT_EQ((*m)->path(), paths[0]);
    EXPECT_EQ(*(*m)->GetUint("deepseek2.block_count"), 61u);
    ASSERT_EQ((*m)->tensors().size(), 7u);
    for (int i = 0; i < 7; ++i) {
      const TensorInfo* t = (*m)->FindTensor(names[i]);
      ASSERT_NE(t, nullptr);
      EXPECT_EQ(t->shard, i / 3);
      EXPECT_EQ(&(*m)->tensors()[i], t);
      EXPECT_EQ(t->ne[0], 8 * (i + 1));
      const float* data = reinterpret_cast<const float*>((*m)->TensorData(*t));
      for (int k = 0; k < t->ne[0]; ++k) ASSERT_EQ(data[k], 100.0f + i);
    }
  }
}

TEST(GgufSplitTest, ShardMetadataFollowsGgufSplit) {
  const std::string dir = testing::ScratchDir();
  const std::vector<std::string> paths = WriteSet(dir + "/m", Names("t", 7), 3);
  for (int i = 0; i < 3; ++i) {
    auto f = GgufFile::Open(paths[i]);
    ASSERT_TRUE(f.ok()) << f.status();
    std::vector<std::string> keys;
    for (const KeyValue& kv : (*f)->kvs()) keys.push_back(kv.key);
    if (i == 0) {
      // All model metadata first, then the split keys appended.
      EXPECT_EQ(keys, (std::vector<std::string>{"general.architecture", "deepseek2.block_count",
                                                "split.no", "split.count", "split.tensors.count"}));
    } else {
      EXPECT_EQ(keys, (std::vector<std::string>{"split.no", "split.count", "split.tensors.count"}));
    }
    const KeyValue* no = (*f)->FindKey("split.no");
    EXPECT_EQ(no->value.type, ValueType::kUint16);
    EXPECT_EQ(no->value.raw, (std::vector<uint8_t>{static_cast<uint8_t>(i), 0}));
    EXPECT_EQ((*f)->FindKey("split.count")->value.type, ValueType::kUint16);
    EXPECT_EQ((*f)->FindKey("split.tensors.count")->value.type, ValueType::kInt32);
    EXPECT_EQ((*f)->FindKey("split.tensors.count")->value.raw, (std::vector<uint8_t>{7, 0, 0, 0}));
    EXPECT_EQ((*f)->tensors().size(), i < 2 ? 3u : 1u);
    EXPECT_EQ((*f)->tensors()[0].offset, 0u);  // each shard's offsets start at its own data
  }
}

TEST(GgufSplitTest, OneShardSetIsAPlainModel) {
  const std::string dir = testing::ScratchDir();
  const std::vector<std::string> paths = WriteSet(dir + "/one", Names("t", 4), 10);
  ASSERT_EQ(paths, std::vector<std::string>{dir + "/one-00001-of-00001.gguf"});
  auto m = GgufModel::Open(paths[0]);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->n_shards(), 1);
  EXPECT_EQ((*m)->tensors().size(), 4u);
}

TEST(GgufSplitTest, MissingShardIsReportedByName) {
  const std::string dir = testing::ScratchDir();
  const std::vector<std::string> paths = WriteSet(dir + "/model", Names("t", 7), 3);
  fs::remove(paths[1]);
  for (const std::string& p : {paths[0], paths[2]}) {
    auto m = GgufModel::Open(p);
    ASSERT_FALSE(m.ok());
    EXPECT_TRUE(absl::IsNotFound(m.status())) << m.status();
    EXPECT_THAT(std::string(m.status().message()),
                ::testing::AllOf(HasSubstr("shard 2 of 3 is missing"), HasSubstr(paths[1])));
  }
}

TEST(GgufSplitTest, MismatchedShardsAreRejected) {
  const std::string dir = testing::ScratchDir();
  const std::vector<std::string> names = Names("t", 7);
  const std::vector<std::string> a = WriteSet(dir + "/a", names, 3);
  struct Case {
    std::string name;
    std::function<void()> damage;
    std::string open;
    std::vector<std::string> words;
  };
  const std::vector<Case> cases = {
      {"wrong split.no",
       [&] { fs::copy_file(a[2], a[1], fs::copy_options::overwrite_existing); },
       a[0],
       {a[1], "split.no = 2, expected 1"}},
      {"wrong split.count",
       [&] {
         const auto b = WriteSet(dir + "/b", Names("b", 4), 2);
         fs::copy_file(b[1], a[1], fs::copy_options::overwrite_existing);
       },
       a[0],
       {a[1], "split.count = 2, expected 3"}},
      {"wrong tensor total",
       [&] {
         const auto c = WriteSet(dir + "/c", Names("c", 8), 3);  // last shard holds 2
         fs::copy_file(c[2], a[2], fs::copy_options::overwrite_existing);
       },
       a[0],
       {"split.tensors.count = 7", "hold 8 tensors"}},
      {"duplicate tensor across shards",
       [&] {
         std::vector<std::string> d_names = Names("d", 6);
         d_names.push_back(names[0]);
         const auto d = WriteSet(dir + "/d", d_names, 3);
         fs::copy_file(d[2], a[2], fs::copy_options::overwrite_existing);
       },
       a[1],
       {a[2], "duplicate tensor name 't0.weight'", a[0]}},
      {"shard name count differs",
       [&] { fs::copy_file(a[0], dir + "/a-00001-of-00004.gguf"); },
       dir + "/a-00001-of-00004.gguf",
       {"name says 4 shards but split.count = 3"}},
      {"not a split name",
       [&] { fs::copy_file(a[0], dir + "/plain.gguf"); },
       dir + "/plain.gguf",
       {"split.count = 3", "does not follow <prefix>-NNNNN-of-MMMMM.gguf"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    WriteSet(dir + "/a", names, 3);  // restore
    ASSERT_TRUE(GgufModel::Open(a[0]).ok());
    c.damage();
    auto m = GgufModel::Open(c.open);
    ASSERT_FALSE(m.ok());
    for (const std::string& w : c.words) {
      EXPECT_THAT(std::string(m.status().message()), HasSubstr(w));
    }
  }
}

TEST(GgufSplitTest, SplitKeysWithWrongTypesAreRejected) {
  const std::string dir = testing::ScratchDir();
  GgufWriter w;
  w.SetUint32("split.count", 2);  // must be uint16
  const std::string path = dir + "/x-00001-of-00002.gguf";
  ASSERT_TRUE(w.Write(path).ok());
  auto m = GgufModel::Open(path);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()),
              ::testing::AllOf(HasSubstr(path), HasSubstr("'split.count' has type uint32"),
                               HasSubstr("expected uint16")));
}

TEST(GgufSplitTest, NonPositiveShardSizeIsRefused) {
  GgufWriter w;
  EXPECT_FALSE(w.WriteSplit(testing::ScratchDir() + "/z", 0).ok());
}

}  // namespace
}  // namespace tritmoe::gguf
