// Shared by the store tests: scratch directories, generated tiny models, and running a fixed
// token script through a model to collect its logits.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/model/model.h"
#include "runtime/modelgen/model_generator.h"
#include "runtime/modelgen/model_shape.h"
#include "runtime/modelgen/quant_recipe.h"

namespace tritmoe::testing {

// A fresh directory unique to this process and `tag`.
inline std::string ScratchDir(const std::string& tag) {
  std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) /
                              ("tritmoe_store_" + std::to_string(::getpid()) + "_" + tag);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// The tiny shape with `n_layers` layers (1 dense + n_layers - 1 MoE, 16 experts, 4 used), written
// with `recipe`; split into shards of max_tensors tensors when > 0. Returns the path to open
// (the first shard for a split set).
inline std::string MakeModel(const std::string& dir, const std::string& name, int n_layers = 4,
                             const std::string& recipe = "ud-1.58", int max_tensors = 0) {
  auto shape = GetModelShape("tiny", n_layers);
  EXPECT_TRUE(shape.ok()) << shape.status();
  auto r = QuantRecipe::Parse(recipe);
  EXPECT_TRUE(r.ok()) << r.status();
  GenerateOptions g;
  g.seed = 77;
  g.threads = 2;
  g.max_tensors_per_shard = max_tensors;
  const std::string path = dir + "/" + name + ".gguf";
  absl::Status st = GenerateModel(*shape, *r, g, path);
  EXPECT_TRUE(st.ok()) << st;
  if (max_tensors > 0) {
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      const std::string p = e.path().string();
      if (p.find(name + "-00001-of-") != std::string::npos) return p;
    }
    ADD_FAILURE() << "no first shard for " << path;
  }
  return path;
}

// Generated once per process and shared: MakeModel(dir, ...) under a scratch directory of its own.
// Tests that change the files work on a CopyModel of it.
inline std::string SharedModel(int n_layers = 3, int max_tensors = 0) {
  static std::map<std::pair<int, int>, std::string>* models =
      new std::map<std::pair<int, int>, std::string>();
  auto key = std::make_pair(n_layers, max_tensors);
  auto it = models->find(key);
  if (it != models->end()) return it->second;
  const std::string name = "shared" + std::to_string(n_layers) + "_" + std::to_string(max_tensors);
  const std::string path = MakeModel(ScratchDir(name), name, n_layers, "ud-1.58", max_tensors);
  models->emplace(key, path);
  return path;
}

// Copies the model at `path` (every shard of a split set) into `dir`; returns the copy's path.
inline std::string CopyModel(const std::string& path, const std::string& dir) {
  const std::filesystem::path src(path);
  std::string stem = src.filename().string();
  const size_t split = stem.find("-00001-of-");
  const std::string prefix = split == std::string::npos ? stem : stem.substr(0, split);
  for (const auto& e : std::filesystem::directory_iterator(src.parent_path())) {
    const std::string f = e.path().filename().string();
    if (f == stem || (split != std::string::npos && f.rfind(prefix + "-", 0) == 0 && f.size() > 5 &&
                      f.substr(f.size() - 5) == ".gguf")) {
      std::filesystem::copy_file(e.path(), std::filesystem::path(dir) / f,
                                 std::filesystem::copy_options::overwrite_existing);
    }
  }
  return (std::filesystem::path(dir) / stem).string();
}

// Flips one byte of a file at `offset`.
inline void FlipByte(const std::string& path, uint64_t offset) {
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  uint8_t b = 0;
  ASSERT_EQ(::pread(fd, &b, 1, static_cast<off_t>(offset)), 1);
  b ^= 0x5A;
  ASSERT_EQ(::pwrite(fd, &b, 1, static_cast<off_t>(offset)), 1);
  ::close(fd);
}

inline uint64_t FileSize(const std::string& path) { return std::filesystem::file_size(path); }

// Runs a fixed script through `model` and returns every logit it produced, in order: a 13-token
// prompt with logits after every token, six greedy decode steps, then a two-sequence step (one
// more prefill next to one decode).
inline std::vector<float> RunScript(Model& model) {
  std::vector<float> all;
  auto keep = [&](const StepOutput& out) {
    all.insert(all.end(), out.logits.begin(), out.logits.end());
  };
  auto cache = model.NewKvCache(64);
  EXPECT_TRUE(cache.ok()) << cache.status();
  if (!cache.ok()) return all;
  const std::vector<int32_t> prompt = {1, 5, 9, 300, 77, 12, 1000, 3, 500, 42, 42, 7, 800};
  StepOutput out;
  absl::Status st = model.Step({{cache->get(), prompt, LogitsRequest::kAll}}, &out);
  EXPECT_TRUE(st.ok()) << st;
  if (!st.ok()) return all;
  keep(out);
  for (int i = 0; i < 6; ++i) {
    const float* row = out.Row(0, out.n_rows[0] - 1);
    int32_t next = static_cast<int32_t>(std::max_element(row, row + out.n_vocab) - row);
    st = model.Step({{cache->get(), {&next, 1}, LogitsRequest::kLast}}, &out);
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return all;
    keep(out);
  }
  auto second = model.NewKvCache(64);
  const std::vector<int32_t> other = {2, 4, 600, 31, 31, 900};
  int32_t tok = 11;
  st = model.Step({{second->get(), other, LogitsRequest::kAll}, {cache->get(), {&tok, 1}}}, &out);
  EXPECT_TRUE(st.ok()) << st;
  if (st.ok()) keep(out);
  return all;
}

// Bitwise equality of two logit arrays, with the first difference in the message.
inline ::testing::AssertionResult SameBits(const std::vector<float>& a,
                                           const std::vector<float>& b) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << "sizes " << a.size() << " vs " << b.size();
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      return ::testing::AssertionFailure() << "logit " << i << ": " << a[i] << " vs " << b[i];
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace tritmoe::testing
