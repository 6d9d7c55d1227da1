// gen-model end to end: the recipe's per-tensor types, the file against the independent NumPy
// reference (both dequantize the same weights), llama.cpp's logits where the peer is built, and
// `tritmoe generate` determinism.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "gtest/gtest.h"
#include "model_test_util.h"
#include "runtime/gguf/gguf.h"
#include "runtime/modelgen/model_generator.h"

namespace tritmoe {
namespace {

using ::tritmoe::testing::ReadFloats;
using ::tritmoe::testing::ReadText;
using ::tritmoe::testing::RelError;
using ::tritmoe::testing::RunCommand;
using ::tritmoe::testing::ScratchDir;

std::string Tritmoe() { return TRITMOE_BINARY; }

std::string GenModel(const std::string& dir, const std::string& recipe,
                     const std::string& extra = "") {
  const std::string path = dir + "/tiny-" + recipe + ".gguf";
  const std::string log = path + ".log";
  EXPECT_EQ(RunCommand(Tritmoe() + " gen-model --config tiny --recipe " + recipe + " --out " +
                           path + " " + extra,
                       log),
            0)
      << ReadText(log);
  return path;
}

// Argmax agreement of two [n][n_vocab] logit arrays.
double ArgmaxAgreement(const std::vector<float>& a, const std::vector<float>& b, int64_t n_vocab) {
  const int64_t n = static_cast<int64_t>(a.size()) / n_vocab;
  int64_t same = 0;
  for (int64_t t = 0; t < n; ++t) {
    auto am = [&](const std::vector<float>& v) {
      return std::max_element(v.begin() + t * n_vocab, v.begin() + (t + 1) * n_vocab) -
             (v.begin() + t * n_vocab);
    };
    same += am(a) == am(b);
  }
  return static_cast<double>(same) / n;
}

const char* kTokens = "1 5 9 300 77 12 1000 3 500 42 42 42 7 800 64 2 256 511 90 33";

TEST(GenModelTest, Ud158RecipeTypesPerTensor) {
  const std::string dir = ScratchDir("recipe");
  const std::string path = GenModel(dir, "ud-1.58");
  auto file = gguf::GgufModel::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  std::map<std::string, std::string> types;
  for (const auto& t : (*file)->tensors()) types[t.name] = GetTypeTraits(t.type).name;
  // tiny: layer 0 dense, layers 1-2 MoE (both among the first 3 MoE layers: IQ2_XXS down).
  EXPECT_EQ(types["token_embd.weight"], "Q4_K");
  EXPECT_EQ(types["output.weight"], "Q6_K");
  EXPECT_EQ(types["output_norm.weight"], "F32");
  EXPECT_EQ(types["blk.0.ffn_gate.weight"], "Q6_K");
  EXPECT_EQ(types["blk.1.ffn_gate_inp.weight"], "F32");
  EXPECT_EQ(types["blk.1.exp_probs_b.bias"], "F32");
  EXPECT_EQ(types["blk.1.ffn_gate_exps.weight"], "IQ1_S");
  EXPECT_EQ(types["blk.2.ffn_up_exps.weight"], "IQ1_S");
  EXPECT_EQ(types["blk.1.ffn_down_exps.weight"], "IQ2_XXS");
  EXPECT_EQ(types["blk.1.ffn_down_shexp.weight"], "Q6_K");
  EXPECT_EQ(types["blk.1.attn_q_b.weight"], "Q4_K");
  EXPECT_EQ(types["blk.1.attn_k_b.weight"], "Q8_0");  // ne0 = 32: falls back to a 32-block type
  EXPECT_EQ(types["blk.2.attn_kv_a_norm.weight"], "F32");
}

TEST(GenModelTest, SameSeedSameBytesOtherSeedOtherBytes) {
  const std::string dir = ScratchDir("seed");
  const std::string a = GenModel(dir, "pure-tq1_0", "--seed 7");
  std::filesystem::rename(a, dir + "/a.gguf");
  const std::string b = GenModel(dir, "pure-tq1_0", "--seed 7");
  std::filesystem::rename(b, dir + "/b.gguf");
  const std::string c = GenModel(dir, "pure-tq1_0", "--seed 8");
  EXPECT_EQ(ReadText(dir + "/a.gguf"), ReadText(dir + "/b.gguf"));
  EXPECT_NE(ReadText(dir + "/a.gguf"), ReadText(c));
}

TEST(GenModelTest, BadArgumentsAreNamed) {
  const std::string dir = ScratchDir("bad");
  const std::string log = dir + "/log";
  EXPECT_NE(RunCommand(Tritmoe() + " gen-model --config huge --out " + dir + "/x.gguf", log), 0);
  EXPECT_NE(ReadText(log).find("unknown model config 'huge'"), std::string::npos) << ReadText(log);
  EXPECT_NE(RunCommand(Tritmoe() + " gen-model --recipe pure-q9 --out " + dir + "/x.gguf", log), 0);
  EXPECT_NE(ReadText(log).find("pure-q9"), std::string::npos) << ReadText(log);
}

// The generated file through both engines: C++ (float path) vs NumPy, the same decoded weights.
class GenModelReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GenModelReferenceTest, LogitsMatchNumpyReference) {
  const std::string dir = ScratchDir("ref_" + GetParam());
  const std::string model = GenModel(dir, GetParam());
  const std::string toks = dir + "/tokens.txt";
  { std::ofstream(toks) << kTokens << "\n"; }
  std::string tok_lines = kTokens;
  std::replace(tok_lines.begin(), tok_lines.end(), ' ', '\n');
  { std::ofstream(toks) << tok_lines << "\n"; }
  const std::string log = dir + "/log";
  ASSERT_EQ(RunCommand(Tritmoe() + " logits --precision float --kv-type f32 --model " + model +
                           " --tokens-file " + toks + " --out " + dir + "/tm.bin",
                       log),
            0)
      << ReadText(log);
  ASSERT_EQ(RunCommand(std::string(TRITMOE_PYTHON) + " " + TRITMOE_SOURCE_DIR +
                           "/tests/reference/deepseek2_np.py --model " + model + " --tokens-file " +
                           toks + " --out " + dir + "/np.bin",
                       log),
            0)
      << ReadText(log);
  const std::vector<float> tm = ReadFloats(dir + "/tm.bin"), np = ReadFloats(dir + "/np.bin");
  ASSERT_EQ(tm.size(), 20u * 1024);
  EXPECT_LE(RelError(tm, np), 1e-3);
  EXPECT_EQ(ArgmaxAgreement(tm, np, 1024), 1.0);
}

INSTANTIATE_TEST_SUITE_P(Recipes, GenModelReferenceTest,
                         ::testing::Values("f16", "ud-1.58", "ud-1.58-tq1"));

// Relative L2 error of row t of two [n][n_vocab] logit arrays.
double RowRelError(const std::vector<float>& a, const std::vector<float>& b, int64_t n_vocab,
                   int64_t t) {
  double num = 0, den = 0;
  for (int64_t i = t * n_vocab; i < (t + 1) * n_vocab; ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

// What llama.cpp must agree on per recipe. F16: the bar (argmax >= 95%) and 1% relative
// error. Low-bit experts: both engines quantize activations to 8 bits before the integer dot
// products, so the first position -- where attention is the identity and no f16 rounding of q
// enters -- must agree to float rounding; later positions differ by ~3% (a 1e-3 difference from
// attention, amplified by the activation rounding of every low-bit matmul), and a position whose
// router picks a different expert on a near-tie differs by up to ~40% (measured: 85% argmax for
// ud-1.58, 90% for ud-1.58-tq1; median row error 3.2% for both).
struct LlamaCppBar {
  const char* recipe;
  double min_argmax;
  double max_median_row_error;
  double max_first_row_error;
};

class LlamaCppAgreementTest : public ::testing::TestWithParam<LlamaCppBar> {};

// llama.cpp (the reference peer, built by launch/build-llama-cpp.sh) loads the generated file and
// agrees with `tritmoe logits` on the same tokens.
TEST_P(LlamaCppAgreementTest, LogitsAgree) {
  const LlamaCppBar bar = GetParam();
  const std::string llama_dir = TRITMOE_LLAMA_DIR;
  const std::string tool = std::string(TRITMOE_SOURCE_DIR) + "/build-peer/llama_logits";
  if (!std::filesystem::exists(tool) || !std::filesystem::exists(llama_dir + "/lib")) {
    GTEST_SKIP() << "llama.cpp peer not built (launch/build-llama-cpp.sh; "
                    "tools/llama_logits/build.sh)";
  }
  const std::string dir = ScratchDir(std::string("llama-") + bar.recipe);
  const std::string model = GenModel(dir, bar.recipe);
  std::string tok_lines = kTokens;
  std::replace(tok_lines.begin(), tok_lines.end(), ' ', '\n');
  const std::string toks = dir + "/tokens.txt";
  { std::ofstream(toks) << tok_lines << "\n"; }
  const std::string log = dir + "/log";
  ASSERT_EQ(RunCommand("LD_LIBRARY_PATH=" + llama_dir + "/lib " + tool + " --model " + model +
                           " --tokens-file " + toks + " --out " + dir + "/llama.bin",
                       log),
            0)
      << ReadText(log);
  ASSERT_EQ(RunCommand(Tritmoe() + " logits --attention absorbed --model " + model +
                           " --tokens-file " + toks + " --out " + dir + "/tm.bin",
                       log),
            0)
      << ReadText(log);
  const std::vector<float> tm = ReadFloats(dir + "/tm.bin"), ll = ReadFloats(dir + "/llama.bin");
  ASSERT_EQ(tm.size(), ll.size());
  constexpr int64_t kVocab = 1024;
  const int64_t n = static_cast<int64_t>(tm.size()) / kVocab;
  std::vector<double> row_err(n);
  for (int64_t t = 0; t < n; ++t) row_err[t] = RowRelError(tm, ll, kVocab, t);
  EXPECT_LE(row_err[0], bar.max_first_row_error);
  std::vector<double> sorted = row_err;
  std::nth_element(sorted.begin(), sorted.begin() + n / 2, sorted.end());
  EXPECT_LE(sorted[n / 2], bar.max_median_row_error);
  EXPECT_GE(ArgmaxAgreement(tm, ll, kVocab), bar.min_argmax);
}

INSTANTIATE_TEST_SUITE_P(Recipes, LlamaCppAgreementTest,
                         ::testing::Values(LlamaCppBar{"f16", 0.95, 1e-2, 1e-2},
                                           LlamaCppBar{"ud-1.58", 0.75, 0.06, 1e-4},
                                           LlamaCppBar{"ud-1.58-tq1", 0.75, 0.06, 1e-4}),
                         [](const auto& info) {
                           std::string name = info.param.recipe;
                           std::replace(name.begin(), name.end(), '-', '_');
                           std::replace(name.begin(), name.end(), '.', '_');
                           return name;
                         });

TEST(GenerateTest, ChatReplyIsDeterministicPerSeed) {
  const std::string dir = ScratchDir("generate");
  const std::string model = GenModel(dir, "ud-1.58");
  auto gen = [&](int seed, const std::string& out) {
    return RunCommand(Tritmoe() + " generate --chat --model " + model +
                      " --prompt 'Why is the sky blue?' -n 24 --seed " + std::to_string(seed) +
                      " > " + out + " 2> " + out + ".err");
  };
  ASSERT_EQ(gen(42, dir + "/a.txt"), 0) << ReadText(dir + "/a.txt.err");
  ASSERT_EQ(gen(42, dir + "/b.txt"), 0);
  ASSERT_EQ(gen(43, dir + "/c.txt"), 0);
  EXPECT_EQ(ReadText(dir + "/a.txt"), ReadText(dir + "/b.txt"));
  EXPECT_NE(ReadText(dir + "/a.txt"), ReadText(dir + "/c.txt"));
  const std::string err = ReadText(dir + "/a.txt.err");
  EXPECT_NE(err.find("tok/s"), std::string::npos) << err;
  EXPECT_NE(err.find("generated: 24 tokens"), std::string::npos) << err;
}

}  // namespace
}  // namespace tritmoe
