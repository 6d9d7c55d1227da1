#include "runtime/engine/rank_weights.h"

#include <algorithm>
#include <string>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"

namespace tritmoe {
namespace {

// The model layer of a routed-expert stack "blk.N.ffn_{gate,up,down}_exps.weight", or -1.
int ExpertStackLayer(const gguf::TensorInfo& t, const ModelConfig& config) {
  absl::string_view name = t.name;
  if (!absl::ConsumePrefix(&name, "blk.")) return -1;
  const size_t dot = name.find('.');
  if (dot == absl::string_view::npos) return -1;
  int layer = -1;
  if (!absl::SimpleAtoi(name.substr(0, dot), &layer)) return -1;
  name.remove_prefix(dot + 1);
  if (name != "ffn_gate_exps.weight" && name != "ffn_up_exps.weight" &&
      name != "ffn_down_exps.weight") {
    return -1;
  }
  if (!config.IsMoeLayer(layer) || layer >= config.n_layer || t.ne[2] != config.n_expert) {
    return -1;
  }
  return layer;
}

class Fnv1a {
 public:
  void Add(const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) {
      h_ ^= b[i];
      h_ *= 1099511628211ull;
    }
  }
  template <typename T>
  void AddValue(const T& v) {
    Add(&v, sizeof(v));
  }
  void AddString(std::string_view s) {
    AddValue<uint64_t>(s.size());
    Add(s.data(), s.size());
  }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 1469598103934665603ull;
};

}  // namespace

RankWeightBytes CountRankWeightBytes(const gguf::GgufModel& model, const ModelConfig& config,
                                     const std::vector<ExpertPlacement>& placements, int rank) {
  RankWeightBytes b;
  for (const gguf::TensorInfo& t : model.tensors()) {
    const int64_t bytes = static_cast<int64_t>(t.nbytes);
    b.file += bytes;
    const int layer = ExpertStackLayer(t, config);
    const int moe = layer - config.n_dense_lead;
    if (layer < 0 || moe >= static_cast<int>(placements.size())) {
      b.replicated += bytes;
      continue;
    }
    const int64_t per_expert = bytes / config.n_expert;
    b.experts += per_expert * static_cast<int64_t>(placements[moe].local_experts(rank).size());
  }
  return b;
}

uint64_t ModelFileFingerprint(const gguf::GgufModel& model, const ModelConfig& config) {
  Fnv1a h;
  for (const gguf::KeyValue& kv : model.kvs()) {
    h.AddString(kv.key);
    h.AddValue(kv.value.type);
    h.AddValue(kv.value.elem_type);
    h.AddValue(kv.value.count);
    h.AddValue<uint64_t>(kv.value.raw.size());
    h.Add(kv.value.raw.data(), kv.value.raw.size());
    for (const std::string& s : kv.value.strings) h.AddString(s);
  }
  for (const gguf::TensorInfo& t : model.tensors()) {
    h.AddString(t.name);
    h.AddValue(t.type);
    for (int64_t n : t.ne) h.AddValue(n);
    h.AddValue(t.offset);
    h.AddValue(t.nbytes);
    h.AddValue(t.shard);
    if (ExpertStackLayer(t, config) < 0) {
      h.Add(model.TensorData(t), std::min<uint64_t>(t.nbytes, 4096));
    }
  }
  return h.value();
}

}  // namespace tritmoe
