// Running the tritmoe binary from a test through the shell, and reading what it wrote. Header-only.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tritmoe::testing {

// A folder for this test process's files: TempDir()/PREFIX_PID, made once.
inline std::string ProcessTempDir(const std::string& prefix) {
  auto d =
      std::filesystem::path(::testing::TempDir()) / (prefix + "_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d.string();
}

inline std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Exit status of `cmd` (stdout to out, stderr to err), -1 when it did not exit normally.
inline int RunShell(const std::string& cmd, const std::string& out, const std::string& err) {
  const int rc = std::system((cmd + " >" + out + " 2>" + err).c_str());
  return rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// A file of raw float32 values (e.g. `tritmoe logits -o`).
inline std::vector<float> ReadFloats(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), {});
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

}  // namespace tritmoe::testing
