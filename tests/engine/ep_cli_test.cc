// `tritmoe logits` and `tritmoe generate` under mpirun (tests/mpi/mpirun.sh: oversubscribed,
// allowed as root) on generated tiny models:
//   * np = 1, 2, 3, 4 give the argmax of a plain single process at every position and logits
//     within 1e-4 relative of it; greedy generation prints the same text;
//   * the start-up report shows each rank mapping the replicated part plus ~experts/N;
//   * a rank killed mid-generation ends the job with an error within 30 s;
//   * ranks started with different model files or flags fail at start, each saying why.
//   * routing statistics recorded by one process (--routing-stats-out) drive --placement
//     balanced:FILE / balanced+R:FILE at np = 2, 3 to the same text and the same statistics.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/modelgen/model_generator.h"
#include "tests/common/cli_run.h"

namespace tritmoe {
namespace {

using testing::ReadFloats;
using testing::ReadText;
using testing::RunShell;

std::string Tritmoe() { return TRITMOE_BINARY; }
std::string MpiRun(int np) {
  return std::string(TRITMOE_SOURCE_DIR) + "/tests/mpi/mpirun.sh -np " + std::to_string(np);
}

std::string Dir() {
  static const std::string dir = testing::ProcessTempDir("tritmoe_ep_cli");
  return dir;
}

std::string Model(const std::string& recipe, uint64_t seed = 1234) {
  const std::string path = Dir() + "/tiny-" + recipe + "-" + std::to_string(seed) + ".gguf";
  if (!std::filesystem::exists(path)) {
    auto shape = GetModelShape("tiny", 0);
    auto r = QuantRecipe::Parse(recipe);
    EXPECT_TRUE(shape.ok() && r.ok());
    GenerateOptions g;
    g.seed = seed;
    absl::Status s = GenerateModel(*shape, *r, g, path);
    EXPECT_TRUE(s.ok()) << s;
  }
  return path;
}

constexpr int64_t kVocab = 1024;  // tiny
const char* kTokens = "1 5 9 300 77 12 1000 3 500 42 42 42 7 800 64 2 256 511 90 33 17 4 88";

// One rank's line of the start-up report.
struct RankLine {
  double weights = 0, replicated = 0, experts = 0;
  int expert_layers = 0;
};
std::vector<RankLine> ParseReport(const std::string& err) {
  std::vector<RankLine> out;
  const std::regex re(
      R"(rank \d+ \(pid \d+ on \S+, \d+ threads?\): weights ([0-9.]+) MB = replicated ([0-9.]+) MB \+ (\d+) expert-layers ([0-9.]+) MB)");
  for (std::sregex_iterator it(err.begin(), err.end(), re), end; it != end; ++it) {
    out.push_back(
        {std::stod((*it)[1]), std::stod((*it)[2]), std::stod((*it)[4]), std::stoi((*it)[3])});
  }
  return out;
}

class EpCliTest : public ::testing::TestWithParam<std::string> {};

TEST_P(EpCliTest, LogitsAgreeForAnyRankCount) {
  const std::string model = Model(GetParam());
  const std::string dir = Dir() + "/logits-" + GetParam();
  std::filesystem::create_directories(dir);
  {
    std::ofstream t(dir + "/tokens.txt");
    t << kTokens << "\n";
  }
  const std::string args =
      " logits -v -m " + model + " --tokens-file " + dir + "/tokens.txt -o " + dir;
  // The reference: one plain process, no MPI at all.
  ASSERT_EQ(RunShell(Tritmoe() + args + "/plain.bin", dir + "/plain.out", dir + "/plain.err"), 0)
      << ReadText(dir + "/plain.err");
  const std::vector<float> ref = ReadFloats(dir + "/plain.bin");
  ASSERT_EQ(ref.size(), 23u * kVocab);
  const std::vector<RankLine> one = ParseReport(ReadText(dir + "/plain.err"));
  ASSERT_EQ(one.size(), 1u) << ReadText(dir + "/plain.err");
  EXPECT_EQ(one[0].expert_layers, 32);

  for (int np = 1; np <= 4; ++np) {
    const std::string tag = dir + "/np" + std::to_string(np);
    ASSERT_EQ(RunShell(MpiRun(np) + " " + Tritmoe() + args + "/np" + std::to_string(np) + ".bin",
                       tag + ".out", tag + ".err"),
              0)
        << ReadText(tag + ".err");
    const std::vector<float> got = ReadFloats(tag + ".bin");
    ASSERT_EQ(got.size(), ref.size()) << "np=" << np;
    double num = 0, den = 0;
    int argmax_diff = 0;
    for (size_t r = 0; r < got.size() / kVocab; ++r) {
      const float* a = got.data() + r * kVocab;
      const float* b = ref.data() + r * kVocab;
      argmax_diff += (std::max_element(a, a + kVocab) - a) != (std::max_element(b, b + kVocab) - b);
      for (int64_t i = 0; i < kVocab; ++i) {
        num = std::max(num, std::fabs(double(a[i]) - b[i]));
        den = std::max(den, std::fabs(double(b[i])));
      }
    }
    EXPECT_EQ(argmax_diff, 0) << "np=" << np;
    EXPECT_LE(num / den, 1e-4) << "np=" << np;

    // Each rank maps the replicated part and its share of the 2 x 16 expert-layers.
    const std::vector<RankLine> ranks = ParseReport(ReadText(tag + ".err"));
    ASSERT_EQ(ranks.size(), static_cast<size_t>(np)) << ReadText(tag + ".err");
    int layers = 0;
    double experts = 0;
    for (int r = 0; r < np; ++r) {
      EXPECT_NEAR(ranks[r].replicated, one[0].replicated, 0.006);
      EXPECT_EQ(ranks[r].expert_layers, 2 * (16 / np + (r < 16 % np ? 1 : 0)));
      EXPECT_NEAR(ranks[r].experts, one[0].experts * ranks[r].expert_layers / 32, 0.006);
      EXPECT_LE(ranks[r].weights, one[0].weights);
      if (np > 1) {
        EXPECT_LT(ranks[r].weights, one[0].weights - 0.4 * one[0].experts);
      }
      layers += ranks[r].expert_layers;
      experts += ranks[r].experts;
    }
    EXPECT_EQ(layers, 32);
    EXPECT_NEAR(experts, one[0].experts, 0.006 * np);
  }
}

INSTANTIATE_TEST_SUITE_P(Recipes, EpCliTest, ::testing::Values("ud-1.58", "f16"));

TEST(EpCliGenerateTest, GreedyTextIsTheSameForAnyRankCount) {
  const std::string model = Model("ud-1.58");
  const std::string dir = Dir() + "/generate";
  std::filesystem::create_directories(dir);
  const std::string args =
      " generate -m " + model + " -p 'The quick brown fox' -n 32 --ignore-eos --temperature 0";
  ASSERT_EQ(RunShell(Tritmoe() + args, dir + "/plain.out", dir + "/plain.err"), 0)
      << ReadText(dir + "/plain.err");
  const std::string want = ReadText(dir + "/plain.out");
  EXPECT_GT(want.size(), 16u);
  EXPECT_NE(ReadText(dir + "/plain.err").find("generated: 32 tokens"), std::string::npos);
  for (int np = 1; np <= 4; ++np) {
    const std::string tag = dir + "/np" + std::to_string(np);
    ASSERT_EQ(RunShell(MpiRun(np) + " " + Tritmoe() + args, tag + ".out", tag + ".err"), 0)
        << ReadText(tag + ".err");
    EXPECT_EQ(ReadText(tag + ".out"), want) << "np=" << np;
    EXPECT_NE(ReadText(tag + ".err").find("generated: 32 tokens"), std::string::npos)
        << ReadText(tag + ".err");
  }
}

// Routing statistics written by a plain process drive "balanced" placements under mpirun: the
// same greedy text at np = 2 and 3 (with and without copies of hot experts), the copies show in
// the start-up report, and the statistics the np = 3 job writes equal the plain process's
// (routing does not depend on where experts live).
TEST(EpCliGenerateTest, BalancedPlacementFromRecordedStats) {
  const std::string model = Model("ud-1.58");
  const std::string dir = Dir() + "/balanced";
  std::filesystem::create_directories(dir);
  const std::string args =
      " generate -m " + model + " -p 'The quick brown fox' -n 24 --ignore-eos --temperature 0";
  const std::string stats = dir + "/stats.json";
  ASSERT_EQ(RunShell(Tritmoe() + args + " --routing-stats-out " + stats, dir + "/plain.out",
                     dir + "/plain.err"),
            0)
      << ReadText(dir + "/plain.err");
  const std::string want = ReadText(dir + "/plain.out");
  const std::string recorded = ReadText(stats);
  EXPECT_NE(recorded.find("\"tritmoe.routing_stats\""), std::string::npos) << recorded;
  EXPECT_NE(ReadText(dir + "/plain.err").find("routing statistics: 2 MoE layers x 16 experts"),
            std::string::npos)
      << ReadText(dir + "/plain.err");

  struct Case {
    int np;
    std::string placement;
    int expert_layers;  // summed over ranks: 2 MoE layers x (16 + copies)
  };
  for (const Case& c : {Case{2, "balanced:" + stats, 32}, Case{3, "balanced:" + stats, 32},
                        Case{3, "balanced+4:" + stats, 40}}) {
    const std::string tag =
        dir + "/np" + std::to_string(c.np) + "-" + std::to_string(c.expert_layers);
    const std::string out_stats = tag + "-stats.json";
    ASSERT_EQ(RunShell(MpiRun(c.np) + " " + Tritmoe() + args + " --placement " + c.placement +
                           " --routing-stats-out " + out_stats,
                       tag + ".out", tag + ".err"),
              0)
        << ReadText(tag + ".err");
    EXPECT_EQ(ReadText(tag + ".out"), want) << c.np << " " << c.placement;
    EXPECT_EQ(ReadText(out_stats), recorded) << c.np << " " << c.placement;
    const std::vector<RankLine> ranks = ParseReport(ReadText(tag + ".err"));
    ASSERT_EQ(ranks.size(), static_cast<size_t>(c.np)) << ReadText(tag + ".err");
    int layers = 0;
    for (const RankLine& r : ranks) layers += r.expert_layers;
    EXPECT_EQ(layers, c.expert_layers) << c.placement;
  }
  // A missing statistics file fails at start on every rank, naming it.
  const std::string tag = dir + "/missing";
  EXPECT_NE(
      RunShell(MpiRun(2) + " " + Tritmoe() + args + " --placement balanced:" + dir + "/nope.json",
               tag + ".out", tag + ".err"),
      0);
  EXPECT_NE(ReadText(tag + ".err").find("nope.json"), std::string::npos) << ReadText(tag + ".err");
}

// SIGKILL one rank while rank 0 streams tokens: mpirun must end the whole job, with a message
// naming the rank, well within 30 s.
class EpCliKillTest : public ::testing::TestWithParam<int> {};

TEST_P(EpCliKillTest, KilledRankEndsTheJob) {
  const int victim = GetParam();
  const std::string model = Model("ud-1.58");
  const std::string tag = Dir() + "/kill" + std::to_string(victim);
  const std::string cmd = MpiRun(3) + " " + Tritmoe() + " generate -m " + model +
                          " -p 'Hello' -n 100000 --ignore-eos --temperature 0 >" + tag + ".out 2>" +
                          tag + ".err";
  const pid_t job = fork();
  ASSERT_GE(job, 0);
  if (job == 0) {
    setsid();  // its own process group, so a hung job can be cleaned up as a whole
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  using Clock = std::chrono::steady_clock;
  auto wait_for = [&](double seconds, int* status) {
    const auto until = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < until) {
      if (waitpid(job, status, WNOHANG) == job) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };
  // The victim's pid from the start-up report, once tokens are streaming.
  pid_t pid = 0;
  int status = 0;
  const std::regex re("rank " + std::to_string(victim) + R"( \(pid (\d+))");
  for (int i = 0; i < 600 && pid == 0; ++i) {
    std::smatch m;
    const std::string err = ReadText(tag + ".err");
    if (std::regex_search(err, m, re) && ReadText(tag + ".out").size() > 20) {
      pid = std::stoi(m[1]);
    } else if (wait_for(0.05, &status)) {
      FAIL() << "the job ended before the kill:\n" << ReadText(tag + ".err");
    }
  }
  ASSERT_NE(pid, 0) << "no pid for rank " << victim << " in:\n" << ReadText(tag + ".err");
  const auto t0 = Clock::now();
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  const bool ended = wait_for(30, &status);
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!ended) {
    kill(-job, SIGKILL);
    waitpid(job, &status, 0);
    FAIL() << "the job was still running 30 s after rank " << victim << " was killed";
  }
  EXPECT_LT(took, 30.0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
  const std::string err = ReadText(tag + ".err");
  EXPECT_NE(err.find("rank " + std::to_string(victim)), std::string::npos) << err;
  EXPECT_NE(err.find("signal 9"), std::string::npos) << err;
  std::printf("job ended %.2f s after rank %d was killed\n", took, victim);
}

INSTANTIATE_TEST_SUITE_P(Victims, EpCliKillTest, ::testing::Values(1, 0));

// Open MPI's MPMD form gives each rank its own command line.
TEST(EpCliMismatchTest, DifferentFilesOrFlagsFailAtStartOnEveryRank) {
  const std::string a = Model("ud-1.58"), b = Model("ud-1.58", 7);
  const std::string dir = Dir() + "/mismatch";
  std::filesystem::create_directories(dir);
  {
    std::ofstream t(dir + "/tokens.txt");
    t << kTokens << "\n";
  }
  auto logits = [&](const std::string& model, const std::string& extra) {
    return "-np 1 " + Tritmoe() + " logits -m " + model + " --tokens-file " + dir +
           "/tokens.txt -o " + dir + "/o.bin " + extra;
  };
  struct Case {
    std::string rank1, needle;
  } cases[] = {
      {logits(b, ""), "opened " + b + ", which differs from rank 0's " + a},
      {logits(a, "--kv-type f32"), "kv_type=f32"},
      {logits(dir + "/missing.gguf", ""), "missing.gguf"},
  };
  for (const Case& c : cases) {
    const std::string cmd =
        std::string(TRITMOE_SOURCE_DIR) + "/tests/mpi/mpirun.sh " + logits(a, "") + " : " + c.rank1;
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_NE(RunShell("timeout 60 " + cmd, dir + "/out", dir + "/err"), 0) << c.needle;
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 30);
    const std::string err = ReadText(dir + "/err");
    for (int r = 0; r < 2; ++r) {
      const std::string who = "tritmoe: rank " + std::to_string(r) + ": ";
      const size_t at = err.find(who);
      ASSERT_NE(at, std::string::npos) << "rank " << r << " did not report:\n" << err;
      const size_t end = std::min(err.find("tritmoe: rank", at + 1), err.find("-----", at));
      EXPECT_NE(err.substr(at, end - at).find(c.needle), std::string::npos) << "rank " << r << ":\n"
                                                                            << err;
    }
  }
}

}  // namespace
}  // namespace tritmoe
