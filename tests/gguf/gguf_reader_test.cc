// Reads tests/data/gguf/golden_small.gguf (written by llama.cpp's gguf.cpp) and checks every key,
// type, value and tensor against its annotation (golden_small.gguf.annotated.txt).
#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/gguf/gguf.h"
#include "tests/gguf/gguf_test_util.h"

namespace tritmoe::gguf {
namespace {

using testing::GoldenPath;

template <typename T>
T Scalar(const Value& v) {
  EXPECT_EQ(v.raw.size(), sizeof(T));
  T out{};
  std::memcpy(&out, v.raw.data(), sizeof(T));
  return out;
}

class GoldenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = GgufModel::Open(GoldenPath());
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
  }
  const Value& Get(const std::string& key) {
    const KeyValue* kv = model_->FindKey(key);
    EXPECT_NE(kv, nullptr) << key;
    static const Value kEmpty;
    return kv ? kv->value : kEmpty;
  }
  std::unique_ptr<GgufModel> model_;
};

TEST_F(GoldenTest, Header) {
  const GgufFile& f = model_->shard(0);
  EXPECT_EQ(model_->n_shards(), 1);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset(), 1184u);
  EXPECT_EQ(f.file_size(), 2080u);
  EXPECT_EQ(f.kvs().size(), 19u);
  EXPECT_EQ(f.tensors().size(), 6u);
}

TEST_F(GoldenTest, KeysInOrderWithTypes) {
  const std::vector<std::pair<std::string, ValueType>> expected = {
      {"general.architecture", ValueType::kString},
      {"general.name", ValueType::kString},
      {"general.quantization_version", ValueType::kUint32},
      {"general.file_type", ValueType::kUint32},
      {"test.u8", ValueType::kUint8},
      {"test.i8", ValueType::kInt8},
      {"test.u16", ValueType::kUint16},
      {"test.i16", ValueType::kInt16},
      {"deepseek2.block_count", ValueType::kUint32},
      {"test.i32", ValueType::kInt32},
      {"deepseek2.expert_weights_scale", ValueType::kFloat32},
      {"deepseek2.expert_weights_norm", ValueType::kBool},
      {"test.u64", ValueType::kUint64},
      {"test.i64", ValueType::kInt64},
      {"test.f64", ValueType::kFloat64},
      {"tokenizer.ggml.token_type", ValueType::kArray},
      {"test.arr_f32", ValueType::kArray},
      {"tokenizer.ggml.tokens", ValueType::kArray},
      {"test.arr_bool", ValueType::kArray},
  };
  const auto& kvs = model_->kvs();
  ASSERT_EQ(kvs.size(), expected.size());
  for (size_t i = 0; i < kvs.size(); ++i) {
    EXPECT_EQ(kvs[i].key, expected[i].first) << i;
    EXPECT_EQ(kvs[i].value.type, expected[i].second) << kvs[i].key;
  }
}

TEST_F(GoldenTest, ScalarValues) {
  EXPECT_EQ(Get("general.architecture").strings, std::vector<std::string>{"deepseek2"});
  EXPECT_EQ(Get("general.name").strings, std::vector<std::string>{"golden-small"});
  EXPECT_EQ(Scalar<uint32_t>(Get("general.quantization_version")), 2u);
  EXPECT_EQ(Scalar<uint32_t>(Get("general.file_type")), 24u);
  EXPECT_EQ(Scalar<uint8_t>(Get("test.u8")), 200);
  EXPECT_EQ(Scalar<int8_t>(Get("test.i8")), -5);
  EXPECT_EQ(Scalar<uint16_t>(Get("test.u16")), 65000);
  EXPECT_EQ(Scalar<int16_t>(Get("test.i16")), -30000);
  EXPECT_EQ(Scalar<uint32_t>(Get("deepseek2.block_count")), 61u);
  EXPECT_EQ(Scalar<int32_t>(Get("test.i32")), -123456);
  EXPECT_EQ(Scalar<float>(Get("deepseek2.expert_weights_scale")), 2.5f);
  EXPECT_EQ(Scalar<uint8_t>(Get("deepseek2.expert_weights_norm")), 1);
  EXPECT_EQ(Scalar<uint64_t>(Get("test.u64")), 81985529216486895ull);
  EXPECT_EQ(Scalar<int64_t>(Get("test.i64")), -9000000000ll);
  EXPECT_EQ(Scalar<double>(Get("test.f64")), 3.141592653589793);
}

TEST_F(GoldenTest, ArrayValues) {
  const Value& tt = Get("tokenizer.ggml.token_type");
  EXPECT_EQ(tt.elem_type, ValueType::kInt32);
  EXPECT_EQ(tt.count, 5u);
  EXPECT_EQ(tt.raw.size(), 20u);

  const Value& f = Get("test.arr_f32");
  EXPECT_EQ(f.elem_type, ValueType::kFloat32);
  EXPECT_EQ(f.count, 3u);

  const Value& tok = Get("tokenizer.ggml.tokens");
  EXPECT_EQ(tok.elem_type, ValueType::kString);
  EXPECT_EQ(tok.count, 4u);
  EXPECT_EQ(tok.strings, (std::vector<std::string>{"<｜begin▁of▁sentence｜>",
                                                   "<｜end▁of▁sentence｜>", "Ġt", ""}));

  const Value& b = Get("test.arr_bool");
  EXPECT_EQ(b.elem_type, ValueType::kBool);
  EXPECT_EQ(b.count, 3u);
  EXPECT_EQ(b.raw, (std::vector<uint8_t>{1, 0, 1}));
}

TEST_F(GoldenTest, TypedGetters) {
  EXPECT_EQ(*model_->GetString("general.name"), "golden-small");
  EXPECT_EQ(*model_->GetUint("test.u8"), 200u);
  EXPECT_EQ(*model_->GetUint("test.u16"), 65000u);
  EXPECT_EQ(*model_->GetUint("deepseek2.block_count"), 61u);
  EXPECT_EQ(*model_->GetUint("test.u64"), 81985529216486895ull);
  EXPECT_EQ(*model_->GetInt("test.i8"), -5);
  EXPECT_EQ(*model_->GetInt("test.i16"), -30000);
  EXPECT_EQ(*model_->GetInt("test.i32"), -123456);
  EXPECT_EQ(*model_->GetInt("test.i64"), -9000000000ll);
  EXPECT_EQ(*model_->GetInt("test.u64"), 81985529216486895ll);
  EXPECT_EQ(*model_->GetFloat("deepseek2.expert_weights_scale"), 2.5);
  EXPECT_EQ(*model_->GetFloat("test.f64"), 3.141592653589793);
  EXPECT_EQ(*model_->GetFloat("test.i32"), -123456.0);
  EXPECT_TRUE(*model_->GetBool("deepseek2.expert_weights_norm"));
  EXPECT_EQ(*model_->GetIntArray("tokenizer.ggml.token_type"),
            (std::vector<int64_t>{3, 3, 1, -1, 0}));
  EXPECT_EQ(*model_->GetFloatArray("test.arr_f32"), (std::vector<float>{0.5f, -1.0f, 1e-6f}));
  EXPECT_EQ(model_->GetStringArray("tokenizer.ggml.tokens")->size(), 4u);
}

TEST_F(GoldenTest, GetterErrorsNameKeyAndType) {
  absl::StatusOr<uint64_t> neg = model_->GetUint("test.i8");
  ASSERT_FALSE(neg.ok());
  EXPECT_THAT(std::string(neg.status().message()), ::testing::HasSubstr("test.i8"));
  EXPECT_THAT(std::string(neg.status().message()), ::testing::HasSubstr("negative"));

  absl::StatusOr<std::string> wrong = model_->GetString("test.u8");
  ASSERT_FALSE(wrong.ok());
  EXPECT_THAT(std::string(wrong.status().message()),
              ::testing::AllOf(::testing::HasSubstr("'test.u8'"), ::testing::HasSubstr("uint8"),
                               ::testing::HasSubstr("expected string"),
                               ::testing::HasSubstr("golden_small.gguf")));

  EXPECT_FALSE(model_->GetBool("test.u8").ok());
  EXPECT_FALSE(model_->GetFloat("general.name").ok());
  EXPECT_FALSE(model_->GetFloatArray("tokenizer.ggml.token_type").ok());
  EXPECT_FALSE(model_->GetIntArray("test.arr_f32").ok());
  EXPECT_FALSE(model_->GetStringArray("general.name").ok());

  absl::StatusOr<uint64_t> missing = model_->GetUint("deepseek2.nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
  EXPECT_THAT(std::string(missing.status().message()), ::testing::HasSubstr("deepseek2.nope"));
}

struct ExpectedTensor {
  std::string name;
  GgmlType type;
  int n_dims;
  std::array<int64_t, 4> ne;
  uint64_t offset;
  uint64_t nbytes;
};

TEST_F(GoldenTest, Tensors) {
  const std::vector<ExpectedTensor> expected = {
      {"blk.3.ffn_gate_exps.weight", GgmlType::kIQ1_S, 3, {512, 2, 2, 1}, 0, 400},
      {"blk.0.attn_norm.weight", GgmlType::kF32, 1, {7, 1, 1, 1}, 416, 28},
      {"blk.3.ffn_up_exps.weight", GgmlType::kTQ1_0, 2, {256, 2, 1, 1}, 448, 108},
      {"output.weight", GgmlType::kBF16, 2, {5, 3, 1, 1}, 576, 30},
      {"token_embd.weight", GgmlType::kQ4_K, 1, {256, 1, 1, 1}, 608, 144},
      {"blk.0.attn_q_a.weight", GgmlType::kQ8_0, 2, {32, 3, 1, 1}, 768, 102},
  };
  const std::vector<uint8_t> bytes = testing::ReadBytes(GoldenPath());
  ASSERT_EQ(bytes.size(), 2080u);
  const auto& ts = model_->tensors();
  ASSERT_EQ(ts.size(), expected.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    const ExpectedTensor& e = expected[i];
    SCOPED_TRACE(e.name);
    EXPECT_EQ(ts[i].name, e.name);
    EXPECT_EQ(ts[i].type, e.type);
    EXPECT_EQ(ts[i].n_dims, e.n_dims);
    EXPECT_EQ(ts[i].ne, e.ne);
    EXPECT_EQ(ts[i].offset, e.offset);
    EXPECT_EQ(ts[i].nbytes, e.nbytes);
    EXPECT_EQ(ts[i].shard, 0);
    const TensorInfo* found = model_->FindTensor(e.name);
    ASSERT_EQ(found, &ts[i]);
    EXPECT_EQ(0, std::memcmp(model_->TensorData(*found), bytes.data() + 1184 + e.offset, e.nbytes));
  }
  EXPECT_EQ(model_->FindTensor("blk.0.attn_k_b.weight"), nullptr);
  EXPECT_EQ(ts[0].row_bytes(), 100u);  // 2 IQ1_S blocks of 50 bytes
  EXPECT_EQ(ts[0].n_elements(), 2048);
  EXPECT_EQ(ts[3].row_bytes(), 10u);
}

TEST(GgufFileTest, OpenFromBufferMatchesOpen) {
  const std::vector<uint8_t> bytes = testing::ReadBytes(GoldenPath());
  auto f = GgufFile::OpenFromBuffer(bytes.data(), bytes.size(), "mem.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->path(), "mem.gguf");
  EXPECT_EQ((*f)->tensors().size(), 6u);
  EXPECT_EQ((*f)->data_offset(), 1184u);
  const TensorInfo* t = (*f)->FindTensor("output.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(0, std::memcmp((*f)->TensorData(*t), bytes.data() + 1184 + 576, 30));
}

TEST(GgufFileTest, MissingFileIsNotFound) {
  auto f = GgufFile::Open("/nonexistent/dir/model.gguf");
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(absl::IsNotFound(f.status()));
  EXPECT_THAT(std::string(f.status().message()),
              ::testing::HasSubstr("/nonexistent/dir/model.gguf"));
}

TEST(GgufFileTest, DirectoryIsRejected) {
  auto f = GgufFile::Open(TRITMOE_TEST_DATA);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), ::testing::HasSubstr("not a regular file"));
}

TEST(SplitPathTest, FormatAndParse) {
  EXPECT_EQ(SplitPath("/m/DeepSeek-R1-UD-IQ1_S", 1, 3),
            "/m/DeepSeek-R1-UD-IQ1_S-00001-of-00003.gguf");
  SplitName n;
  ASSERT_TRUE(ParseSplitPath("/m/DeepSeek-R1-UD-IQ1_S-00002-of-00003.gguf", &n));
  EXPECT_EQ(n.prefix, "/m/DeepSeek-R1-UD-IQ1_S");
  EXPECT_EQ(n.shard_no, 2);
  EXPECT_EQ(n.shard_count, 3);
  EXPECT_FALSE(ParseSplitPath("model.gguf", &n));
  EXPECT_FALSE(ParseSplitPath("m-00004-of-00003.gguf", &n));
  EXPECT_FALSE(ParseSplitPath("m-00000-of-00003.gguf", &n));
  EXPECT_FALSE(ParseSplitPath("m-0001-of-00003.gguf", &n));
  EXPECT_FALSE(ParseSplitPath("m-00001-of-00003.bin", &n));
  EXPECT_FALSE(ParseSplitPath("m-000a1-of-00003.gguf", &n));
}

}  // namespace
}  // namespace tritmoe::gguf
