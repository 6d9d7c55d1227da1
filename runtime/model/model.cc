#include "runtime/model/model.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/model/embedding.h"
#include "runtime/model/ffn.h"
#include "runtime/model/moe.h"
#include "runtime/model/repacked_expert_source.h"
#include "runtime/model/rms_norm.h"
#include "runtime/model/rope.h"
#include "runtime/model/step_input_check.h"

namespace tritmoe {

absl::Status ModelOptions::Validate() const {
  if (threads < 0) return absl::InvalidArgumentError("threads must be >= 0");
  if (max_context < 0) return absl::InvalidArgumentError("max_context must be >= 0");
  return absl::OkStatus();
}

Model::~Model() = default;

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& path,
                                                   const ModelOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<Model> m(new Model());
  m->options_ = options;
  ASSIGN_OR_RETURN(m->gguf_, gguf::GgufModel::Open(path));
  ASSIGN_OR_RETURN(m->config_, ModelConfig::FromGguf(*m->gguf_));
  ASSIGN_OR_RETURN(m->weights_, Weights::Bind(*m->gguf_, m->config_, options.local_experts));
  m->pool_ =
      std::make_unique<ThreadPool>(options.threads > 0 ? options.threads : DefaultThreadCount());
  if (options.expert_source == nullptr && options.repack_experts &&
      options.precision == ActPrecision::kQuantized &&
      RepackedExpertSource::Worthwhile(m->config_, m->weights_)) {
    m->owned_source_ = std::make_unique<RepackedExpertSource>(m->pool_.get());
    m->options_.expert_source = m->owned_source_.get();
  }
  if (m->options_.expert_source != nullptr) {
    RETURN_IF_ERROR(m->options_.expert_source->Attach(m->config_, m->weights_));
  }
  m->max_context_ = options.max_context > 0 ? options.max_context : m->config_.context_length;
  if (options.exchange != nullptr) {
    m->exchange_ = options.exchange;
  } else {
    m->local_exchange_ = std::make_unique<LocalExpertExchange>();
    m->exchange_ = m->local_exchange_.get();
  }
  return m;
}

absl::StatusOr<std::unique_ptr<KvCache>> Model::NewKvCache(int64_t capacity) const {
  if (capacity == 0) capacity = max_context_;
  if (capacity < 0 || capacity > max_context_) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache of ", capacity,
                                                   " tokens requested; the limit is ", max_context_,
                                                   " (max context)"));
  }
  KvCacheConfig kc;
  kc.n_layer = config_.n_layer;
  kc.kv_lora_rank = config_.kv_lora_rank;
  kc.n_rot = config_.qk_rope;
  kc.type = options_.kv_type;
  kc.capacity = capacity;
  return KvCache::Create(kc);
}

absl::Status Model::CheckBatch(std::span<const SequenceInput> batch) const {
  std::set<const KvCache*> seen;
  for (size_t s = 0; s < batch.size(); ++s) {
    const SequenceInput& in = batch[s];
    if (in.cache == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, " has no KV cache"));
    }
    if (!seen.insert(in.cache).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", s, " shares its KV cache with an earlier sequence"));
    }
    RETURN_IF_ERROR(CheckSequenceTokens(s, in.cache->config(), in.tokens, config_));
    absl::Status room = in.cache->CheckRoom(static_cast<int64_t>(in.tokens.size()));
    if (!room.ok()) {
      return absl::Status(room.code(), absl::StrCat("sequence ", s, ": ", room.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status Model::Step(std::span<const SequenceInput> batch, StepOutput* out) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point t_begin = Clock::now();
  ModelStepTimes times;
  RETURN_IF_ERROR(CheckBatch(batch));
  const ModelConfig& c = config_;
  const int64_t D = c.n_embd;
  ThreadPool& pool = *pool_;
  const ActPrecision prec = options_.precision;

  // Step rows: the sequences' new tokens back to back.
  std::vector<AttentionSeq> seqs(batch.size());
  std::vector<int32_t> tokens;
  std::vector<int64_t> positions;
  for (size_t s = 0; s < batch.size(); ++s) {
    const SequenceInput& in = batch[s];
    AttentionSeq& sq = seqs[s];
    sq.cache = in.cache;
    sq.row_begin = static_cast<int64_t>(tokens.size());
    sq.n_new = static_cast<int64_t>(in.tokens.size());
    sq.n_past = in.cache->size();
    switch (options_.attention) {
      case AttentionForm::kAuto:
        sq.absorbed = sq.n_new == 1;
        break;
      case AttentionForm::kNaive:
        sq.absorbed = false;
        break;
      case AttentionForm::kAbsorbed:
        sq.absorbed = true;
        break;
    }
    for (int64_t i = 0; i < sq.n_new; ++i) positions.push_back(sq.n_past + i);
    tokens.insert(tokens.end(), in.tokens.begin(), in.tokens.end());
  }
  const int64_t T = static_cast<int64_t>(tokens.size());
  const RopeTable rope(c.rope, positions.data(), T);

  float* x = ws_.Get(Buf::kX, T * D);
  float* h = ws_.Get(Buf::kH, T * D);
  float* f = ws_.Get(Buf::kF, T * D);
  EmbedTokens(weights_.token_embd(), tokens.data(), T, x);
  for (int il = 0; il < c.n_layer; ++il) {
    const LayerWeights& lw = weights_.layer(il);
    RmsNorm(x, T, D, lw.attn_norm.data(), c.rms_eps, h);
    const Clock::time_point t_attention = Clock::now();
    MlaAttention(c, lw, il, h, T, seqs, rope, f, pool, prec, ws_);
    times.attention_s += std::chrono::duration<double>(Clock::now() - t_attention).count();
    for (int64_t i = 0; i < T * D; ++i) x[i] += f[i];
    RmsNorm(x, T, D, lw.ffn_norm.data(), c.rms_eps, h);
    if (c.IsMoeLayer(il)) {
      RETURN_IF_ERROR(MoeForward(c, il, lw, weights_.local_experts(), h, T, f, *exchange_, pool,
                                 prec, ws_, options_.expert_source, /*routing_out=*/nullptr,
                                 &times));
    } else {
      SwiGluFfn(lw.dense, h, T, f, pool, prec, ws_);
    }
    for (int64_t i = 0; i < T * D; ++i) x[i] += f[i];
  }
  for (const AttentionSeq& sq : seqs) sq.cache->Commit(sq.n_new);

  // lm_head over the requested rows only.
  out->n_vocab = c.n_vocab;
  out->first_row.assign(batch.size(), 0);
  out->n_rows.assign(batch.size(), 0);
  std::vector<int64_t> rows;
  for (size_t s = 0; s < batch.size(); ++s) {
    out->first_row[s] = static_cast<int64_t>(rows.size());
    const AttentionSeq& sq = seqs[s];
    switch (batch[s].logits) {
      case LogitsRequest::kNone:
        break;
      case LogitsRequest::kLast:
        rows.push_back(sq.row_begin + sq.n_new - 1);
        break;
      case LogitsRequest::kAll:
        for (int64_t i = 0; i < sq.n_new; ++i) rows.push_back(sq.row_begin + i);
        break;
    }
    out->n_rows[s] = static_cast<int64_t>(rows.size()) - out->first_row[s];
  }
  const int64_t n_out = static_cast<int64_t>(rows.size());
  float* sel = ws_.Get(Buf::kSelected, n_out * D);
  for (int64_t i = 0; i < n_out; ++i) std::memcpy(&sel[i * D], &x[rows[i] * D], D * sizeof(float));
  out->logits.resize(n_out * c.n_vocab);
  LmHead(weights_.output(), weights_.output_norm().data(), c.rms_eps, sel, n_out,
         out->logits.data(), pool, prec, ws_);
  if (options_.step_times != nullptr) {
    times.total_s = std::chrono::duration<double>(Clock::now() - t_begin).count();
    *options_.step_times = times;
  }
  return absl::OkStatus();
}

}  // namespace tritmoe
