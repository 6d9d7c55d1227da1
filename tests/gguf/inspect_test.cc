// The inspect summary on golden_small.gguf and on small deepseek2-shaped files written here in
// both attention layouts, checked against hand-computed sizes.
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/gguf/gguf.h"
#include "runtime/gguf/gguf_summary.h"
#include "runtime/gguf/gguf_writer.h"
#include "tests/gguf/gguf_test_util.h"

namespace tritmoe::gguf {
namespace {

using ::testing::HasSubstr;

TEST(InspectTest, GoldenSmall) {
  auto m = GgufModel::Open(testing::GoldenPath());
  ASSERT_TRUE(m.ok()) << m.status();
  const GgufSummary s = Summarize(**m);
  EXPECT_EQ(s.files, std::vector<std::string>{testing::GoldenPath()});
  EXPECT_EQ(s.file_sizes, std::vector<uint64_t>{2080});
  EXPECT_EQ(s.version, 3u);
  EXPECT_EQ(s.alignment, 32u);
  EXPECT_EQ(s.architecture, "deepseek2");
  EXPECT_EQ(s.name, "golden-small");
  EXPECT_EQ(s.file_type, 24u);
  EXPECT_EQ(FileTypeName(24), "MOSTLY_IQ1_S");
  EXPECT_EQ(s.tokenizer_model, "");
  EXPECT_EQ(s.vocab_size, 4);
  std::vector<std::string> hp;
  for (const KeyValue& kv : s.hparams) hp.push_back(kv.key);
  EXPECT_EQ(hp, (std::vector<std::string>{"deepseek2.block_count", "deepseek2.expert_weights_scale",
                                          "deepseek2.expert_weights_norm"}));
  EXPECT_EQ(FormatValue(s.hparams[1].value), "2.5");
  EXPECT_EQ(FormatValue(s.hparams[2].value), "true");
  EXPECT_EQ(s.attention, AttentionLayout::kNone);
  ASSERT_EQ(s.tensors.size(), 6u);
  // Parameters 2048 + 7 + 512 + 15 + 256 + 96; bytes 400 + 28 + 108 + 30 + 144 + 102.
  EXPECT_EQ(s.total_elements, 2934);
  EXPECT_EQ(s.total_bytes, 812u);
  // Routed experts: blk.3.ffn_gate_exps (IQ1_S, 400 B) and blk.3.ffn_up_exps (TQ1_0, 108 B).
  EXPECT_EQ(s.routed_expert_bytes, 508u);
  EXPECT_EQ(s.routed_expert_elements, 2560);
  EXPECT_EQ(s.other_bytes, 304u);
  EXPECT_DOUBLE_EQ(s.routed_expert_share, 508.0 / 812.0);
  EXPECT_TRUE(s.tensors[0].routed_expert);
  EXPECT_FALSE(s.tensors[1].routed_expert);
  // Per type, largest first: IQ1_S 400, Q4_K 144, TQ1_0 108, Q8_0 102, BF16 30, F32 28.
  ASSERT_EQ(s.by_type.size(), 6u);
  const std::vector<std::pair<GgmlType, uint64_t>> order = {
      {GgmlType::kIQ1_S, 400}, {GgmlType::kQ4_K, 144}, {GgmlType::kTQ1_0, 108},
      {GgmlType::kQ8_0, 102},  {GgmlType::kBF16, 30},  {GgmlType::kF32, 28}};
  for (size_t i = 0; i < order.size(); ++i) {
    EXPECT_EQ(s.by_type[i].type, order[i].first) << i;
    EXPECT_EQ(s.by_type[i].bytes, order[i].second) << i;
    EXPECT_EQ(s.by_type[i].tensors, 1);
  }
  EXPECT_DOUBLE_EQ(s.by_type[0].bits_per_weight, 1.5625);
  EXPECT_DOUBLE_EQ(s.by_type[1].bits_per_weight, 4.5);
  EXPECT_DOUBLE_EQ(s.by_type[2].bits_per_weight, 1.6875);
  EXPECT_DOUBLE_EQ(s.by_type[3].bits_per_weight, 8.5);
  EXPECT_DOUBLE_EQ(s.by_type[4].bits_per_weight, 16.0);
  EXPECT_DOUBLE_EQ(s.by_type[5].bits_per_weight, 32.0);

  const std::string text = SummaryText(s);
  EXPECT_THAT(text, HasSubstr("golden-small"));
  EXPECT_THAT(text, HasSubstr("24 (MOSTLY_IQ1_S)"));
  EXPECT_THAT(text, HasSubstr("blk.3.ffn_gate_exps.weight"));
  EXPECT_THAT(text, HasSubstr("[512, 2, 2]"));
  EXPECT_THAT(text, HasSubstr("62.6%"));  // 508 / 812
  EXPECT_THAT(text, HasSubstr("vocabulary 4 tokens"));
  EXPECT_THAT(SummaryText(s, false), ::testing::Not(HasSubstr("[512, 2, 2]")));

  const nlohmann::json j = nlohmann::json::parse(SummaryJson(s));
  EXPECT_EQ(j["totals"]["bytes"], 812);
  EXPECT_EQ(j["totals"]["routed_expert_bytes"], 508);
  EXPECT_EQ(j["hparams"]["deepseek2.block_count"], 61);
  EXPECT_EQ(j["hparams"]["deepseek2.expert_weights_scale"], 2.5);
  EXPECT_EQ(j["hparams"]["deepseek2.expert_weights_norm"], true);
  EXPECT_EQ(j["tensors"][4]["shape"], nlohmann::json::array({256}));
  EXPECT_EQ(j["tensors"][0]["type"], "IQ1_S");
  EXPECT_EQ(j["by_type"][0]["bits_per_weight"], 1.5625);
  EXPECT_EQ(j["attention_layout"], "none");
}

// A deepseek2-shaped model: n_embd 256, vocab 320, 3 layers (layer 0 dense), 2 heads,
// q_lora 256, kv_lora 256, rope 64, nope 128, v 128, ff 512, 4 experts of ff 256.
// bytes are hand-computed: Q8_0 rows of 256 = 8 blocks * 34 = 272 B, of 128 = 136 B,
// of 512 = 544 B; IQ1_S rows of 256 = 50 B; F32 = 4 B per element.
struct Spec {
  std::string name;
  GgmlType type;
  std::vector<int64_t> ne;
  uint64_t bytes;
  int64_t elements;
};

std::vector<Spec> DeepseekTensors(bool mla) {
  std::vector<Spec> t = {
      {"token_embd.weight", GgmlType::kQ8_0, {256, 320}, 87040, 81920},
      {"output_norm.weight", GgmlType::kF32, {256}, 1024, 256},
      {"output.weight", GgmlType::kQ8_0, {256, 320}, 87040, 81920},
  };
  for (int l = 0; l < 3; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    t.push_back({b + "attn_norm.weight", GgmlType::kF32, {256}, 1024, 256});
    t.push_back({b + "attn_q_a.weight", GgmlType::kQ8_0, {256, 256}, 69632, 65536});
    t.push_back({b + "attn_q_a_norm.weight", GgmlType::kF32, {256}, 1024, 256});
    t.push_back({b + "attn_q_b.weight", GgmlType::kQ8_0, {256, 384}, 104448, 98304});
    t.push_back({b + "attn_kv_a_mqa.weight", GgmlType::kQ8_0, {256, 320}, 87040, 81920});
    t.push_back({b + "attn_kv_a_norm.weight", GgmlType::kF32, {256}, 1024, 256});
    if (mla) {
      t.push_back({b + "attn_k_b.weight", GgmlType::kQ8_0, {128, 256, 2}, 69632, 65536});
      t.push_back({b + "attn_v_b.weight", GgmlType::kQ8_0, {256, 128, 2}, 69632, 65536});
    } else {
      t.push_back({b + "attn_kv_b.weight", GgmlType::kQ8_0, {256, 512}, 139264, 131072});
    }
    t.push_back({b + "attn_output.weight", GgmlType::kQ8_0, {256, 256}, 69632, 65536});
    t.push_back({b + "ffn_norm.weight", GgmlType::kF32, {256}, 1024, 256});
    if (l == 0) {
      t.push_back({b + "ffn_gate.weight", GgmlType::kQ8_0, {256, 512}, 139264, 131072});
      t.push_back({b + "ffn_up.weight", GgmlType::kQ8_0, {256, 512}, 139264, 131072});
      t.push_back({b + "ffn_down.weight", GgmlType::kQ8_0, {512, 256}, 139264, 131072});
    } else {
      t.push_back({b + "ffn_gate_inp.weight", GgmlType::kF32, {256, 4}, 4096, 1024});
      t.push_back({b + "exp_probs_b.bias", GgmlType::kF32, {4}, 16, 4});
      t.push_back({b + "ffn_gate_exps.weight", GgmlType::kIQ1_S, {256, 256, 4}, 51200, 262144});
      t.push_back({b + "ffn_up_exps.weight", GgmlType::kIQ1_S, {256, 256, 4}, 51200, 262144});
      t.push_back({b + "ffn_down_exps.weight", GgmlType::kIQ1_S, {256, 256, 4}, 51200, 262144});
      t.push_back({b + "ffn_gate_shexp.weight", GgmlType::kQ8_0, {256, 256}, 69632, 65536});
      t.push_back({b + "ffn_up_shexp.weight", GgmlType::kQ8_0, {256, 256}, 69632, 65536});
      t.push_back({b + "ffn_down_shexp.weight", GgmlType::kQ8_0, {256, 256}, 69632, 65536});
    }
  }
  return t;
}

std::string WriteDeepseek(const std::string& path, bool mla, int split_tensors = 0) {
  GgufWriter w;
  w.SetString("general.architecture", "deepseek2");
  w.SetString("general.name", mla ? "tiny-mla" : "tiny-legacy");
  w.SetUint32("general.file_type", 24);
  w.SetUint32("deepseek2.block_count", 3);
  w.SetUint32("deepseek2.context_length", 4096);
  w.SetUint32("deepseek2.embedding_length", 256);
  w.SetUint32("deepseek2.feed_forward_length", 512);
  w.SetUint32("deepseek2.attention.head_count", 2);
  w.SetUint32("deepseek2.attention.head_count_kv", mla ? 1 : 2);
  w.SetFloat32("deepseek2.attention.layer_norm_rms_epsilon", 1e-6f);
  w.SetUint32("deepseek2.attention.q_lora_rank", 256);
  w.SetUint32("deepseek2.attention.kv_lora_rank", 256);
  if (mla) {
    w.SetUint32("deepseek2.attention.key_length_mla", 192);
    w.SetUint32("deepseek2.attention.value_length_mla", 128);
  }
  w.SetUint32("deepseek2.rope.dimension_count", 64);
  w.SetString("deepseek2.rope.scaling.type", "yarn");
  w.SetUint32("deepseek2.leading_dense_block_count", 1);
  w.SetUint32("deepseek2.expert_count", 4);
  w.SetUint32("deepseek2.expert_used_count", 2);
  // expert_shared_count deliberately absent: reported as missing.
  w.SetUint32("deepseek2.expert_feed_forward_length", 256);
  w.SetFloat32("deepseek2.expert_weights_scale", 2.5f);
  w.SetBool("deepseek2.expert_weights_norm", true);
  w.SetUint32("deepseek2.expert_gating_func", 2);
  w.SetString("tokenizer.ggml.model", "gpt2");
  w.SetString("tokenizer.ggml.pre", "deepseek-v3");
  std::vector<std::string> tokens;
  for (int i = 0; i < 320; ++i) tokens.push_back("t" + std::to_string(i));
  w.SetStringArray("tokenizer.ggml.tokens", tokens);
  for (const Spec& s : DeepseekTensors(mla)) {
    EXPECT_TRUE(w.AddTensor(s.name, s.type, s.ne, nullptr).ok()) << s.name;  // zeros
  }
  if (split_tensors > 0) {
    std::vector<std::string> paths;
    EXPECT_TRUE(w.WriteSplit(path, split_tensors, &paths).ok());
    return paths[0];
  }
  EXPECT_TRUE(w.Write(path).ok());
  return path;
}

class DeepseekInspectTest : public ::testing::TestWithParam<bool> {};

TEST_P(DeepseekInspectTest, Numbers) {
  const bool mla = GetParam();
  const std::string path = WriteDeepseek(testing::ScratchDir() + "/tiny.gguf", mla);
  auto m = GgufModel::Open(path);
  ASSERT_TRUE(m.ok()) << m.status();
  const GgufSummary s = Summarize(**m);
  const std::vector<Spec> specs = DeepseekTensors(mla);

  EXPECT_EQ(s.name, mla ? "tiny-mla" : "tiny-legacy");
  EXPECT_EQ(s.tokenizer_model, "gpt2");
  EXPECT_EQ(s.tokenizer_pre, "deepseek-v3");
  EXPECT_EQ(s.vocab_size, 320);
  EXPECT_EQ(s.attention, mla ? AttentionLayout::kMla : AttentionLayout::kLegacy);
  EXPECT_EQ(s.layers_mla, mla ? 3 : 0);
  EXPECT_EQ(s.layers_legacy, mla ? 0 : 3);
  EXPECT_EQ(s.hparams.size(), mla ? 20u : 18u);
  EXPECT_EQ(s.missing_required, std::vector<std::string>{"deepseek2.expert_shared_count"});

  ASSERT_EQ(s.tensors.size(), specs.size());
  uint64_t total = 0, routed = 0;
  int64_t elements = 0, routed_elements = 0;
  std::map<GgmlType, uint64_t> by_type;
  for (size_t i = 0; i < specs.size(); ++i) {
    EXPECT_EQ(s.tensors[i].name, specs[i].name);
    EXPECT_EQ(s.tensors[i].bytes, specs[i].bytes) << specs[i].name;
    EXPECT_EQ(s.tensors[i].elements, specs[i].elements) << specs[i].name;
    const bool is_routed = specs[i].name.find("_exps.weight") != std::string::npos;
    EXPECT_EQ(s.tensors[i].routed_expert, is_routed) << specs[i].name;
    total += specs[i].bytes;
    elements += specs[i].elements;
    by_type[specs[i].type] += specs[i].bytes;
    if (is_routed) {
      routed += specs[i].bytes;
      routed_elements += specs[i].elements;
    }
  }
  // 2 MoE layers x 3 expert tensors x 51,200 bytes.
  EXPECT_EQ(routed, 307200u);
  EXPECT_EQ(s.routed_expert_bytes, 307200u);
  EXPECT_EQ(s.routed_expert_elements, 1572864);
  EXPECT_EQ(s.total_bytes, total);
  EXPECT_EQ(s.total_elements, elements);
  // Summed by hand (python): globals 175,104 + 3 x 454,144 attention/norms + dense 417,792 +
  // 2 x 366,928 MoE. Both layouts hold 139,264 bytes of kv up-projection per layer.
  EXPECT_EQ(total, 2748448u);
  EXPECT_EQ(s.other_bytes, total - 307200);
  EXPECT_DOUBLE_EQ(s.routed_expert_share, 307200.0 / 2748448.0);
  ASSERT_EQ(s.by_type.size(), 3u);
  for (const TypeTotal& t : s.by_type) EXPECT_EQ(t.bytes, by_type[t.type]);
  EXPECT_EQ(s.by_type[0].type, GgmlType::kQ8_0);
  EXPECT_DOUBLE_EQ(s.by_type[0].bits_per_weight, 8.5);

  const std::string text = SummaryText(s);
  EXPECT_THAT(text, HasSubstr(mla ? "MLA, split attn_k_b/attn_v_b (3 layers)"
                                  : "legacy attn_kv_b (3 layers)"));
  EXPECT_THAT(text, HasSubstr("deepseek2.attention.layer_norm_rms_epsilon"));
  EXPECT_THAT(text, HasSubstr("1e-06"));
  EXPECT_THAT(text, HasSubstr("missing keys llama.cpp requires: deepseek2.expert_shared_count"));
  EXPECT_THAT(text, HasSubstr("vocabulary 320 tokens"));
  EXPECT_THAT(text, HasSubstr("11.2%"));  // 307200 / 2748448
  const nlohmann::json j = nlohmann::json::parse(SummaryJson(s));
  EXPECT_EQ(j["attention_layout"], mla ? "mla" : "legacy");
  EXPECT_EQ(j["totals"]["bytes"], 2748448);
  EXPECT_EQ(j["hparams"]["deepseek2.attention.layer_norm_rms_epsilon"], 1e-6);
  EXPECT_EQ(j["tokenizer"]["vocab_size"], 320);
}

TEST_P(DeepseekInspectTest, SplitSetSummarizesAllShards) {
  const bool mla = GetParam();
  const std::string first = WriteDeepseek(testing::ScratchDir() + "/tiny", mla, 20);
  auto m = GgufModel::Open(first);
  ASSERT_TRUE(m.ok()) << m.status();
  const GgufSummary s = Summarize(**m);
  EXPECT_EQ(s.files.size(), 3u);  // 52 (mla) or 49 (legacy) tensors in shards of 20
  EXPECT_EQ(s.total_bytes, 2748448u);
  EXPECT_EQ(s.routed_expert_bytes, 307200u);
  EXPECT_EQ(s.vocab_size, 320);
  EXPECT_EQ(s.tensors.back().shard, 2);
  EXPECT_THAT(SummaryText(s), HasSubstr("shards:         3"));
}

INSTANTIATE_TEST_SUITE_P(Layouts, DeepseekInspectTest, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "mla" : "legacy"; });

TEST(InspectTest, RoutedExpertNames) {
  EXPECT_TRUE(IsRoutedExpertTensor("blk.3.ffn_gate_exps.weight"));
  EXPECT_TRUE(IsRoutedExpertTensor("blk.60.ffn_down_exps.weight"));
  EXPECT_TRUE(IsRoutedExpertTensor("blk.10.ffn_up_exps.weight"));
  EXPECT_FALSE(IsRoutedExpertTensor("blk.3.ffn_gate_shexp.weight"));
  EXPECT_FALSE(IsRoutedExpertTensor("blk.3.ffn_gate_inp.weight"));
  EXPECT_FALSE(IsRoutedExpertTensor("blk.3.ffn_gate_exps.bias"));
  EXPECT_FALSE(IsRoutedExpertTensor("blk..ffn_up_exps.weight"));
  EXPECT_FALSE(IsRoutedExpertTensor("blkx3.ffn_up_exps.weight"));
  EXPECT_FALSE(IsRoutedExpertTensor("ffn_up_exps.weight"));
}

// Strings need not be UTF-8; the JSON report must still be produced (found by the fuzzer).
TEST(InspectTest, JsonToleratesInvalidUtf8) {
  GgufWriter w;
  w.SetString("general.architecture", "deepseek2");
  w.SetString("deepseek2.odd", std::string("a\xff\xfe"
                                           "b"));
  const std::string path = testing::ScratchDir() + "/odd.gguf";
  ASSERT_TRUE(w.Write(path).ok());
  auto m = GgufModel::Open(path);
  ASSERT_TRUE(m.ok()) << m.status();
  const nlohmann::json j = nlohmann::json::parse(SummaryJson(Summarize(**m)));
  EXPECT_EQ(j["hparams"]["deepseek2.odd"],
            "a\xEF\xBF\xBD\xEF\xBF\xBD"
            "b");  // U+FFFD twice
  EXPECT_THAT(SummaryText(Summarize(**m)), HasSubstr("\"a\\xff\\xfeb\""));
}

}  // namespace
}  // namespace tritmoe::gguf
