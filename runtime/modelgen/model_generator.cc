#include "runtime/modelgen/model_generator.h"

#include <cmath>
#include <cstring>
#include <algorithm>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/thread_pool.h"
#include "experts/quantize.h"
#include "runtime/gguf/gguf_writer.h"
#include "runtime/text/synthetic_vocab.h"

namespace tritmoe {
namespace {

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t HashName(const std::string& s, uint64_t seed) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Fills `n` floats with N(mean, stddev) from a counter-based stream (state advanced in place).
void FillGaussian(uint64_t& state, float mean, float stddev, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += 2) {
    double u1 = (static_cast<double>(SplitMix64(state) >> 11) + 0.5) * 0x1.0p-53;
    double u2 = (static_cast<double>(SplitMix64(state) >> 11) + 0.5) * 0x1.0p-53;
    double r = std::sqrt(-2.0 * std::log(u1));
    out[i] = static_cast<float>(mean + stddev * r * std::cos(2 * M_PI * u2));
    if (i + 1 < n) out[i + 1] = static_cast<float>(mean + stddev * r * std::sin(2 * M_PI * u2));
  }
}

// How the values of one tensor are drawn.
struct Init {
  float mean = 0.0f;
  float stddev = 0.02f;
};

class Generator {
 public:
  Generator(const ModelShape& shape, const QuantRecipe& recipe, const GenerateOptions& options)
      : shape_(shape), recipe_(recipe), options_(options), pool_(options.threads) {}

  absl::Status Build(gguf::GgufWriter& w);

 private:
  // Adds one tensor of `ne` whose rows (ne0 each, all higher dims flattened) are drawn from init.
  absl::Status AddTensor(gguf::GgufWriter& w, const std::string& name, std::vector<int64_t> ne,
                         int layer, Init init);
  absl::Status FillRows(const std::string& name, GgmlType type, int64_t ne0, int64_t n_rows,
                        Init init, uint8_t* dst);

  const ModelShape& shape_;
  const QuantRecipe& recipe_;
  const GenerateOptions& options_;
  ThreadPool pool_;
};

absl::Status Generator::FillRows(const std::string& name, GgmlType type, int64_t ne0,
                                 int64_t n_rows, Init init, uint8_t* dst) {
  const int64_t row_bytes = RowBytes(type, ne0);
  const uint64_t base_seed = HashName(name, options_.seed);
  const bool tiled =
      options_.tile_threshold_elems > 0 && ne0 * n_rows > options_.tile_threshold_elems;
  // Rows quantized for real; with tiling, a pool that the other rows copy from.
  const int64_t n_real = tiled ? std::min<int64_t>(n_rows, 512) : n_rows;
  std::vector<float> ones(ne0, 1.0f);  // uniform importance: random weights have no salient columns
  const float* imatrix = GetTypeTraits(type).uses_imatrix ? ones.data() : nullptr;
  absl::Status status = absl::OkStatus();
  std::mutex mu;
  constexpr int64_t kChunk = 16;  // rows per task: bounds the float scratch per thread
  pool_.ParallelFor((n_real + kChunk - 1) / kChunk, 1, [&](int64_t b, int64_t e, int) {
    std::vector<float> buf(kChunk * ne0);
    for (int64_t c = b; c < e; ++c) {
      const int64_t r0 = c * kChunk, nr = std::min(kChunk, n_real - r0);
      for (int64_t r = 0; r < nr; ++r) {
        uint64_t state = base_seed ^ (static_cast<uint64_t>(r0 + r) * 0xd1342543de82ef95ull);
        FillGaussian(state, init.mean, init.stddev, buf.data() + r * ne0, ne0);
      }
      absl::Status st = QuantizeRows(type, buf.data(), dst + r0 * row_bytes, nr, ne0, imatrix);
      if (!st.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        status = st;
      }
    }
  });
  RETURN_IF_ERROR(status);
  if (tiled) {
    uint64_t state = base_seed ^ 0x5bd1e995ull;
    for (int64_t r = n_real; r < n_rows; ++r) {
      const int64_t src = static_cast<int64_t>(SplitMix64(state) % n_real);
      std::memcpy(dst + r * row_bytes, dst + src * row_bytes, row_bytes);
    }
  }
  return absl::OkStatus();
}

absl::Status Generator::AddTensor(gguf::GgufWriter& w, const std::string& name,
                                  std::vector<int64_t> ne, int layer, Init init) {
  const GgmlType type = recipe_.TypeFor(name, ne[0], layer, shape_.n_leading_dense);
  int64_t n_rows = 1;
  for (size_t i = 1; i < ne.size(); ++i) n_rows *= ne[i];
  const int64_t ne0 = ne[0];
  return w.AddTensor(name, type, ne, [this, name, type, ne0, n_rows, init](uint8_t* dst) {
    return FillRows(name, type, ne0, n_rows, init, dst);
  });
}

absl::Status Generator::Build(gguf::GgufWriter& w) {
  const ModelShape& s = shape_;
  const bool mla = s.layout == AttentionLayout::kMla;
  const std::string arch = "deepseek2";
  auto key = [&](const char* k) { return absl::StrCat(arch, ".", k); };

  w.SetString("general.architecture", arch);
  w.SetString("general.type", "model");
  w.SetString("general.name", absl::StrCat("TritMoE synthetic ", s.name, " (", recipe_.name(),
                                           ", seed ", options_.seed, ")"));
  w.SetUint32("general.file_type", recipe_.file_type());
  w.SetUint32("general.quantization_version", 2);
  w.SetUint32(key("block_count"), s.n_layers);
  w.SetUint32(key("context_length"), s.context_length);
  w.SetUint32(key("embedding_length"), s.n_embd);
  w.SetUint32(key("feed_forward_length"), s.n_ff);
  w.SetUint32(key("attention.head_count"), s.n_head);
  w.SetUint32(key("attention.head_count_kv"), mla ? 1 : s.n_head);
  w.SetFloat32(key("attention.layer_norm_rms_epsilon"), 1e-6f);
  w.SetUint32(key("attention.q_lora_rank"), s.q_lora_rank);
  w.SetUint32(key("attention.kv_lora_rank"), s.kv_lora_rank);
  if (mla) {
    w.SetUint32(key("attention.key_length"), s.kv_lora_rank + s.qk_rope);
    w.SetUint32(key("attention.value_length"), s.kv_lora_rank);
    w.SetUint32(key("attention.key_length_mla"), s.qk_nope + s.qk_rope);
    w.SetUint32(key("attention.value_length_mla"), s.v_head);
  } else {
    w.SetUint32(key("attention.key_length"), s.qk_nope + s.qk_rope);
    w.SetUint32(key("attention.value_length"), s.v_head);
  }
  w.SetUint32(key("rope.dimension_count"), s.qk_rope);
  w.SetFloat32(key("rope.freq_base"), 10000.0f);
  w.SetString(key("rope.scaling.type"), "yarn");
  w.SetFloat32(key("rope.scaling.factor"), 40.0f);
  w.SetUint32(key("rope.scaling.original_context_length"), 4096);
  w.SetFloat32(key("rope.scaling.yarn_log_multiplier"), 0.1f);
  w.SetUint32(key("leading_dense_block_count"), s.n_leading_dense);
  w.SetUint32(key("vocab_size"), s.n_vocab);
  w.SetUint32(key("expert_count"), s.n_expert);
  w.SetUint32(key("expert_used_count"), s.n_expert_used);
  w.SetUint32(key("expert_shared_count"), s.n_expert_shared);
  w.SetUint32(key("expert_feed_forward_length"), s.n_ff_exp);
  w.SetFloat32(key("expert_weights_scale"), 2.5f);
  w.SetBool(key("expert_weights_norm"), true);
  w.SetUint32(key("expert_gating_func"), 2);
  if (s.n_group > 0) {
    w.SetUint32(key("expert_group_count"), s.n_group);
    w.SetUint32(key("expert_group_used_count"), s.n_group_used);
  }

  ASSIGN_OR_RETURN(VocabData vocab, MakeSyntheticVocab(s.n_vocab, options_.seed));
  w.SetString("tokenizer.ggml.model", "gpt2");
  w.SetString("tokenizer.ggml.pre", "deepseek-v3");
  w.SetStringArray("tokenizer.ggml.tokens", vocab.tokens);
  w.SetInt32Array("tokenizer.ggml.token_type", vocab.token_types);
  w.SetStringArray("tokenizer.ggml.merges", vocab.merges);
  w.SetUint32("tokenizer.ggml.bos_token_id", vocab.bos_id);
  w.SetUint32("tokenizer.ggml.eos_token_id", vocab.eos_id);
  if (vocab.pad_id >= 0) w.SetUint32("tokenizer.ggml.padding_token_id", vocab.pad_id);
  w.SetBool("tokenizer.ggml.add_bos_token", true);
  w.SetBool("tokenizer.ggml.add_eos_token", false);

  // Scales keep activations O(1) through the random network: weights ~ N(0, 1/fan_in); norms ~ 1.
  auto mat = [](int64_t fan_in) { return Init{0.0f, 1.0f / std::sqrt(static_cast<float>(fan_in))}; };
  const Init norm{1.0f, 0.05f};
  const int64_t e = s.n_embd, qk = s.qk_nope + s.qk_rope;
  RETURN_IF_ERROR(AddTensor(w, "token_embd.weight", {e, s.n_vocab}, -1, Init{0.0f, 1.0f}));
  for (int il = 0; il < s.n_layers; ++il) {
    auto name = [&](const char* t) { return absl::StrCat("blk.", il, ".", t); };
    RETURN_IF_ERROR(AddTensor(w, name("attn_norm.weight"), {e}, il, norm));
    RETURN_IF_ERROR(AddTensor(w, name("attn_q_a.weight"), {e, s.q_lora_rank}, il, mat(e)));
    RETURN_IF_ERROR(AddTensor(w, name("attn_q_a_norm.weight"), {s.q_lora_rank}, il, norm));
    RETURN_IF_ERROR(AddTensor(w, name("attn_q_b.weight"), {s.q_lora_rank, int64_t{s.n_head} * qk},
                              il, mat(s.q_lora_rank)));
    RETURN_IF_ERROR(AddTensor(w, name("attn_kv_a_mqa.weight"), {e, s.kv_lora_rank + s.qk_rope},
                              il, mat(e)));
    RETURN_IF_ERROR(AddTensor(w, name("attn_kv_a_norm.weight"), {s.kv_lora_rank}, il, norm));
    if (mla) {
      RETURN_IF_ERROR(AddTensor(w, name("attn_k_b.weight"), {s.qk_nope, s.kv_lora_rank, s.n_head},
                                il, mat(s.kv_lora_rank)));
      RETURN_IF_ERROR(AddTensor(w, name("attn_v_b.weight"), {s.kv_lora_rank, s.v_head, s.n_head},
                                il, mat(s.kv_lora_rank)));
    } else {
      RETURN_IF_ERROR(AddTensor(w, name("attn_kv_b.weight"),
                                {s.kv_lora_rank, int64_t{s.n_head} * (s.qk_nope + s.v_head)}, il,
                                mat(s.kv_lora_rank)));
    }
    RETURN_IF_ERROR(AddTensor(w, name("attn_output.weight"), {int64_t{s.n_head} * s.v_head, e}, il,
                              mat(int64_t{s.n_head} * s.v_head)));
    RETURN_IF_ERROR(AddTensor(w, name("ffn_norm.weight"), {e}, il, norm));
    if (il < s.n_leading_dense) {
      RETURN_IF_ERROR(AddTensor(w, name("ffn_gate.weight"), {e, s.n_ff}, il, mat(e)));
      RETURN_IF_ERROR(AddTensor(w, name("ffn_up.weight"), {e, s.n_ff}, il, mat(e)));
      RETURN_IF_ERROR(AddTensor(w, name("ffn_down.weight"), {s.n_ff, e}, il, mat(s.n_ff)));
      continue;
    }
    RETURN_IF_ERROR(AddTensor(w, name("ffn_gate_inp.weight"), {e, s.n_expert}, il, mat(e)));
    RETURN_IF_ERROR(AddTensor(w, name("exp_probs_b.bias"), {s.n_expert}, il, Init{0.0f, 0.1f}));
    RETURN_IF_ERROR(AddTensor(w, name("ffn_gate_exps.weight"), {e, s.n_ff_exp, s.n_expert}, il,
                              mat(e)));
    RETURN_IF_ERROR(AddTensor(w, name("ffn_up_exps.weight"), {e, s.n_ff_exp, s.n_expert}, il,
                              mat(e)));
    RETURN_IF_ERROR(AddTensor(w, name("ffn_down_exps.weight"), {s.n_ff_exp, e, s.n_expert}, il,
                              mat(s.n_ff_exp)));
    const int64_t sh = int64_t{s.n_ff_exp} * s.n_expert_shared;
    RETURN_IF_ERROR(AddTensor(w, name("ffn_gate_shexp.weight"), {e, sh}, il, mat(e)));
    RETURN_IF_ERROR(AddTensor(w, name("ffn_up_shexp.weight"), {e, sh}, il, mat(e)));
    RETURN_IF_ERROR(AddTensor(w, name("ffn_down_shexp.weight"), {sh, e}, il, mat(sh)));
  }
  RETURN_IF_ERROR(AddTensor(w, "output_norm.weight", {e}, -1, norm));
  RETURN_IF_ERROR(AddTensor(w, "output.weight", {e, s.n_vocab}, -1, mat(e)));
  return absl::OkStatus();
}

}  // namespace

absl::Status GenerateModel(const ModelShape& shape, const QuantRecipe& recipe,
                           const GenerateOptions& options, const std::string& path) {
  RETURN_IF_ERROR(shape.Validate());
  Generator gen(shape, recipe, options);
  gguf::GgufWriter writer;
  RETURN_IF_ERROR(gen.Build(writer));
  if (options.max_tensors_per_shard > 0) {
    std::string prefix = path;
    if (prefix.size() > 5 && prefix.compare(prefix.size() - 5, 5, ".gguf") == 0)
      prefix.resize(prefix.size() - 5);
    return writer.WriteSplit(prefix, options.max_tensors_per_shard);
  }
  return writer.Write(path);
}

}  // namespace tritmoe
