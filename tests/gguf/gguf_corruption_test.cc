// Table-driven corruption of golden_small.gguf: every corruption must make Open fail with a
// message naming the file and what is wrong, and no input may crash the reader (run under ASan).
#include <algorithm>
#include <cstring>
#include <functional>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/gguf/gguf.h"
#include "tests/gguf/gguf_test_util.h"

namespace tritmoe::gguf {
namespace {

using Bytes = std::vector<uint8_t>;
using ::testing::HasSubstr;

// Layout facts of the golden file, from its annotation.
constexpr size_t kGoldenSize = 2080;
constexpr size_t kInfosEnd = 0x487;                  // end of the last tensor info
constexpr size_t kDataStart = 1184;                  // data section (aligned to 32)
constexpr size_t kLastTensorEnd = 1184 + 768 + 102;  // end of the last tensor's bytes

template <typename T>
void Patch(Bytes& b, size_t at, T v) {
  ASSERT_LE(at + sizeof(T), b.size());
  std::memcpy(b.data() + at, &v, sizeof(T));
}

// Offset just past the first occurrence of `s` in the file (names and keys are unique).
size_t After(const Bytes& b, const std::string& s) {
  auto it = std::search(b.begin(), b.end(), s.begin(), s.end());
  EXPECT_NE(it, b.end()) << s;
  return static_cast<size_t>(it - b.begin()) + s.size();
}
// Offset of the string itself, i.e. of its first character.
size_t At(const Bytes& b, const std::string& s) { return After(b, s) - s.size(); }

// Field offsets of the tensor info named `name`.
struct InfoFields {
  size_t n_dims, ne, type, offset;
};
InfoFields Tensor(const Bytes& b, const std::string& name) {
  InfoFields f;
  f.n_dims = After(b, name);
  uint32_t n = 0;
  std::memcpy(&n, b.data() + f.n_dims, 4);
  f.ne = f.n_dims + 4;
  f.type = f.ne + 8 * n;
  f.offset = f.type + 4;
  return f;
}

std::string GgufStr(const std::string& s) {
  std::string out(8, '\0');
  const uint64_t n = s.size();
  std::memcpy(out.data(), &n, 8);
  return out + s;
}

// Replaces the gguf_string `old_str` (length field + bytes) in the metadata with `repl` and
// re-pads so the data section starts at the next multiple of 32 after the tensor infos; tensor
// offsets are relative to the data section, so the file stays valid apart from the change.
Bytes Splice(const Bytes& b, const std::string& old_str, const std::string& repl) {
  const size_t at = At(b, old_str) - 8;
  const size_t len = 8 + old_str.size();
  Bytes out(b.begin(), b.begin() + at);
  out.insert(out.end(), repl.begin(), repl.end());
  out.insert(out.end(), b.begin() + at + len, b.begin() + kInfosEnd);
  out.resize(PadTo(out.size(), 32), 0);
  out.insert(out.end(), b.begin() + kDataStart, b.end());
  return out;
}

struct Corruption {
  std::string name;
  std::function<void(Bytes&)> apply;
  std::vector<std::string> words;  // all must appear in the message
};

std::vector<Corruption> Corruptions() {
  return {
      {"bad_magic", [](Bytes& b) { b[0] = 'X'; }, {"bad magic", "expected 'GGUF'"}},
      {"version_1", [](Bytes& b) { Patch<uint32_t>(b, 4, 1); }, {"version 1", "not supported"}},
      {"version_4", [](Bytes& b) { Patch<uint32_t>(b, 4, 4); }, {"unsupported GGUF version 4"}},
      {"version_0", [](Bytes& b) { Patch<uint32_t>(b, 4, 0); }, {"unsupported GGUF version 0"}},
      {"big_endian", [](Bytes& b) { Patch<uint32_t>(b, 4, 0x03000000); }, {"big-endian"}},
      {"huge_n_kv",
       [](Bytes& b) { Patch<int64_t>(b, 16, int64_t{1} << 40); },
       {"absurd n_kv = 1099511627776"}},
      {"max_n_kv", [](Bytes& b) { Patch<uint64_t>(b, 16, ~uint64_t{0}); }, {"negative n_kv"}},
      {"negative_n_tensors", [](Bytes& b) { Patch<int64_t>(b, 8, -1); }, {"negative n_tensors"}},
      {"huge_n_tensors",
       [](Bytes& b) { Patch<int64_t>(b, 8, int64_t{1} << 40); },
       {"absurd n_tensors"}},
      {"one_more_tensor",
       [](Bytes& b) { Patch<int64_t>(b, 8, 7); },
       {"tensor info #6", "empty tensor name"}},
      {"huge_key_length",
       [](Bytes& b) { Patch<uint64_t>(b, 0x18, uint64_t{1} << 40); },
       {"key/value record #0", "exceeds the limit"}},
      {"key_length_past_end",
       [](Bytes& b) { Patch<uint64_t>(b, 0x18, 1 << 20); },
       {"key/value record #0", "truncated"}},
      {"huge_string_value",
       [](Bytes& b) { Patch<uint64_t>(b, After(b, "general.name") + 4, uint64_t{1} << 31); },
       {"key 'general.name'", "exceeds the limit"}},
      {"unknown_value_type",
       [](Bytes& b) { Patch<int32_t>(b, After(b, "general.architecture"), 13); },
       {"key 'general.architecture'", "unknown value type 13"}},
      {"negative_value_type",
       [](Bytes& b) { Patch<int32_t>(b, After(b, "test.u16"), -1); },
       {"key 'test.u16'", "unknown value type -1"}},
      {"nested_array",
       [](Bytes& b) { Patch<int32_t>(b, After(b, "test.arr_f32") + 4, 9); },
       {"key 'test.arr_f32'", "nested arrays"}},
      {"unknown_element_type",
       [](Bytes& b) { Patch<int32_t>(b, After(b, "test.arr_f32") + 4, 77); },
       {"key 'test.arr_f32'", "unknown array element type 77"}},
      {"huge_array_count",
       [](Bytes& b) {
         Patch<uint64_t>(b, After(b, "tokenizer.ggml.tokens") + 8, uint64_t{1} << 31);
       },
       {"key 'tokenizer.ggml.tokens'", "absurd array count"}},
      {"array_count_past_end",
       [](Bytes& b) { Patch<uint64_t>(b, After(b, "test.arr_bool") + 8, 5000); },
       {"key 'test.arr_bool'", "absurd array count 5000"}},
      {"duplicate_key",
       [](Bytes& b) { b[After(b, "test.i8") - 2] = 'u'; },
       {"duplicate key 'test.u8'"}},
      // general.file_type (uint32 24) renamed to general.alignment, which has the same length.
      {"alignment_not_power_of_two",
       [](Bytes& b) {
         std::memcpy(b.data() + At(b, "general.file_type"), "general.alignment", 17);
       },
       {"general.alignment", "24", "power of two"}},
      {"alignment_zero",
       [](Bytes& b) {
         const size_t at = At(b, "general.file_type");
         std::memcpy(b.data() + at, "general.alignment", 17);
         Patch<uint32_t>(b, at + 17 + 4, 0);
       },
       {"general.alignment", "power of two"}},
      {"alignment_wrong_type",
       [](Bytes& b) {
         const size_t at = At(b, "general.file_type");
         std::memcpy(b.data() + at, "general.alignment", 17);
         Patch<int32_t>(b, at + 17, 5);  // int32
       },
       {"general.alignment", "int32", "expected uint32"}},
      {"unknown_tensor_type",
       [](Bytes& b) { Patch<uint32_t>(b, Tensor(b, "output.weight").type, 64); },
       {"tensor 'output.weight'", "type 64 (unknown)"}},
      {"removed_tensor_type",
       [](Bytes& b) { Patch<uint32_t>(b, Tensor(b, "output.weight").type, 4); },
       {"tensor 'output.weight'", "type 4 (unknown)"}},
      {"unsupported_tensor_type",
       [](Bytes& b) { Patch<uint32_t>(b, Tensor(b, "output.weight").type, 20); },
       {"tensor 'output.weight'", "type 20 (IQ4_NL) is not supported"}},
      {"bad_ne0_for_block",
       [](Bytes& b) { Patch<int64_t>(b, Tensor(b, "blk.3.ffn_gate_exps.weight").ne, 500); },
       {"tensor 'blk.3.ffn_gate_exps.weight'", "ne0 = 500", "IQ1_S block size 256"}},
      {"n_dims_0",
       [](Bytes& b) { Patch<uint32_t>(b, Tensor(b, "token_embd.weight").n_dims, 0); },
       {"tensor 'token_embd.weight'", "n_dims = 0"}},
      {"n_dims_5",
       [](Bytes& b) { Patch<uint32_t>(b, Tensor(b, "token_embd.weight").n_dims, 5); },
       {"tensor 'token_embd.weight'", "n_dims = 5"}},
      {"negative_dim",
       [](Bytes& b) { Patch<int64_t>(b, Tensor(b, "blk.0.attn_norm.weight").ne, -7); },
       {"tensor 'blk.0.attn_norm.weight'", "negative dimension ne[0] = -7"}},
      {"element_count_overflow",
       [](Bytes& b) { Patch<int64_t>(b, Tensor(b, "output.weight").ne + 8, int64_t{1} << 62); },
       {"tensor 'output.weight'", "element count overflows"}},
      {"byte_count_overflow",
       [](Bytes& b) {
         Patch<int64_t>(b, Tensor(b, "blk.0.attn_norm.weight").ne, int64_t{1} << 61);
       },
       {"tensor 'blk.0.attn_norm.weight'", "byte size overflows"}},
      {"offset_out_of_range",
       [](Bytes& b) {
         Patch<uint64_t>(b, Tensor(b, "blk.0.attn_q_a.weight").offset, uint64_t{1} << 40);
       },
       {"tensor 'blk.0.attn_q_a.weight'", "out of range"}},
      {"offset_near_end",
       [](Bytes& b) { Patch<uint64_t>(b, Tensor(b, "blk.0.attn_q_a.weight").offset, 800); },
       {"tensor 'blk.0.attn_q_a.weight'", "out of range", "size 2080"}},
      {"offset_gap",
       [](Bytes& b) { Patch<uint64_t>(b, Tensor(b, "blk.0.attn_norm.weight").offset, 448); },
       {"tensor 'blk.0.attn_norm.weight'", "not sequential", "expected 416", "gap"}},
      {"offset_overlap",
       [](Bytes& b) { Patch<uint64_t>(b, Tensor(b, "output.weight").offset, 448); },
       {"tensor 'output.weight'", "not sequential", "expected 576", "overlaps"}},
      {"offset_misaligned",
       [](Bytes& b) { Patch<uint64_t>(b, Tensor(b, "blk.0.attn_norm.weight").offset, 400); },
       {"tensor 'blk.0.attn_norm.weight'", "not sequential"}},
      {"duplicate_tensor_name",
       [](Bytes& b) {
         b = Splice(b, "blk.0.attn_norm.weight", GgufStr("blk.3.ffn_gate_exps.weight"));
       },
       {"duplicate tensor name 'blk.3.ffn_gate_exps.weight'"}},
      {"tensor_name_64_bytes",
       [](Bytes& b) { b = Splice(b, "output.weight", GgufStr(std::string(64, 'n'))); },
       {"tensor info #3", "64 bytes is too long"}},
      {"empty_tensor_name",
       [](Bytes& b) { b = Splice(b, "output.weight", GgufStr("")); },
       {"tensor info #3", "empty tensor name"}},
      {"empty_key",
       [](Bytes& b) { b = Splice(b, "test.u16", GgufStr("")); },
       {"key/value record #6", "empty key"}},
      {"truncated_in_data",
       [](Bytes& b) { b.resize(kLastTensorEnd - 1); },
       {"tensor 'blk.0.attn_q_a.weight'", "past the end of the file"}},
      {"truncated_in_kv", [](Bytes& b) { b.resize(0x300); }, {"truncated"}},
      {"empty_file", [](Bytes& b) { b.clear(); }, {"truncated", "magic"}},
  };
}

TEST(GgufCorruptionTest, GoldenOpensUnmodified) {
  const Bytes golden = testing::ReadBytes(testing::GoldenPath());
  ASSERT_EQ(golden.size(), kGoldenSize);
  EXPECT_TRUE(GgufFile::OpenFromBuffer(golden.data(), golden.size(), "golden").ok());
}

// The splice helper itself keeps the file valid: a 63-byte (maximum) name is accepted.
TEST(GgufCorruptionTest, SpliceControlIsValid) {
  const Bytes golden = testing::ReadBytes(testing::GoldenPath());
  const std::string name63(63, 'n');
  Bytes b = Splice(golden, "output.weight", GgufStr(name63));
  auto f = GgufFile::OpenFromBuffer(b.data(), b.size(), "spliced");
  ASSERT_TRUE(f.ok()) << f.status();
  const TensorInfo* t = (*f)->FindTensor(name63);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(0, std::memcmp((*f)->TensorData(*t), golden.data() + kDataStart + 576, 30));
}

TEST(GgufCorruptionTest, EachCorruptionIsRejectedWithAClearMessage) {
  const Bytes golden = testing::ReadBytes(testing::GoldenPath());
  const std::string dir = testing::ScratchDir();
  for (const Corruption& c : Corruptions()) {
    SCOPED_TRACE(c.name);
    Bytes b = golden;
    c.apply(b);
    const std::string path = dir + "/" + c.name + ".gguf";
    testing::WriteBytes(path, b);
    auto m = GgufModel::Open(path);
    ASSERT_FALSE(m.ok());
    EXPECT_TRUE(absl::IsInvalidArgument(m.status())) << m.status();
    const std::string msg(m.status().message());
    EXPECT_THAT(msg, HasSubstr(path));
    for (const std::string& w : c.words) EXPECT_THAT(msg, HasSubstr(w));
  }
}

// Every truncation fails, except those that cut only the padding after the last tensor (which
// the reader, like llama.cpp's model loader, does not require).
TEST(GgufCorruptionTest, EveryTruncationFails) {
  const Bytes golden = testing::ReadBytes(testing::GoldenPath());
  for (size_t n = 0; n < golden.size(); ++n) {
    auto f = GgufFile::OpenFromBuffer(golden.data(), n, "cut.gguf");
    if (n >= kLastTensorEnd) {
      EXPECT_TRUE(f.ok()) << n << ": " << f.status();
      continue;
    }
    ASSERT_FALSE(f.ok()) << "truncated at " << n;
    const std::string msg(f.status().message());
    EXPECT_THAT(msg, HasSubstr("cut.gguf")) << n;
    EXPECT_THAT(msg, ::testing::AnyOf(HasSubstr("truncated"), HasSubstr("absurd"),
                                      HasSubstr("past the end")))
        << n << ": " << msg;
  }
}

// Through the file path too (mmap), at a few offsets including an empty file.
TEST(GgufCorruptionTest, TruncatedFilesOnDisk) {
  const Bytes golden = testing::ReadBytes(testing::GoldenPath());
  const std::string dir = testing::ScratchDir();
  for (size_t n : {size_t{0}, size_t{3}, size_t{23}, size_t{24}, size_t{500}, kInfosEnd, kDataStart,
                   kLastTensorEnd - 1}) {
    const std::string path = dir + "/cut_" + std::to_string(n) + ".gguf";
    testing::WriteBytes(path, Bytes(golden.begin(), golden.begin() + n));
    auto f = GgufFile::Open(path);
    ASSERT_FALSE(f.ok()) << n;
    EXPECT_THAT(std::string(f.status().message()), HasSubstr(path));
  }
}

// Single-byte damage anywhere in the metadata: the reader may accept (e.g. a changed string
// byte) or reject, but must never crash or read out of bounds.
TEST(GgufCorruptionTest, ByteFlipsNeverCrash) {
  const Bytes golden = testing::ReadBytes(testing::GoldenPath());
  int rejected = 0;
  for (size_t i = 0; i < kDataStart; ++i) {
    for (uint8_t v : {uint8_t{0x00}, uint8_t{0xff}, uint8_t{0x80}}) {
      Bytes b = golden;
      b[i] = v;
      auto f = GgufFile::OpenFromBuffer(b.data(), b.size(), "flip.gguf");
      if (!f.ok()) {
        ++rejected;
        EXPECT_THAT(std::string(f.status().message()), HasSubstr("flip.gguf"));
      }
    }
  }
  EXPECT_GT(rejected, 500);
}

}  // namespace
}  // namespace tritmoe::gguf
