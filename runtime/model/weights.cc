#include "runtime/model/weights.h"

#include <algorithm>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "experts/dequantize.h"

namespace tritmoe {

WeightView MatrixStack::At(int64_t i) const {
  TM_CHECK(i >= 0 && i < count) << "matrix " << i << " of " << count;
  return WeightView{type, data + Offset(i), rows, cols};
}

namespace {

std::string ShapeString(const std::vector<int64_t>& ne) {
  return absl::StrCat("[", absl::StrJoin(ne, ", "), "]");
}

// Looks tensors up by name and checks their shapes against the config.
class Binder {
 public:
  Binder(const gguf::GgufModel& model) : model_(model) {}

  bool Has(const std::string& name) const { return model_.FindTensor(name) != nullptr; }

  // The tensor, which must exist with exactly the dims `ne` (trailing 1s in the file ignored).
  absl::StatusOr<const gguf::TensorInfo*> Expect(const std::string& name,
                                                 std::initializer_list<int64_t> ne_list) {
    const std::vector<int64_t> ne(ne_list);
    const gguf::TensorInfo* t = model_.FindTensor(name);
    if (t == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(model_.path(), ": missing tensor ", name,
                                                     ", expected ne ", ShapeString(ne)));
    }
    bool ok = true;
    for (int d = 0; d < 4; ++d) {
      const int64_t want = d < static_cast<int>(ne.size()) ? ne[d] : 1;
      if (t->ne[d] != want) ok = false;
    }
    if (!ok) {
      std::vector<int64_t> got(t->ne.begin(), t->ne.begin() + std::max(1, t->n_dims));
      return absl::InvalidArgumentError(absl::StrCat(model_.path(), ": tensor ", name, " has ne ",
                                                     ShapeString(got), ", expected ",
                                                     ShapeString(ne), " from the metadata"));
    }
    return t;
  }

  absl::StatusOr<WeightView> Matrix(const std::string& name, int64_t cols, int64_t rows) {
    ASSIGN_OR_RETURN(const gguf::TensorInfo* t, Expect(name, {cols, rows}));
    return WeightView{t->type, model_.TensorData(*t), rows, cols};
  }

  absl::StatusOr<std::vector<float>> Vector(const std::string& name, int64_t n) {
    ASSIGN_OR_RETURN(const gguf::TensorInfo* t, Expect(name, {n}));
    std::vector<float> v(n);
    DequantizeRow(t->type, model_.TensorData(*t), v.data(), n);
    return v;
  }

  // A 3-D tensor ne [cols, rows, count]: one matrix per ne2 index.
  absl::StatusOr<MatrixStack> Stack(const std::string& name, int64_t cols, int64_t rows,
                                    int64_t count) {
    ASSIGN_OR_RETURN(const gguf::TensorInfo* t, Expect(name, {cols, rows, count}));
    MatrixStack s{t->type, model_.TensorData(*t), rows, cols, count, 0};
    s.stride_bytes = s.matrix_bytes();
    return s;
  }

  absl::StatusOr<FfnWeights> Ffn(const std::string& prefix, const std::string& suffix,
                                 int64_t n_embd, int64_t n_ff) {
    FfnWeights f;
    ASSIGN_OR_RETURN(f.gate, Matrix(absl::StrCat(prefix, "ffn_gate", suffix), n_embd, n_ff));
    ASSIGN_OR_RETURN(f.up, Matrix(absl::StrCat(prefix, "ffn_up", suffix), n_embd, n_ff));
    ASSIGN_OR_RETURN(f.down, Matrix(absl::StrCat(prefix, "ffn_down", suffix), n_ff, n_embd));
    return f;
  }

  const gguf::GgufModel& model() const { return model_; }

 private:
  const gguf::GgufModel& model_;
};

absl::Status BindLayer(Binder& b, const ModelConfig& c, int il, LayerWeights* w) {
  const std::string p = absl::StrCat("blk.", il, ".");
  const int64_t E = c.n_embd, H = c.n_head, R = c.kv_lora_rank;
  ASSIGN_OR_RETURN(w->attn_norm, b.Vector(p + "attn_norm.weight", E));
  if (c.q_lora_rank > 0) {
    ASSIGN_OR_RETURN(w->attn_q_a, b.Matrix(p + "attn_q_a.weight", E, c.q_lora_rank));
    ASSIGN_OR_RETURN(w->attn_q_a_norm, b.Vector(p + "attn_q_a_norm.weight", c.q_lora_rank));
    ASSIGN_OR_RETURN(w->attn_q_b, b.Matrix(p + "attn_q_b.weight", c.q_lora_rank, H * c.qk_head()));
  } else {
    ASSIGN_OR_RETURN(w->attn_q, b.Matrix(p + "attn_q.weight", E, H * c.qk_head()));
  }
  ASSIGN_OR_RETURN(w->attn_kv_a_mqa, b.Matrix(p + "attn_kv_a_mqa.weight", E, R + c.qk_rope));
  ASSIGN_OR_RETURN(w->attn_kv_a_norm, b.Vector(p + "attn_kv_a_norm.weight", R));
  if (c.kv_layout == KvProjLayout::kSplit) {
    ASSIGN_OR_RETURN(w->attn_k, b.Stack(p + "attn_k_b.weight", c.qk_nope, R, H));
    ASSIGN_OR_RETURN(w->attn_v, b.Stack(p + "attn_v_b.weight", R, c.v_head, H));
  } else {
    ASSIGN_OR_RETURN(WeightView kvb,
                     b.Matrix(p + "attn_kv_b.weight", R, H * (c.qk_nope + c.v_head)));
    const int64_t row = RowBytes(kvb.type, R);
    const int64_t stride = (c.qk_nope + c.v_head) * row;
    const uint8_t* base = static_cast<const uint8_t*>(kvb.data);
    w->attn_k = MatrixStack{kvb.type, base, c.qk_nope, R, H, stride};
    w->attn_v = MatrixStack{kvb.type, base + c.qk_nope * row, c.v_head, R, H, stride};
  }
  ASSIGN_OR_RETURN(w->attn_output, b.Matrix(p + "attn_output.weight", H * c.v_head, E));
  ASSIGN_OR_RETURN(w->ffn_norm, b.Vector(p + "ffn_norm.weight", E));
  if (!c.IsMoeLayer(il)) {
    ASSIGN_OR_RETURN(w->dense, b.Ffn(p, ".weight", E, c.n_ff));
    return absl::OkStatus();
  }
  const int64_t X = c.n_expert, F = c.n_ff_exp;
  ASSIGN_OR_RETURN(w->ffn_gate_inp, b.Matrix(p + "ffn_gate_inp.weight", E, X));
  if (b.Has(p + "exp_probs_b.bias")) {
    ASSIGN_OR_RETURN(w->exp_probs_b, b.Vector(p + "exp_probs_b.bias", X));
  }
  ASSIGN_OR_RETURN(w->gate_exps, b.Stack(p + "ffn_gate_exps.weight", E, F, X));
  ASSIGN_OR_RETURN(w->up_exps, b.Stack(p + "ffn_up_exps.weight", E, F, X));
  ASSIGN_OR_RETURN(w->down_exps, b.Stack(p + "ffn_down_exps.weight", F, E, X));
  const std::string shexp = p + "ffn_gate_shexp.weight";
  if (c.n_expert_shared > 0 || b.Has(shexp)) {
    if (!b.Has(shexp)) {
      return absl::InvalidArgumentError(absl::StrCat(b.model().path(),
                                                     ": expert_shared_count = ", c.n_expert_shared,
                                                     " but tensor ", shexp, " is missing"));
    }
    // The shared FFN is n_expert_shared experts side by side; with the key absent, trust the file.
    const int64_t width = c.n_expert_shared > 0 ? int64_t{c.n_ff_exp} * c.n_expert_shared
                                                : b.model().FindTensor(shexp)->ne[1];
    ASSIGN_OR_RETURN(w->shared, b.Ffn(p, "_shexp.weight", E, width));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Weights> Weights::Bind(const gguf::GgufModel& model, const ModelConfig& config,
                                      std::vector<bool> local_experts) {
  RETURN_IF_ERROR(config.Validate());
  if (local_experts.empty()) local_experts.assign(std::max(config.n_expert, 0), true);
  if (static_cast<int>(local_experts.size()) != config.n_expert) {
    return absl::InvalidArgumentError(absl::StrCat("local expert set has ", local_experts.size(),
                                                   " flags for ", config.n_expert, " experts"));
  }
  Binder b(model);
  Weights w;
  w.local_experts_ = std::move(local_experts);
  ASSIGN_OR_RETURN(w.token_embd_, b.Matrix("token_embd.weight", config.n_embd, config.n_vocab));
  ASSIGN_OR_RETURN(w.output_norm_, b.Vector("output_norm.weight", config.n_embd));
  if (config.tied_output) {
    w.output_ = w.token_embd_;
  } else {
    ASSIGN_OR_RETURN(w.output_, b.Matrix("output.weight", config.n_embd, config.n_vocab));
  }
  w.layers_.resize(config.n_layer);
  for (int il = 0; il < config.n_layer; ++il) {
    RETURN_IF_ERROR(BindLayer(b, config, il, &w.layers_[il]));
  }
  return w;
}

}  // namespace tritmoe
