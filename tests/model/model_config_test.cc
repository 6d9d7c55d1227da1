// ModelConfig from GGUF metadata (DeepSeek-R1's real keys in both layouts, loader defaults, clear
// errors) and Weights' shape checks.
#include "runtime/model/model_config.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/gguf/gguf.h"
#include "runtime/gguf/gguf_writer.h"
#include "runtime/model/weights.h"
#include "tests/model/model_test_util.h"

namespace tritmoe {
namespace {

using gguf::GgufWriter;

// DeepSeek-R1's metadata (formats.md §4.1) with placeholder tensors: FromGguf only looks at the
// presence of the attention tensors and at the vocabulary rows.
struct R1File {
  bool legacy = false;
  int64_t vocab = 1000;
  std::function<void(GgufWriter&)> edit;  // applied after the standard keys

  std::unique_ptr<gguf::GgufModel> Write(const std::string& dir, const std::string& name) const {
    GgufWriter w;
    const std::string a = "deepseek2.";
    w.SetString("general.architecture", "deepseek2");
    w.SetUint32(a + "block_count", 61);
    w.SetUint32(a + "context_length", 163840);
    w.SetUint32(a + "embedding_length", 7168);
    w.SetUint32(a + "feed_forward_length", 18432);
    w.SetUint32(a + "attention.head_count", 128);
    w.SetUint32(a + "attention.head_count_kv", legacy ? 128 : 1);
    w.SetFloat32(a + "rope.freq_base", 10000.0f);
    w.SetFloat32(a + "attention.layer_norm_rms_epsilon", 1e-6f);
    w.SetUint32(a + "expert_used_count", 8);
    if (!legacy) {
      w.SetUint32(a + "expert_group_count", 8);
      w.SetUint32(a + "expert_group_used_count", 4);
    }
    w.SetUint32(a + "leading_dense_block_count", 3);
    w.SetUint32(a + "attention.q_lora_rank", 1536);
    w.SetUint32(a + "attention.kv_lora_rank", 512);
    w.SetUint32(a + "attention.key_length", legacy ? 192 : 576);
    w.SetUint32(a + "attention.value_length", legacy ? 128 : 512);
    if (!legacy) {
      w.SetUint32(a + "attention.key_length_mla", 192);
      w.SetUint32(a + "attention.value_length_mla", 128);
    }
    w.SetUint32(a + "expert_feed_forward_length", 2048);
    w.SetUint32(a + "expert_count", 256);
    w.SetUint32(a + "expert_shared_count", 1);
    w.SetFloat32(a + "expert_weights_scale", 2.5f);
    w.SetBool(a + "expert_weights_norm", true);
    w.SetUint32(a + "expert_gating_func", 2);
    w.SetUint32(a + "rope.dimension_count", 64);
    w.SetString(a + "rope.scaling.type", "yarn");
    w.SetFloat32(a + "rope.scaling.factor", 40.0f);
    w.SetUint32(a + "rope.scaling.original_context_length", 4096);
    w.SetFloat32(a + "rope.scaling.yarn_log_multiplier", 0.1f);
    std::vector<std::string> tokens(vocab, "x");
    w.SetStringArray("tokenizer.ggml.tokens", tokens);
    if (edit) edit(w);
    auto zeros = [](uint8_t* dst, uint64_t n) {
      std::memset(dst, 0, n);
      return absl::OkStatus();
    };
    auto add = [&](const std::string& n, std::vector<int64_t> ne) {
      uint64_t bytes = 4;
      for (int64_t d : ne) bytes *= d;
      EXPECT_TRUE(
          w.AddTensor(n, GgmlType::kF32, ne, [=](uint8_t* d) { return zeros(d, bytes); }).ok());
    };
    add("token_embd.weight", {4, vocab});
    add("blk.0.attn_q_a.weight", {4, 2});
    if (legacy) {
      add("blk.0.attn_kv_b.weight", {4, 2});
    } else {
      add("blk.0.attn_k_b.weight", {4, 2});
      add("blk.0.attn_v_b.weight", {4, 2});
    }
    add("output.weight", {4, vocab});
    const std::string path = dir + "/" + name + ".gguf";
    EXPECT_TRUE(w.Write(path).ok());
    auto m = gguf::GgufModel::Open(path);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? std::move(*m) : nullptr;
  }
};

class ModelConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::ScratchDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  absl::StatusOr<ModelConfig> Load(const R1File& f) {
    model_ = f.Write(dir_, "m");
    if (model_ == nullptr) return absl::InternalError("write failed");
    return ModelConfig::FromGguf(*model_);
  }
  std::string dir_;
  std::unique_ptr<gguf::GgufModel> model_;
};

TEST_F(ModelConfigTest, DeepSeekR1SplitLayout) {
  absl::StatusOr<ModelConfig> c = Load(R1File{});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->n_layer, 61);
  EXPECT_EQ(c->n_dense_lead, 3);
  EXPECT_EQ(c->kv_layout, KvProjLayout::kSplit);
  EXPECT_EQ(c->qk_nope, 128);
  EXPECT_EQ(c->qk_rope, 64);
  EXPECT_EQ(c->v_head, 128);
  EXPECT_EQ(c->q_lora_rank, 1536);
  EXPECT_EQ(c->latent_row(), 576);
  EXPECT_TRUE(c->group_limited);
  EXPECT_EQ(c->n_group, 8);
  EXPECT_EQ(c->n_group_used, 4);
  EXPECT_EQ(c->gating, GatingFunc::kSigmoid);
  EXPECT_TRUE(c->weights_norm);
  EXPECT_FLOAT_EQ(c->weights_scale, 2.5f);
  EXPECT_EQ(c->n_vocab, 1000);
  // §4.5: low = 10, high = 23, mscale = 1 + 0.1 ln 40, kq_scale = mscale^2 / sqrt(192).
  EXPECT_EQ(c->rope.corr_low, 10.0);
  EXPECT_EQ(c->rope.corr_high, 23.0);
  EXPECT_NEAR(c->rope.freq_scale, 0.025, 1e-9);
  EXPECT_NEAR(c->rope.mscale, 1.3688879, 1e-6);
  EXPECT_NEAR(c->kq_scale, 0.13523378, 1e-7);
}

TEST_F(ModelConfigTest, YarnAnglesFollowTheRamp) {
  absl::StatusOr<ModelConfig> c = Load(R1File{});
  ASSERT_TRUE(c.ok()) << c.status();
  const int64_t pos = 1234;
  auto extrap = [&](int i) { return pos * std::pow(10000.0, -2.0 * i / 64.0); };
  EXPECT_NEAR(c->rope.Theta(pos, 3), extrap(3), 1e-9);  // i <= 10: original
  EXPECT_NEAR(c->rope.Theta(pos, 10), extrap(10), 1e-9);
  EXPECT_NEAR(c->rope.Theta(pos, 23), extrap(23) / 40.0, 1e-9);  // i >= 23: interpolated
  EXPECT_NEAR(c->rope.Theta(pos, 31), extrap(31) / 40.0, 1e-9);
  const double r = 1.0 - (16 - 10) / 13.0;  // in between: mixed
  EXPECT_NEAR(c->rope.Theta(pos, 16), extrap(16) / 40.0 * (1 - r) + extrap(16) * r, 1e-9);
}

TEST_F(ModelConfigTest, LegacyLayoutWithoutGroups) {
  R1File f;
  f.legacy = true;
  absl::StatusOr<ModelConfig> c = Load(f);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kv_layout, KvProjLayout::kLegacy);
  EXPECT_EQ(c->qk_nope, 128);
  EXPECT_EQ(c->v_head, 128);
  EXPECT_FALSE(c->group_limited);  // Jan-2025 files: plain top-8, as llama.cpp
  EXPECT_NEAR(c->kq_scale, 0.13523378, 1e-7);
}

TEST_F(ModelConfigTest, LoaderDefaults) {
  R1File f;
  f.edit = [](GgufWriter& w) {
    // Values llama.cpp's loader treats as unset.
    w.SetUint32("deepseek2.expert_gating_func", 0);        // unset: softmax
    w.SetFloat32("deepseek2.expert_weights_scale", 0.0f);  // unset: no scaling
    w.SetString("deepseek2.rope.scaling.type", "none");
  };
  absl::StatusOr<ModelConfig> c = Load(f);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->gating, GatingFunc::kSoftmax);
  EXPECT_FLOAT_EQ(c->weights_scale, 1.0f);
  EXPECT_EQ(c->rope.scaling, RopeScalingType::kNone);
  EXPECT_NEAR(c->kq_scale, 1.0 / std::sqrt(192.0), 1e-8);
  EXPECT_NEAR(c->rope.Theta(7, 31), 7 * std::pow(10000.0, -62.0 / 64.0), 1e-12);
}

TEST_F(ModelConfigTest, MtpLayersAreNotRun) {
  R1File f;
  f.edit = [](GgufWriter& w) {
    w.SetUint32("deepseek2.block_count", 62);
    w.SetUint32("deepseek2.nextn_predict_layers", 1);
  };
  absl::StatusOr<ModelConfig> c = Load(f);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->n_layer, 61);
}

void ExpectError(const absl::StatusOr<ModelConfig>& c, const std::string& needle) {
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find(needle), std::string::npos) << c.status().message();
}

TEST_F(ModelConfigTest, WrongArchitecture) {
  R1File f;
  f.edit = [](GgufWriter& w) { w.SetString("general.architecture", "llama"); };
  ExpectError(Load(f), "expected 'deepseek2'");
}

TEST_F(ModelConfigTest, WrongKeyType) {
  R1File f;
  f.edit = [](GgufWriter& w) { w.SetString("deepseek2.attention.kv_lora_rank", "512"); };
  ExpectError(Load(f), "kv_lora_rank");
}

TEST_F(ModelConfigTest, KeysAndTensorsDisagreeOnLayout) {
  R1File f;
  f.legacy = true;
  f.edit = [](GgufWriter& w) {
    w.SetUint32("deepseek2.attention.key_length_mla", 192);
    w.SetUint32("deepseek2.attention.value_length_mla", 128);
  };
  ExpectError(Load(f), "attn_k_b");
}

TEST_F(ModelConfigTest, TokenizerDisagreesWithEmbedding) {
  R1File f;
  f.edit = [](GgufWriter& w) {
    w.SetStringArray("tokenizer.ggml.tokens", std::vector<std::string>(999, "x"));
  };
  ExpectError(Load(f), "tokenizer.ggml.tokens has 999 entries");
}

TEST_F(ModelConfigTest, ImpossibleGroups) {
  R1File f;
  f.edit = [](GgufWriter& w) { w.SetUint32("deepseek2.expert_group_count", 7); };
  ExpectError(Load(f), "groups");
}

TEST_F(ModelConfigTest, UnsupportedGating) {
  R1File f;
  f.edit = [](GgufWriter& w) { w.SetUint32("deepseek2.expert_gating_func", 3); };
  ExpectError(Load(f), "expert_gating_func");
}

// A real tiny model with one key changed: the tensors no longer match, and Bind says which.
TEST(WeightsTest, ShapeMismatchNamesTheTensor) {
  const std::string dir = testing::ScratchDir("weights_shape");
  const std::string src = testing::MakeTinyModel(dir, "tiny", "--layout mla");
  auto in = gguf::GgufModel::Open(src);
  ASSERT_TRUE(in.ok()) << in.status();
  auto ok_config = ModelConfig::FromGguf(**in);
  ASSERT_TRUE(ok_config.ok()) << ok_config.status();
  auto ok_weights = Weights::Bind(**in, *ok_config);
  ASSERT_TRUE(ok_weights.ok()) << ok_weights.status();
  EXPECT_EQ(ok_weights->layer(1).gate_exps.count, ok_config->n_expert);

  GgufWriter w;
  for (const gguf::KeyValue& kv : (*in)->kvs()) w.SetValue(kv.key, kv.value);
  w.SetUint32("deepseek2.expert_feed_forward_length", 64);  // the file's experts have 32
  for (const gguf::TensorInfo& t : (*in)->tensors()) {
    const uint8_t* data = (*in)->TensorData(t);
    const uint64_t n = t.nbytes;
    ASSERT_TRUE(w.AddTensor(t.name, t.type,
                            std::vector<int64_t>(t.ne.begin(), t.ne.begin() + t.n_dims),
                            [=](uint8_t* dst) {
                              std::memcpy(dst, data, n);
                              return absl::OkStatus();
                            })
                    .ok());
  }
  const std::string bad = dir + "/bad.gguf";
  ASSERT_TRUE(w.Write(bad).ok());
  auto m = gguf::GgufModel::Open(bad);
  ASSERT_TRUE(m.ok());
  auto c = ModelConfig::FromGguf(**m);
  ASSERT_TRUE(c.ok()) << c.status();
  auto weights = Weights::Bind(**m, *c);
  ASSERT_FALSE(weights.ok());
  EXPECT_NE(weights.status().message().find("blk.1.ffn_gate_exps.weight has ne [64, 32, 8], "
                                            "expected [64, 64, 8]"),
            std::string::npos)
      << weights.status().message();
}

TEST(WeightsTest, ExpertSlicesAreContiguousByteRanges) {
  const std::string dir = testing::ScratchDir("weights_slices");
  const std::string src = testing::MakeTinyModel(dir, "tiny", "--layout legacy");
  auto m = gguf::GgufModel::Open(src);
  ASSERT_TRUE(m.ok());
  auto c = ModelConfig::FromGguf(**m);
  ASSERT_TRUE(c.ok());
  std::vector<bool> local(c->n_expert, false);
  local[3] = true;
  auto w = Weights::Bind(**m, *c, local);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_TRUE(w->IsLocalExpert(3));
  EXPECT_FALSE(w->IsLocalExpert(2));
  const gguf::TensorInfo* t = (*m)->FindTensor("blk.2.ffn_down_exps.weight");
  const MatrixStack& s = w->layer(2).down_exps;
  EXPECT_EQ(s.matrix_bytes() * c->n_expert, static_cast<int64_t>(t->nbytes));
  EXPECT_EQ(s.At(3).data, (*m)->TensorData(*t) + 3 * s.matrix_bytes());
  EXPECT_EQ(s.At(3).rows, c->n_embd);
  EXPECT_EQ(s.At(3).cols, c->n_ff_exp);
  // Legacy kv_b: head h's k block starts at row h * (nope + v), its v block nope rows later.
  const gguf::TensorInfo* kvb = (*m)->FindTensor("blk.0.attn_kv_b.weight");
  const int64_t row = kvb->row_bytes();
  const LayerWeights& l0 = w->layer(0);
  EXPECT_EQ(l0.attn_k.At(2).data, (*m)->TensorData(*kvb) + 2 * (c->qk_nope + c->v_head) * row);
  EXPECT_EQ(l0.attn_v.At(2).data,
            (*m)->TensorData(*kvb) + (2 * (c->qk_nope + c->v_head) + c->qk_nope) * row);
  auto wrong = Weights::Bind(**m, *c, std::vector<bool>(3, true));
  EXPECT_FALSE(wrong.ok());
}

}  // namespace
}  // namespace tritmoe
