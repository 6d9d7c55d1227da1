// The writer reproduces golden_small.gguf (written by llama.cpp) byte for byte, and what it
// writes reads back; invalid tensors and metadata are refused.
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
using Bytes = std::vector<uint8_t>;

constexpr size_t kDataStart = 1184;

GgufWriter::FillFn CopyFrom(const Bytes& src, size_t offset, size_t n) {
  return [&src, offset, n](uint8_t* dst) {
    std::memcpy(dst, src.data() + offset, n);
    return absl::OkStatus();
  };
}

// The golden tensors, shapes as created in llama.cpp (token_embd as [256, 1]).
void AddGoldenTensors(GgufWriter& w, const Bytes& golden) {
  struct T {
    const char* name;
    GgmlType type;
    std::vector<int64_t> ne;
    size_t offset, nbytes;
  };
  const std::vector<T> ts = {
      {"blk.3.ffn_gate_exps.weight", GgmlType::kIQ1_S, {512, 2, 2}, 0, 400},
      {"blk.0.attn_norm.weight", GgmlType::kF32, {7}, 416, 28},
      {"blk.3.ffn_up_exps.weight", GgmlType::kTQ1_0, {256, 2}, 448, 108},
      {"output.weight", GgmlType::kBF16, {5, 3}, 576, 30},
      {"token_embd.weight", GgmlType::kQ4_K, {256, 1}, 608, 144},
      {"blk.0.attn_q_a.weight", GgmlType::kQ8_0, {32, 3}, 768, 102},
  };
  for (const T& t : ts) {
    ASSERT_TRUE(
        w.AddTensor(t.name, t.type, t.ne, CopyFrom(golden, kDataStart + t.offset, t.nbytes)).ok());
  }
}

TEST(GgufWriterTest, ReproducesGoldenFileWithTypedSetters) {
  const Bytes golden = testing::ReadBytes(testing::GoldenPath());
  GgufWriter w;
  w.SetString("general.architecture", "deepseek2");
  w.SetString("general.name", "golden-small");
  w.SetUint32("general.quantization_version", 2);
  w.SetUint32("general.file_type", 24);
  w.SetUint8("test.u8", 200);
  w.SetInt8("test.i8", -5);
  w.SetUint16("test.u16", 65000);
  w.SetInt16("test.i16", -30000);
  w.SetUint32("deepseek2.block_count", 61);
  w.SetInt32("test.i32", -123456);
  w.SetFloat32("deepseek2.expert_weights_scale", 2.5f);
  w.SetBool("deepseek2.expert_weights_norm", true);
  w.SetUint64("test.u64", 81985529216486895ull);
  w.SetInt64("test.i64", -9000000000ll);
  w.SetFloat64("test.f64", 3.141592653589793);
  w.SetInt32Array("tokenizer.ggml.token_type", {3, 3, 1, -1, 0});
  w.SetFloat32Array("test.arr_f32", {0.5f, -1.0f, 1e-6f});
  w.SetStringArray("tokenizer.ggml.tokens",
                   {"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "Ġt", ""});
  Value bools;
  bools.type = ValueType::kArray;
  bools.elem_type = ValueType::kBool;
  bools.count = 3;
  bools.raw = {1, 0, 1};
  w.SetValue("test.arr_bool", bools);
  AddGoldenTensors(w, golden);

  const std::string path = testing::ScratchDir() + "/out.gguf";
  ASSERT_TRUE(w.Write(path).ok());
  const Bytes out = testing::ReadBytes(path);
  ASSERT_EQ(out.size(), golden.size());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], golden[i]) << "first diff at " << i;
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(GgufWriterTest, ReproducesGoldenFileFromReadValues) {
  const Bytes golden = testing::ReadBytes(testing::GoldenPath());
  auto in = GgufFile::Open(testing::GoldenPath());
  ASSERT_TRUE(in.ok());
  GgufWriter w;
  for (const KeyValue& kv : (*in)->kvs()) w.SetValue(kv.key, kv.value);
  for (const TensorInfo& t : (*in)->tensors()) {
    // All four dims: the writer drops the trailing 1s itself.
    std::vector<int64_t> ne(t.ne.begin(), t.ne.end());
    ASSERT_TRUE(
        w.AddTensor(t.name, t.type, ne, CopyFrom(golden, (*in)->data_offset() + t.offset, t.nbytes))
            .ok());
  }
  const std::string path = testing::ScratchDir() + "/copy.gguf";
  ASSERT_TRUE(w.Write(path).ok());
  EXPECT_EQ(testing::ReadBytes(path), golden);
}

TEST(GgufWriterTest, SettingAKeyAgainReplacesItInPlace) {
  GgufWriter w;
  w.SetUint32("a", 1);
  w.SetString("b", "x");
  w.SetUint32("a", 7);
  w.SetFloat32("a", 1.5f);
  const std::string path = testing::ScratchDir() + "/kv.gguf";
  ASSERT_TRUE(w.Write(path).ok());
  auto m = GgufModel::Open(path);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ((*m)->kvs().size(), 2u);
  EXPECT_EQ((*m)->kvs()[0].key, "a");
  EXPECT_EQ(*(*m)->GetFloat("a"), 1.5);
  EXPECT_EQ(*(*m)->GetString("b"), "x");
  EXPECT_TRUE((*m)->tensors().empty());
  // No tensors: no padding after the metadata. 24 header + "a" (8+1+4+4) + "b" (8+1+4+8+1).
  EXPECT_EQ((*m)->shard(0).file_size(), 24u + 17 + 22);
}

TEST(GgufWriterTest, TrailingUnitDimsAreDropped) {
  GgufWriter w;
  auto zero = [](uint8_t*) { return absl::OkStatus(); };
  ASSERT_TRUE(w.AddTensor("a", GgmlType::kF32, {4, 1, 1, 1}, zero).ok());
  ASSERT_TRUE(w.AddTensor("b", GgmlType::kF32, {4, 1, 2}, zero).ok());
  ASSERT_TRUE(w.AddTensor("c", GgmlType::kF16, {1, 1}, zero).ok());
  const std::string path = testing::ScratchDir() + "/dims.gguf";
  ASSERT_TRUE(w.Write(path).ok());
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->FindTensor("a")->n_dims, 1);
  EXPECT_EQ((*f)->FindTensor("b")->n_dims, 3);
  EXPECT_EQ((*f)->FindTensor("b")->ne, (std::array<int64_t, 4>{4, 1, 2, 1}));
  EXPECT_EQ((*f)->FindTensor("c")->n_dims, 1);
  EXPECT_EQ((*f)->FindTensor("c")->nbytes, 2u);
}

TEST(GgufWriterTest, CustomAlignment) {
  GgufWriter w;
  w.SetString("general.architecture", "deepseek2");
  w.SetUint32("general.alignment", 64);
  const Bytes a(100, 0xab), b(40, 0xcd);
  ASSERT_TRUE(w.AddTensor("a", GgmlType::kF32, {25}, CopyFrom(a, 0, 100)).ok());
  ASSERT_TRUE(w.AddTensor("b", GgmlType::kQ8_0, {32}, CopyFrom(b, 0, 34)).ok());
  const std::string path = testing::ScratchDir() + "/align.gguf";
  ASSERT_TRUE(w.Write(path).ok());
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->alignment(), 64u);
  EXPECT_EQ((*f)->data_offset() % 64, 0u);
  EXPECT_EQ((*f)->FindTensor("b")->offset, 128u);
  EXPECT_EQ((*f)->file_size(), (*f)->data_offset() + 128 + 64);
  const uint8_t* pa = (*f)->TensorData(*(*f)->FindTensor("a"));
  EXPECT_TRUE(std::all_of(pa, pa + 100, [](uint8_t x) { return x == 0xab; }));
  EXPECT_EQ(pa[100], 0);  // zero padding
}

TEST(GgufWriterTest, BadAlignmentIsRefused) {
  const std::string dir = testing::ScratchDir();
  GgufWriter w;
  w.SetUint32("general.alignment", 48);
  absl::Status s = w.Write(dir + "/a.gguf");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("power of two"));
  GgufWriter w2;
  w2.SetInt32("general.alignment", 64);
  s = w2.Write(dir + "/b.gguf");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("expected uint32"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/a.gguf"));
}

TEST(GgufWriterTest, InvalidTensorsAreRefused) {
  GgufWriter w;
  auto zero = [](uint8_t*) { return absl::OkStatus(); };
  ASSERT_TRUE(w.AddTensor("t", GgmlType::kIQ1_S, {512, 2}, zero).ok());
  struct Bad {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    std::string words;
  };
  for (const Bad& b : std::vector<Bad>{
           {"t", GgmlType::kF32, {4}, "added twice"},
           {"x", GgmlType::kIQ1_S, {500}, "not a multiple of the IQ1_S block size 256"},
           {"x", GgmlType::kQ8_0, {}, "0 dimensions"},
           {"x", GgmlType::kQ8_0, {32, 1, 1, 1, 1}, "5 dimensions"},
           {"x", GgmlType::kF32, {4, -1}, "negative dimension"},
           {"x", GgmlType::kF32, {int64_t{1} << 62, 4}, "overflows"},
           {std::string(64, 'n'), GgmlType::kF32, {4}, "1..63 bytes"},
           {"", GgmlType::kF32, {4}, "1..63 bytes"},
       }) {
    absl::Status s = w.AddTensor(b.name, b.type, b.ne, zero);
    ASSERT_FALSE(s.ok()) << b.words;
    EXPECT_THAT(std::string(s.message()), HasSubstr(b.words));
  }
  EXPECT_TRUE(w.AddTensor(std::string(63, 'n'), GgmlType::kF32, {4}, zero).ok());
}

TEST(GgufWriterTest, FillErrorLeavesNoFile) {
  GgufWriter w;
  ASSERT_TRUE(
      w.AddTensor("ok", GgmlType::kF32, {4}, [](uint8_t*) { return absl::OkStatus(); }).ok());
  ASSERT_TRUE(w.AddTensor("broken", GgmlType::kF32, {4}, [](uint8_t*) {
                 return absl::DataLossError("source went away");
               }).ok());
  const std::string path = testing::ScratchDir() + "/fail.gguf";
  absl::Status s = w.Write(path);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::IsDataLoss(s));
  EXPECT_THAT(std::string(s.message()),
              ::testing::AllOf(HasSubstr("'broken'"), HasSubstr("source went away")));
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

}  // namespace
}  // namespace tritmoe::gguf
