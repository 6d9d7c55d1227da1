// Cross-check of the whole encoder (pre-tokenizer + BPE) on a synthetic vocabulary against an
// independent Python implementation (tests/text/bpe_ref.py: the `regex` module and the classic
// merge-all-occurrences BPE loop). Skipped when python3 or `regex` is not available.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/text/synthetic_corpus.h"
#include "runtime/text/synthetic_vocab.h"
#include "runtime/text/tokenizer.h"

namespace tritmoe {
namespace {

std::vector<std::string> Texts() {
  std::vector<std::string> texts = {"Hello world",
                                    "The router keeps the best 8 of 256 experts.",
                                    "  def f(x):\n    return x",
                                    "今天天气很好，我们去公园散步吧。",
                                    "こんにちは、世界。",
                                    "1234567890 3.14159 2024-12-31",
                                    "emoji 😀👍🏽 and café",
                                    std::string(SyntheticTrainingText())};
  // Random mixtures of fragments that share pieces with the training text.
  const std::vector<std::string> pool = {"the", " model", " token", "ing",  " ",    "  ",
                                         "\n",  "，",     "专家",   "模型", "123",  "4567",
                                         "(",   "){",     "\t",     "é",    "ひら", " expert",
                                         "s",   "'s",     "!!",     "😀",    "x_y",  "Ω"};
  std::mt19937_64 rng(17);
  for (int i = 0; i < 200; ++i) {
    std::string s;
    for (int k = rng() % 10 + 1; k > 0; --k) s += pool[rng() % pool.size()];
    texts.push_back(s);
  }
  return texts;
}

TEST(BpeCrossCheckTest, MatchesPythonReferenceOnSyntheticVocab) {
  for (int n_vocab : {20000}) {  // learned merges plus filler; one Python start only
    SCOPED_TRACE(n_vocab);
    const VocabData vocab = MakeSyntheticVocab(n_vocab, 5).value();
    const std::vector<std::string> texts = Texts();
    nlohmann::json req;
    req["pattern_file"] =
        std::string(TRITMOE_SOURCE_DIR) + "/runtime/deepseek_v3_pretokenizer_regex.txt";
    req["tokens"] = vocab.tokens;
    req["merges"] = vocab.merges;
    req["texts"] = texts;
    char in_path[] = "/tmp/tritmoe_bpe_req_XXXXXX";
    const int fd = mkstemp(in_path);
    ASSERT_GE(fd, 0);
    close(fd);
    std::ofstream(in_path) << req.dump();
    const std::string cmd = std::string("python3 ") + TRITMOE_SOURCE_DIR +
                            "/tests/text/bpe_ref.py < " + in_path + " 2>/dev/null";
    FILE* pipe = popen(cmd.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string output;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) output.append(buf, n);
    const int status = pclose(pipe);
    unlink(in_path);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      GTEST_SKIP() << "python3 with the `regex` module is not available (status " << status << ")";
    }
    const auto expected = nlohmann::json::parse(output).at("ids");
    const Tokenizer tok = Tokenizer::Create(vocab).value();
    ASSERT_EQ(expected.size(), texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      EXPECT_EQ(tok.Encode(texts[i], false, false).value(), expected[i].get<std::vector<int32_t>>())
          << "text: \"" << texts[i] << "\"";
    }
  }
}

}  // namespace
}  // namespace tritmoe
