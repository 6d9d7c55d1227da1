// Writes a few small, valid GGUF files with the writer as extra seeds for the fuzz corpus: a
// split shard set, a file with a custom alignment, and a deepseek2-shaped file with every value
// type. Usage: make_seeds DIR
#include <cstdio>
#include <cstring>
#include <string>

#include "runtime/gguf/gguf_writer.h"

namespace {

using tritmoe::GgmlType;
using tritmoe::gguf::GgufWriter;

// Fills the tensor's exact byte size (RowBytes * rows) with a counting pattern.
GgufWriter::FillFn Pattern(uint8_t seed, GgmlType type, const std::vector<int64_t>& ne) {
  int64_t n = tritmoe::RowBytes(type, ne[0]);
  for (size_t d = 1; d < ne.size(); ++d) n *= ne[d];
  return [seed, n](uint8_t* dst) {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<uint8_t>(seed + i);
    return absl::OkStatus();
  };
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "make_seeds: %s\n", std::string(s.message()).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  {
    GgufWriter w;
    w.SetString("general.architecture", "deepseek2");
    w.SetString("general.name", "seed");
    w.SetUint32("general.file_type", 24);
    w.SetUint32("deepseek2.block_count", 2);
    w.SetUint16("test.u16", 7);
    w.SetInt64("test.i64", -1);
    w.SetFloat64("test.f64", 0.25);
    w.SetUint8("test.u8", 1);
    w.SetInt8("test.i8", -1);
    w.SetInt16("test.i16", -2);
    w.SetUint64("test.u64", 3);
    w.SetBool("deepseek2.expert_weights_norm", true);
    w.SetFloat32("deepseek2.expert_weights_scale", 2.5f);
    w.SetStringArray("tokenizer.ggml.tokens", {"a", "b", ""});
    w.SetInt32Array("tokenizer.ggml.token_type", {1, 3, 6});
    w.SetFloat32Array("test.f32s", {1.0f, -0.5f});
    const struct {
      const char* name;
      GgmlType type;
      std::vector<int64_t> ne;
    } ts[] = {
        {"token_embd.weight", GgmlType::kQ8_0, {32, 3}},
        {"blk.0.attn_kv_b.weight", GgmlType::kF16, {8, 4}},
        {"blk.1.attn_k_b.weight", GgmlType::kQ8_0, {32, 2, 2}},
        {"blk.1.attn_v_b.weight", GgmlType::kBF16, {2, 4, 2}},
        {"blk.1.ffn_gate_exps.weight", GgmlType::kIQ1_S, {256, 1, 2}},
        {"blk.1.ffn_down_exps.weight", GgmlType::kTQ1_0, {256, 1, 1}},
        {"output_norm.weight", GgmlType::kF32, {5}},
    };
    uint8_t seed = 1;
    for (const auto& t : ts) {
      absl::Status s = w.AddTensor(t.name, t.type, t.ne, Pattern(seed++, t.type, t.ne));
      if (!s.ok()) return Fail(s);
    }
    absl::Status s = w.Write(dir + "/deepseek2_small.gguf");
    if (s.ok()) s = w.WriteSplit(dir + "/split", 3);
    if (!s.ok()) return Fail(s);
  }
  {
    GgufWriter w;
    w.SetUint32("general.alignment", 64);
    absl::Status s = w.AddTensor("a", GgmlType::kF32, {16}, Pattern(9, GgmlType::kF32, {16}));
    if (s.ok()) s = w.AddTensor("b", GgmlType::kQ4_K, {256}, Pattern(10, GgmlType::kQ4_K, {256}));
    if (s.ok()) s = w.Write(dir + "/align64.gguf");
    if (!s.ok()) return Fail(s);
  }
  return 0;
}
