// Helpers shared by the model tests: scratch directories, running the NumPy tools
// (tests/reference/make_tiny_np.py and friends) and comparing logits.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tritmoe::testing {

inline std::string Python() { return TRITMOE_PYTHON; }
inline std::string ReferenceDir() { return std::string(TRITMOE_SOURCE_DIR) + "/tests/reference"; }
inline std::string ModelTestDir() { return std::string(TRITMOE_SOURCE_DIR) + "/tests/model"; }

// A fresh directory unique to this process and `tag`.
inline std::string ScratchDir(const std::string& tag) {
  std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) /
                              ("tritmoe_model_" + std::to_string(::getpid()) + "_" + tag);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// Runs a shell command; returns its exit status (-1 if it did not exit normally). Output goes to
// `log` when given, else to the test's stdout/stderr.
inline int RunCommand(const std::string& cmd, const std::string& log = "") {
  const std::string full = log.empty() ? cmd : cmd + " >" + log + " 2>&1";
  const int rc = std::system(full.c_str());
  if (rc == -1 || !WIFEXITED(rc)) return -1;
  return WEXITSTATUS(rc);
}

inline std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Writes a tiny random deepseek2 model with make_tiny_np.py; `args` are extra flags
// (e.g. "--layout legacy --set n_group=0"). Fails the test on error.
inline std::string MakeTinyModel(const std::string& dir, const std::string& name,
                                 const std::string& args) {
  const std::string path = dir + "/" + name + ".gguf";
  const std::string log = dir + "/" + name + ".make.log";
  const int rc = RunCommand(
      Python() + " " + ReferenceDir() + "/make_tiny_np.py --out " + path + " " + args, log);
  EXPECT_EQ(rc, 0) << "make_tiny_np.py " << args << ":\n" << ReadText(log);
  return path;
}

inline void WriteTokens(const std::string& path, const std::vector<int32_t>& ids) {
  std::ofstream out(path);
  for (int32_t id : ids) out << id << "\n";
}

inline std::vector<float> ReadFloats(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), {});
  std::vector<float> v(bytes.size() / sizeof(float));
  std::copy(bytes.begin(), bytes.begin() + v.size() * sizeof(float),
            reinterpret_cast<char*>(v.data()));
  return v;
}

// max |a - b| / max |b| (the spec's relative error of logits); infinity on size mismatch.
inline double RelError(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size() || b.empty()) return INFINITY;
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    num = std::isnan(d) ? INFINITY : std::max(num, d);
    den = std::max(den, std::fabs(static_cast<double>(b[i])));
  }
  return num / den;
}

// Positions (rows of n_vocab) whose argmax differs.
inline int ArgmaxMismatches(const std::vector<float>& a, const std::vector<float>& b,
                            int64_t n_vocab) {
  int bad = 0;
  for (size_t r = 0; r * n_vocab < a.size() && r * n_vocab < b.size(); ++r) {
    auto ia = std::max_element(a.begin() + r * n_vocab, a.begin() + (r + 1) * n_vocab);
    auto ib = std::max_element(b.begin() + r * n_vocab, b.begin() + (r + 1) * n_vocab);
    if (ia - a.begin() != ib - b.begin()) ++bad;
  }
  return bad;
}

}  // namespace tritmoe::testing
