#include "runtime/engine/engine.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "base/thread_pool.h"
#include "runtime/engine/ep_expert_exchange.h"
#include "runtime/engine/placement_spec.h"
#include "runtime/engine/rank_weights.h"
#include "runtime/engine/step_backend.h"
#include "runtime/engine/step_codec.h"
#include "runtime/model/vocab_loader.h"

namespace tritmoe {
namespace {

constexpr char kAgreedPayload[] = "type.tritmoe/engine.agreed-failure";

absl::Status MarkAgreed(absl::Status s) {
  s.SetPayload(kAgreedPayload, absl::Cord("1"));
  return s;
}

// The driver's control block, broadcast once per step: the kind, the payload size, and up to
// kInlineBytes of payload, so a decode step costs one broadcast; a longer payload (a prefill's
// tokens) follows in a second one.
constexpr int64_t kControlBytes = 4096;
constexpr int64_t kHeaderBytes = 2 * sizeof(int64_t);
constexpr int64_t kInlineBytes = kControlBytes - kHeaderBytes;
// kRoutingStats / kExpertCacheStats: every rank adds its routing counts / expert cache statistics
// into one all-reduce (CollectRoutingStats / CollectExpertCacheStats).
enum class Control : int64_t { kStep = 1, kShutdown = 2, kRoutingStats = 3, kExpertCacheStats = 4 };

// The expert cache statistics as one fixed-size int64 vector to sum over the ranks: a header, then
// per MoE layer its counters (stall in nanoseconds, so that one all-reduce carries everything).
constexpr int kCacheHeader = 6;  // has a cache, budget, slots/layer, capacity, resident, prefetch
constexpr int kCachePerLayer = 9;

std::vector<int64_t> EncodeCacheStats(const std::optional<ExpertCacheStats>& stats, int n_dense,
                                      int n_moe) {
  std::vector<int64_t> v(kCacheHeader + static_cast<size_t>(kCachePerLayer) * n_moe, 0);
  if (!stats.has_value()) return v;
  v[0] = 1;
  v[1] = stats->budget_bytes;
  v[2] = stats->slots_per_layer;
  v[3] = stats->capacity_bytes;
  v[4] = stats->resident_bytes;
  v[5] = stats->prefetch ? 1 : 0;
  for (const LayerCacheStats& l : stats->layers) {
    const int i = l.layer - n_dense;
    if (i < 0 || i >= n_moe) continue;  // not a MoE layer: nothing a cache could hold
    int64_t* o = &v[kCacheHeader + static_cast<size_t>(kCachePerLayer) * i];
    o[0] += l.tokens;
    o[1] += l.hits;
    o[2] += l.misses;
    o[3] += l.prefetched;
    o[4] += l.prefetch_used;
    o[5] += l.prefetch_errors;
    o[6] += l.evictions;
    o[7] += l.bytes_read;
    o[8] += static_cast<int64_t>(l.stall_s * 1e9);
  }
  return v;
}

std::optional<ExpertCacheStats> DecodeCacheStats(const std::vector<int64_t>& v, int n_dense,
                                                 int n_moe) {
  if (v[0] == 0) return std::nullopt;
  ExpertCacheStats s;
  s.budget_bytes = v[1];
  s.slots_per_layer = v[2];
  s.capacity_bytes = v[3];
  s.resident_bytes = v[4];
  s.prefetch = v[5] > 0;
  for (int i = 0; i < n_moe; ++i) {
    const int64_t* o = &v[kCacheHeader + static_cast<size_t>(kCachePerLayer) * i];
    LayerCacheStats l;
    l.layer = n_dense + i;
    l.tokens = o[0];
    l.hits = o[1];
    l.misses = o[2];
    l.prefetched = o[3];
    l.prefetch_used = o[4];
    l.prefetch_errors = o[5];
    l.evictions = o[6];
    l.bytes_read = o[7];
    l.stall_s = static_cast<double>(o[8]) * 1e-9;
    s.layers.push_back(l);
  }
  return s;
}

// What every rank contributes at start-up (all-gathered, fixed size). Strings are NUL-terminated
// and truncated to fit.
struct StartInfo {
  int32_t ok = 0;
  int32_t pid = 0;
  int32_t threads = 0;
  int32_t num_local_experts = 0;
  uint64_t file_fingerprint = 0;
  uint64_t placement_fingerprint = 0;
  int64_t replicated_bytes = 0;
  int64_t expert_bytes = 0;
  int64_t file_tensor_bytes = 0;
  char host[64] = {};
  char device[64] = {};
  char options[256] = {};
  char path[256] = {};
  char error[512] = {};
};

template <size_t N>
void CopyString(char (&dst)[N], const std::string& s) {
  std::snprintf(dst, N, "%s", s.c_str());
}

// The options every rank must share (not threads: ranks may differ in cores).
std::string OptionsDescription(const EngineOptions& o) {
  return absl::StrFormat(
      "device=%s gpu_exchange=%s precision=%s kv_type=%s max_context=%d attention=%d placement=%s "
      "max_sequences=%d max_tokens_per_step=%d",
      o.device, o.gpu_exchange, o.model.precision == ActPrecision::kFloat ? "float" : "quantized",
      std::string(KvCacheTypeName(o.model.kv_type)), o.model.max_context,
      static_cast<int>(o.model.attention), o.placement, o.max_sequences, o.max_tokens_per_step);
}

// Whether the sampler's next draw is the argmax of the logits with at most one token masked
// (first maximum on ties), which a backend may compute where the logits are: greedy, and at most
// one token masked now (Sampler's masks: EOS under ignore_eos or before min_tokens, the stop
// tokens before min_tokens). *exclude: the masked token, or -1.
bool IsDeviceArgmax(const Sampler& sampler, int32_t generated, int32_t eos_id, int32_t* exclude) {
  const SamplingParams& p = sampler.params();
  if (p.temperature != 0) return false;
  std::vector<int32_t> masked;
  if (eos_id >= 0 && (p.ignore_eos || generated < p.min_tokens)) masked.push_back(eos_id);
  if (generated < p.min_tokens) {
    for (int32_t id : p.stop_token_ids) {
      if (std::find(masked.begin(), masked.end(), id) == masked.end()) masked.push_back(id);
    }
  }
  if (masked.size() > 1) return false;
  *exclude = masked.empty() ? -1 : masked[0];
  return true;
}

std::string HostName() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "?";
  return buf;
}

class EngineImpl final : public Engine {
 public:
  EngineImpl(const EngineOptions& options, Communicator* comm) : options_(options), comm_(comm) {}

  absl::Status Init();

  int rank() const override { return comm_->rank(); }
  int num_ranks() const override { return comm_->size(); }
  const ModelConfig& config() const override { return model_->config(); }
  const Tokenizer& tokenizer() const override { return *tokenizer_; }
  int64_t max_context() const override { return model_->max_context(); }
  int64_t weight_bytes_loaded() const override {
    const EngineRankInfo& me = ranks_[rank()];
    return me.replicated_bytes + me.expert_bytes;
  }
  const std::vector<EngineRankInfo>& ranks() const override { return ranks_; }
  int threads() const override { return threads_; }

  absl::StatusOr<EngineStepResult> Step(const EngineStep& step) override;
  absl::StatusOr<RoutingStats> CollectRoutingStats() override;
  absl::StatusOr<std::optional<ExpertCacheStats>> CollectExpertCacheStats() override;
  bool records_routing_stats() const override { return exchange_ != nullptr; }
  std::vector<ExpertPlacement> expert_placements() const override {
    return exchange_ != nullptr ? exchange_->placements() : device_placements_;
  }
  absl::Status Shutdown() override;
  absl::Status RunWorker() override;

 private:
  struct LocalSequence {
    std::unique_ptr<BackendCache> cache;
    Sampler sampler;
    int32_t generated = 0;
  };
  struct LiveSequence {
    int owner = 0;
    int64_t capacity = 0;
    int64_t size = 0;
  };

  absl::Status LoadLocal(StartInfo* info);
  absl::Status CheckAgreement(const std::vector<StartInfo>& all) const;
  absl::StatusOr<StepMessage> Plan(const EngineStep& step) const;
  void Commit(const StepMessage& m);
  absl::Status Execute(const StepMessage& m, RankResult* result);
  // This rank's part of CollectRoutingStats: its counts summed with every other rank's.
  absl::StatusOr<RoutingStats> SumRoutingStats();
  // This rank's part of CollectExpertCacheStats.
  absl::StatusOr<std::optional<ExpertCacheStats>> SumExpertCacheStats();
  absl::Status SendControl(Control kind, const std::vector<uint8_t>& payload);
  absl::Status ReceiveControl(Control* kind, std::vector<uint8_t>* payload);
  absl::StatusOr<std::vector<std::vector<uint8_t>>> GatherToDriver(
      const std::vector<uint8_t>& mine);
  absl::Status Fail(absl::Status s) {
    broken_ = s;
    return s;
  }

  const EngineOptions options_;
  Communicator* const comm_;
  int threads_ = 1;
  std::unique_ptr<EpExpertExchange> exchange_;  // outlives model_ (declared first)
  // --gpu-exchange nccl: the placements the GPU backend's device exchange joins with in Init.
  std::vector<ExpertPlacement> device_placements_;
  ModelStepTimes model_times_;          // the CPU model writes each step's split here
  std::unique_ptr<StepBackend> model_;  // the CPU Model or the GPU model (options_.device)
  std::optional<Tokenizer> tokenizer_;
  std::vector<EngineRankInfo> ranks_;

  // This rank's sequences.
  std::unordered_map<uint64_t, LocalSequence> local_;
  // Driver only: every live sequence of the job, and how many each rank holds.
  std::unordered_map<uint64_t, LiveSequence> live_;
  std::vector<int> live_per_rank_;

  bool shut_down_ = false;
  absl::Status broken_;  // a collective failed: the engine is unusable
  std::vector<uint8_t> control_;
};

absl::Status EngineImpl::LoadLocal(StartInfo* info) {
  RETURN_IF_ERROR(options_.Validate());
  const int n_ranks = comm_->size(), me = comm_->rank();
  const bool gpu = options_.on_gpu();
  ModelConfig config;
  std::vector<ExpertPlacement> placements;
  {
    // The placement needs the expert and layer counts before the model binds its experts.
    ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufModel> file,
                     gguf::GgufModel::Open(options_.model_path));
    ASSIGN_OR_RETURN(config, ModelConfig::FromGguf(*file));
    const int n_moe = config.n_layer - config.n_dense_lead;
    if (n_moe > 0) {
      ASSIGN_OR_RETURN(placements,
                       PlacementsFromSpec(options_.placement, n_moe, config.n_expert, n_ranks));
    }
  }
  info->placement_fingerprint = PlacementsFingerprint(placements);
  for (const ExpertPlacement& p : placements) {
    info->num_local_experts += static_cast<int>(p.local_experts(me).size());
  }
  ModelOptions mo = options_.model;
  mo.threads = threads_;
  mo.local_experts.clear();
  mo.exchange = nullptr;
  // A model without MoE layers (all dense) needs no exchange: every rank computes everything. One
  // GPU rank holds every expert itself (no exchange: its MoE layers keep their CUDA graphs).
  std::string gpu_exchange = "none";
  if (gpu) {
    ASSIGN_OR_RETURN(gpu_exchange, options_.GpuExchangeFor(n_ranks, comm_->local_size()));
  }
  if (!placements.empty() && gpu_exchange == "nccl") {
    // Joined after the agreed start (Init): NCCL's start is a collective of its own.
    device_placements_ = placements;
  } else if (!placements.empty() && (!gpu || n_ranks > 1)) {
    mo.local_experts = LocalExpertUnion(placements, me);
    ASSIGN_OR_RETURN(exchange_, EpExpertExchange::Create(config, std::move(placements), n_ranks));
    mo.exchange = exchange_.get();
  }
  if (gpu) {
    // One GPU per rank: the GPU of its local rank (GpuModel::Load names the visible count).
    ASSIGN_OR_RETURN(
        model_, LoadGpuBackend(options_.model_path, mo, options_.CudaDevice(comm_->local_rank()),
                               options_.gpu_expert_cache_bytes, options_.gpu_expert_prefetch));
  } else {
    mo.step_times = &model_times_;
    ASSIGN_OR_RETURN(model_, LoadCpuBackend(options_.model_path, mo));
  }
  CopyString(info->device, model_->device_name());
  ASSIGN_OR_RETURN(Tokenizer tok, LoadTokenizer(model_->gguf()));
  if (tok.n_vocab() != model_->n_vocab()) {
    return absl::InvalidArgumentError(absl::StrCat(options_.model_path, ": tokenizer has ",
                                                   tok.n_vocab(), " tokens, the model ",
                                                   model_->n_vocab()));
  }
  tokenizer_.emplace(std::move(tok));
  const RankWeightBytes bytes =
      CountRankWeightBytes(model_->gguf(), model_->config(),
                           exchange_ != nullptr          ? exchange_->placements()
                           : !device_placements_.empty() ? device_placements_
                                                         : placements,
                           me);
  info->replicated_bytes = bytes.replicated;
  info->expert_bytes = bytes.experts;
  info->file_tensor_bytes = bytes.file;
  info->file_fingerprint = ModelFileFingerprint(model_->gguf(), model_->config());
  return absl::OkStatus();
}

absl::Status EngineImpl::CheckAgreement(const std::vector<StartInfo>& all) const {
  std::string failed;
  for (size_t r = 0; r < all.size(); ++r) {
    if (all[r].ok) continue;
    absl::StrAppend(&failed, "\n  rank ", r, " (", all[r].host, "): ", all[r].error);
  }
  if (!failed.empty()) {
    return MarkAgreed(
        absl::FailedPreconditionError(absl::StrCat("engine start failed on some ranks:", failed)));
  }
  const StartInfo& ref = all[0];
  std::string bad;
  for (size_t r = 1; r < all.size(); ++r) {
    const StartInfo& x = all[r];
    if (x.file_fingerprint != ref.file_fingerprint) {
      absl::StrAppendFormat(&bad,
                            "\n  rank %d (%s) opened %s, which differs from rank 0's %s "
                            "(model fingerprint %016x vs %016x)",
                            r, x.host, x.path, ref.path, x.file_fingerprint, ref.file_fingerprint);
    }
    if (std::strcmp(x.options, ref.options) != 0) {
      absl::StrAppendFormat(&bad, "\n  rank %d (%s) has options {%s}, rank 0 {%s}", r, x.host,
                            x.options, ref.options);
    } else if (x.placement_fingerprint != ref.placement_fingerprint) {
      absl::StrAppendFormat(&bad,
                            "\n  rank %d (%s) built a different expert placement than rank 0 "
                            "(its placement files differ)",
                            r, x.host);
    }
  }
  if (!bad.empty()) {
    return MarkAgreed(absl::FailedPreconditionError(absl::StrCat(
        "ranks disagree on the model or its options (every rank must open the same GGUF with "
        "the same flags):",
        bad)));
  }
  return absl::OkStatus();
}

absl::Status EngineImpl::Init() {
  const int cores = DefaultThreadCount();
  threads_ = options_.model.threads > 0 ? options_.model.threads
                                        : std::max(1, cores / std::max(1, comm_->local_size()));
  StartInfo info;
  info.pid = static_cast<int32_t>(getpid());
  info.threads = threads_;
  CopyString(info.host, HostName());
  CopyString(info.options, OptionsDescription(options_));
  CopyString(info.path, options_.model_path);
  absl::Status local = LoadLocal(&info);
  info.ok = local.ok() ? 1 : 0;
  if (!local.ok()) CopyString(info.error, std::string(local.message()));

  // Every rank reaches this gather whatever happened above, so a failure anywhere is reported
  // everywhere instead of leaving ranks waiting.
  std::vector<StartInfo> all(comm_->size());
  RETURN_IF_ERROR(comm_->AllGather(&info, sizeof(StartInfo), all.data()));
  if (!local.ok() && comm_->size() == 1) return MarkAgreed(local);
  RETURN_IF_ERROR(CheckAgreement(all));
  for (const StartInfo& x : all) {
    EngineRankInfo r;
    r.pid = x.pid;
    r.host = x.host;
    r.threads = x.threads;
    r.device = x.device;
    r.replicated_bytes = x.replicated_bytes;
    r.expert_bytes = x.expert_bytes;
    r.file_tensor_bytes = x.file_tensor_bytes;
    r.num_local_experts = x.num_local_experts;
    ranks_.push_back(std::move(r));
  }
  live_per_rank_.assign(comm_->size(), 0);
  if (!device_placements_.empty()) {
    // Every rank joins (NCCL's start agrees on failures itself); then the outcome is agreed.
    const absl::Status joined = model_->ConnectDeviceExchange(*comm_, device_placements_);
    std::vector<int32_t> ok(comm_->size());
    const int32_t mine = joined.ok() ? 1 : 0;
    RETURN_IF_ERROR(comm_->AllGather(&mine, sizeof(int32_t), ok.data()));
    if (!joined.ok()) {
      return MarkAgreed(absl::Status(
          joined.code(), absl::StrCat("rank ", comm_->rank(),
                                      ": the GPU expert exchange over NCCL (--gpu-exchange nccl) "
                                      "did not start: ",
                                      joined.message())));
    }
    for (int r = 0; r < comm_->size(); ++r) {
      if (ok[r] == 0) {
        return MarkAgreed(absl::FailedPreconditionError(
            absl::StrCat("the GPU expert exchange over NCCL (--gpu-exchange nccl) did not start "
                         "on rank ",
                         r, " (its log says why)")));
      }
    }
  }
  // A rank may own every token of a step.
  return exchange_ != nullptr ? exchange_->Connect(options_.max_tokens_per_step, comm_)
                              : absl::OkStatus();
}

absl::StatusOr<StepMessage> EngineImpl::Plan(const EngineStep& step) const {
  const int64_t n_vocab = model_->n_vocab();
  StepMessage m;
  m.step = step;
  std::vector<int> load = live_per_rank_;
  int64_t n_live = static_cast<int64_t>(live_.size());
  // Sequences known after the starts: id -> (capacity, tokens held).
  std::unordered_map<uint64_t, std::pair<int64_t, int64_t>> known;
  for (SequenceStart& s : m.step.start) {
    if (live_.count(s.id) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("sequence id ", s.id, " is already live"));
    }
    if (s.capacity == 0) s.capacity = max_context();
    if (s.capacity < 0 || s.capacity > max_context()) {
      return absl::InvalidArgumentError(absl::StrCat("sequence id ", s.id, ": capacity ",
                                                     s.capacity, " is outside [1, ", max_context(),
                                                     "] (max context)"));
    }
    if (!known.emplace(s.id, std::make_pair(s.capacity, int64_t{0})).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence id ", s.id, " is started twice in one step"));
    }
    if (++n_live > options_.max_sequences) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence id ", s.id, ": the engine already holds ", options_.max_sequences,
                       " live sequences (max_sequences)"));
    }
    absl::StatusOr<Sampler> sampler =
        Sampler::Create(s.sampling, static_cast<int32_t>(n_vocab), tokenizer_->eos_id());
    if (!sampler.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence id ", s.id, ": ", sampler.status().message()));
    }
    const int owner = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    ++load[owner];
    m.owners.push_back(owner);
  }
  std::unordered_set<uint64_t> seen;
  int64_t total = 0;
  for (const EngineItem& it : m.step.items) {
    if (!seen.insert(it.id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence id ", it.id, " appears twice among the step's items"));
    }
    int64_t capacity = 0, size = 0;
    if (auto k = known.find(it.id); k != known.end()) {
      std::tie(capacity, size) = k->second;
    } else if (auto l = live_.find(it.id); l != live_.end()) {
      capacity = l->second.capacity;
      size = l->second.size;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown sequence id ", it.id));
    }
    if (it.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("sequence id ", it.id, " has no new tokens"));
    }
    for (size_t i = 0; i < it.tokens.size(); ++i) {
      if (it.tokens[i] < 0 || it.tokens[i] >= n_vocab) {
        return absl::InvalidArgumentError(absl::StrCat("sequence id ", it.id, ": token id ",
                                                       it.tokens[i], " at index ", i,
                                                       " is out of range [0, ", n_vocab, ")"));
      }
    }
    const int64_t n = static_cast<int64_t>(it.tokens.size());
    if (size + n > capacity) {
      return absl::InvalidArgumentError(absl::StrCat("sequence id ", it.id,
                                                     " is out of room: ", size, " tokens held + ",
                                                     n, " new > capacity ", capacity));
    }
    total += n;
  }
  if (total > options_.max_tokens_per_step) {
    return absl::InvalidArgumentError(absl::StrCat("the step has ", total, " tokens; the limit is ",
                                                   options_.max_tokens_per_step,
                                                   " (max_tokens_per_step)"));
  }
  std::unordered_set<uint64_t> released;
  for (uint64_t id : m.step.release) {
    if (known.count(id) == 0 && live_.count(id) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("release of unknown sequence id ", id));
    }
    if (!released.insert(id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence id ", id, " is released twice in one step"));
    }
  }
  return m;
}

void EngineImpl::Commit(const StepMessage& m) {
  for (size_t i = 0; i < m.step.start.size(); ++i) {
    live_[m.step.start[i].id] = LiveSequence{m.owners[i], m.step.start[i].capacity, 0};
    ++live_per_rank_[m.owners[i]];
  }
  for (const EngineItem& it : m.step.items) {
    live_[it.id].size += static_cast<int64_t>(it.tokens.size());
  }
  for (uint64_t id : m.step.release) {
    auto l = live_.find(id);
    --live_per_rank_[l->second.owner];
    live_.erase(l);
  }
}

absl::Status EngineImpl::Execute(const StepMessage& m, RankResult* result) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point t_begin = Clock::now();
  model_times_ = ModelStepTimes{};  // stays zero for a backend that does not split its step
  const int me = rank();
  const int64_t n_vocab = model_->n_vocab();
  for (size_t i = 0; i < m.step.start.size(); ++i) {
    if (m.owners[i] != me) continue;
    const SequenceStart& s = m.step.start[i];
    ASSIGN_OR_RETURN(std::unique_ptr<BackendCache> cache, model_->NewCache(s.capacity));
    ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create(s.sampling, static_cast<int32_t>(n_vocab),
                                                      tokenizer_->eos_id()));
    if (!local_.emplace(s.id, LocalSequence{std::move(cache), std::move(sampler), 0}).second) {
      return absl::InternalError(absl::StrCat("sequence id ", s.id, " started twice"));
    }
  }
  std::vector<BackendInput> batch;
  std::vector<size_t> batch_item;
  // Where the backend samples greedily itself (the GPU: argmax on the device, only the tokens
  // come back) and every item wants exactly that, the logits never reach the host.
  bool device_greedy = model_->has_device_greedy();
  for (size_t i = 0; i < m.step.items.size(); ++i) {
    const EngineItem& it = m.step.items[i];
    auto l = local_.find(it.id);
    if (l == local_.end()) continue;  // another rank's sequence
    LogitsRequest want = it.logits;
    if (want == LogitsRequest::kNone && it.sample) want = LogitsRequest::kLast;
    batch.push_back({l->second.cache.get(), it.tokens, want});
    batch_item.push_back(i);
    result->times.tokens += static_cast<int64_t>(it.tokens.size());
    // A prefill chunk that samples nothing and wants no logits rides along.
    device_greedy =
        device_greedy && it.logits == LogitsRequest::kNone &&
        (!it.sample || IsDeviceArgmax(l->second.sampler, l->second.generated, tokenizer_->eos_id(),
                                      &batch.back().argmax_exclude));
  }
  // Runs even with an empty batch: this rank's experts serve the other ranks' tokens.
  StepOutput out;
  std::vector<int32_t> next;  // the device's argmax per batch entry (device_greedy)
  if (device_greedy && !batch.empty()) {
    RETURN_IF_ERROR(model_->StepGreedy(batch, &next));
    if (next.size() != batch.size()) {
      return absl::InternalError(absl::StrCat("greedy step returned ", next.size(), " tokens for ",
                                              batch.size(), " sequences"));
    }
  } else {
    RETURN_IF_ERROR(model_->Step(batch, &out));
  }
  for (size_t b = 0; b < batch.size(); ++b) {
    const EngineItem& it = m.step.items[batch_item[b]];
    ItemResult r;
    r.item = static_cast<int32_t>(batch_item[b]);
    if (it.sample && result->status.ok()) {
      LocalSequence& seq = local_.find(it.id)->second;
      absl::StatusOr<int32_t> token =
          !next.empty()
              ? absl::StatusOr<int32_t>(next[b])
              : seq.sampler.Sample(absl::MakeConstSpan(out.Row(b, out.n_rows[b] - 1), n_vocab),
                                   seq.generated);
      if (token.ok()) {
        r.token = *token;
        ++seq.generated;
      } else {
        result->status = absl::Status(
            token.status().code(),
            absl::StrCat("sequence id ", it.id, " on rank ", me, ": ", token.status().message()));
      }
    }
    if (it.logits != LogitsRequest::kNone) {
      r.logits.assign(out.Row(b, 0), out.Row(b, 0) + out.n_rows[b] * n_vocab);
    }
    result->items.push_back(std::move(r));
  }
  for (uint64_t id : m.step.release) local_.erase(id);
  StepPhaseTimes& t = result->times;
  t.attention_s = model_times_.attention_s;
  t.moe_compute_s = model_times_.moe_compute_s;
  t.dispatch_s = model_times_.dispatch_s;
  t.combine_s = model_times_.combine_s;
  const double total = std::chrono::duration<double>(Clock::now() - t_begin).count();
  t.other_s = std::max(0.0, total - t.attention_s - t.moe_compute_s - t.dispatch_s - t.combine_s);
  return absl::OkStatus();
}

absl::StatusOr<RoutingStats> EngineImpl::SumRoutingStats() {
  RoutingStats stats = exchange_->exchange().stats().routing;
  RETURN_IF_ERROR(stats.AllReduceSum(*comm_));
  return stats;
}

absl::StatusOr<std::optional<ExpertCacheStats>> EngineImpl::SumExpertCacheStats() {
  // The CPU cache under the model, else the GPU backend's (a --device cuda job has no CPU one).
  std::optional<ExpertCacheStats> mine;
  if (options_.expert_cache_stats) {
    mine = options_.expert_cache_stats();
  } else {
    mine = model_->expert_cache_stats();
  }
  const ModelConfig& c = model_->config();
  const int n_moe = std::max(0, c.n_layer - c.n_dense_lead);
  std::vector<int64_t> v = EncodeCacheStats(mine, c.n_dense_lead, n_moe);
  RETURN_IF_ERROR(comm_->AllReduce(std::span<int64_t>(v), ReduceOp::kSum));
  return DecodeCacheStats(v, c.n_dense_lead, n_moe);
}

absl::Status EngineImpl::SendControl(Control kind, const std::vector<uint8_t>& payload) {
  const int64_t size = static_cast<int64_t>(payload.size());
  control_.assign(kControlBytes, 0);
  const int64_t header[2] = {static_cast<int64_t>(kind), size};
  std::memcpy(control_.data(), header, kHeaderBytes);
  const int64_t inline_bytes = std::min(size, kInlineBytes);
  if (inline_bytes > 0) std::memcpy(control_.data() + kHeaderBytes, payload.data(), inline_bytes);
  RETURN_IF_ERROR(comm_->Broadcast(control_.data(), kControlBytes, 0));
  if (size > kInlineBytes) {
    std::vector<uint8_t> rest(payload.begin() + kInlineBytes, payload.end());
    RETURN_IF_ERROR(comm_->Broadcast(rest.data(), size - kInlineBytes, 0));
  }
  return absl::OkStatus();
}

absl::Status EngineImpl::ReceiveControl(Control* kind, std::vector<uint8_t>* payload) {
  control_.assign(kControlBytes, 0);
  RETURN_IF_ERROR(comm_->Broadcast(control_.data(), kControlBytes, 0));
  int64_t header[2];
  std::memcpy(header, control_.data(), kHeaderBytes);
  if (header[0] != static_cast<int64_t>(Control::kStep) &&
      header[0] != static_cast<int64_t>(Control::kShutdown) &&
      header[0] != static_cast<int64_t>(Control::kRoutingStats) &&
      header[0] != static_cast<int64_t>(Control::kExpertCacheStats)) {
    return absl::DataLossError(absl::StrCat("engine control message of unknown kind ", header[0]));
  }
  const int64_t size = header[1];
  if (size < 0 || size > (int64_t{1} << 40)) {
    return absl::DataLossError(absl::StrCat("engine control message of ", size, " bytes"));
  }
  *kind = static_cast<Control>(header[0]);
  const int64_t inline_bytes = std::min(size, kInlineBytes);
  payload->assign(control_.begin() + kHeaderBytes, control_.begin() + kHeaderBytes + inline_bytes);
  if (size > kInlineBytes) {
    payload->resize(size);
    RETURN_IF_ERROR(comm_->Broadcast(payload->data() + kInlineBytes, size - kInlineBytes, 0));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<uint8_t>>> EngineImpl::GatherToDriver(
    const std::vector<uint8_t>& mine) {
  const int n = comm_->size();
  const int64_t my_size = static_cast<int64_t>(mine.size());
  std::vector<int64_t> sizes(n);
  RETURN_IF_ERROR(comm_->AllGather(&my_size, sizeof(int64_t), sizes.data()));
  std::vector<int64_t> send_counts(n, 0), send_displs(n, 0), recv_counts(n, 0), recv_displs(n, 0);
  send_counts[0] = my_size;
  int64_t total = 0;
  if (is_driver()) {
    for (int p = 0; p < n; ++p) {
      recv_counts[p] = sizes[p];
      recv_displs[p] = total;
      total += sizes[p];
    }
  }
  std::vector<uint8_t> all(total);
  RETURN_IF_ERROR(comm_->AllToAllV(mine.data(), send_counts, send_displs, all.data(), recv_counts,
                                   recv_displs));
  std::vector<std::vector<uint8_t>> out;
  if (is_driver()) {
    for (int p = 0; p < n; ++p) {
      out.emplace_back(all.begin() + recv_displs[p], all.begin() + recv_displs[p] + sizes[p]);
    }
  }
  return out;
}

absl::StatusOr<EngineStepResult> EngineImpl::Step(const EngineStep& step) {
  if (!is_driver()) return absl::FailedPreconditionError("Engine::Step is for rank 0 only");
  if (shut_down_) return absl::FailedPreconditionError("the engine is shut down");
  if (!broken_.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the engine failed earlier: ", broken_.message()));
  }
  ASSIGN_OR_RETURN(StepMessage m, Plan(step));
  if (absl::Status s = SendControl(Control::kStep, EncodeStepMessage(m)); !s.ok()) return Fail(s);
  RankResult mine;
  if (absl::Status s = Execute(m, &mine); !s.ok()) return Fail(s);
  absl::StatusOr<std::vector<std::vector<uint8_t>>> gathered =
      GatherToDriver(EncodeRankResult(mine));
  if (!gathered.ok()) return Fail(gathered.status());
  Commit(m);

  EngineStepResult r;
  r.tokens.assign(m.step.items.size(), -1);
  r.logits.resize(m.step.items.size());
  r.rank_times.resize(num_ranks());
  absl::Status first_error;
  for (int p = 0; p < num_ranks(); ++p) {
    RankResult theirs;
    if (p == 0) {
      theirs = std::move(mine);
    } else {
      absl::StatusOr<RankResult> decoded = DecodeRankResult((*gathered)[p]);
      if (!decoded.ok()) return Fail(decoded.status());
      theirs = std::move(*decoded);
    }
    if (!theirs.status.ok() && first_error.ok()) first_error = theirs.status;
    r.rank_times[p] = theirs.times;
    for (ItemResult& it : theirs.items) {
      if (it.item < 0 || it.item >= static_cast<int32_t>(r.tokens.size())) {
        return Fail(absl::DataLossError(absl::StrCat("rank ", p, " returned item ", it.item)));
      }
      r.tokens[it.item] = it.token;
      r.logits[it.item] = std::move(it.logits);
    }
  }
  // A sampling failure leaves every rank in step: report it, the engine stays usable.
  if (!first_error.ok()) return first_error;
  return r;
}

absl::StatusOr<RoutingStats> EngineImpl::CollectRoutingStats() {
  if (!is_driver()) {
    return absl::FailedPreconditionError("Engine::CollectRoutingStats is for rank 0 only");
  }
  if (shut_down_) return absl::FailedPreconditionError("the engine is shut down");
  if (!broken_.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the engine failed earlier: ", broken_.message()));
  }
  // Every rank has the same model and device, so none has an exchange when the driver has none:
  // refusing here, before any message, keeps the ranks in step.
  if (exchange_ == nullptr) {
    return absl::FailedPreconditionError(
        options_.device == "cpu"
            ? "no routing statistics: the model has no MoE layers"
            : "no routing statistics: they are recorded by the CPU expert exchange only");
  }
  if (absl::Status s = SendControl(Control::kRoutingStats, {}); !s.ok()) return Fail(s);
  absl::StatusOr<RoutingStats> stats = SumRoutingStats();
  if (!stats.ok()) return Fail(stats.status());
  return stats;
}

absl::StatusOr<std::optional<ExpertCacheStats>> EngineImpl::CollectExpertCacheStats() {
  if (!is_driver()) {
    return absl::FailedPreconditionError("Engine::CollectExpertCacheStats is for rank 0 only");
  }
  if (shut_down_) return absl::FailedPreconditionError("the engine is shut down");
  if (!broken_.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the engine failed earlier: ", broken_.message()));
  }
  if (absl::Status s = SendControl(Control::kExpertCacheStats, {}); !s.ok()) return Fail(s);
  absl::StatusOr<std::optional<ExpertCacheStats>> stats = SumExpertCacheStats();
  if (!stats.ok()) return Fail(stats.status());
  return stats;
}

absl::Status EngineImpl::Shutdown() {
  if (!is_driver()) return absl::FailedPreconditionError("Engine::Shutdown is for rank 0 only");
  if (shut_down_) return absl::OkStatus();
  if (!broken_.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the engine failed earlier: ", broken_.message()));
  }
  if (absl::Status s = SendControl(Control::kShutdown, {}); !s.ok()) return Fail(s);
  shut_down_ = true;
  return absl::OkStatus();
}

absl::Status EngineImpl::RunWorker() {
  if (is_driver()) return absl::FailedPreconditionError("Engine::RunWorker is for ranks > 0");
  std::vector<uint8_t> payload;
  while (true) {
    Control kind = Control::kShutdown;
    RETURN_IF_ERROR(ReceiveControl(&kind, &payload));
    if (kind == Control::kShutdown) {
      shut_down_ = true;
      return absl::OkStatus();
    }
    if (kind == Control::kRoutingStats) {
      RETURN_IF_ERROR(SumRoutingStats().status());
      continue;
    }
    if (kind == Control::kExpertCacheStats) {
      RETURN_IF_ERROR(SumExpertCacheStats().status());
      continue;
    }
    ASSIGN_OR_RETURN(StepMessage m, DecodeStepMessage(payload));
    RankResult mine;
    RETURN_IF_ERROR(Execute(m, &mine));
    RETURN_IF_ERROR(GatherToDriver(EncodeRankResult(mine)).status());
  }
}

}  // namespace

StepPhaseTimes& StepPhaseTimes::operator+=(const StepPhaseTimes& o) {
  attention_s += o.attention_s;
  moe_compute_s += o.moe_compute_s;
  dispatch_s += o.dispatch_s;
  combine_s += o.combine_s;
  other_s += o.other_s;
  tokens += o.tokens;
  return *this;
}

int EngineOptions::CudaDevice(int local_rank) const {
  int index = local_rank;
  if (device.size() > 5) (void)absl::SimpleAtoi(device.substr(5), &index);
  return index;
}

absl::StatusOr<std::string> EngineOptions::GpuExchangeFor(int n_ranks, int local_size) const {
  if (!on_gpu()) return std::string("none");
  const bool shared_gpu = device != "cuda" && local_size > 1;
  if (gpu_exchange.empty()) {
    if (n_ranks == 1) return std::string("none");
    return std::string(!shared_gpu && GpuNcclExchangeBuilt() ? "nccl" : "host");
  }
  if (gpu_exchange == "host") return std::string(n_ranks == 1 ? "none" : "host");
  if (shared_gpu) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpu-exchange nccl needs one GPU per rank (--device cuda); with --device ",
                     device, ", ", local_size,
                     " ranks of this host share one GPU, which NCCL cannot do (use --gpu-exchange "
                     "host)"));
  }
  if (!GpuNcclExchangeBuilt()) {
    return absl::UnimplementedError(
        "--gpu-exchange nccl: this tritmoe was built without NCCL (nccl.h / libnccl not found at "
        "configure time)");
  }
  return std::string("nccl");
}

absl::Status EngineOptions::Validate() const {
  if (model_path.empty()) return absl::InvalidArgumentError("no model path");
  int cuda_index = 0;
  if (device != "cpu" && device != "cuda" &&
      !(device.rfind("cuda:", 0) == 0 && absl::SimpleAtoi(device.substr(5), &cuda_index) &&
        cuda_index >= 0 && device.find_first_not_of("0123456789", 5) == std::string::npos)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device must be cpu, cuda or cuda:N (N a GPU index), got \"", device, "\""));
  }
  RETURN_IF_ERROR(model.Validate());
  if (gpu_expert_cache_bytes < 0) {
    return absl::InvalidArgumentError("--expert-cache-mb must be >= 0");
  }
  if ((gpu_expert_cache_bytes > 0 || gpu_expert_prefetch) && !on_gpu()) {
    return absl::InvalidArgumentError("the GPU expert cache needs --device cuda");
  }
  if (gpu_expert_prefetch && gpu_expert_cache_bytes == 0) {
    return absl::InvalidArgumentError("--expert-prefetch needs --expert-cache-mb > 0");
  }
  if (!gpu_exchange.empty() && gpu_exchange != "nccl" && gpu_exchange != "host") {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpu-exchange must be nccl or host, got \"", gpu_exchange, "\""));
  }
  if (!gpu_exchange.empty() && !on_gpu()) {
    return absl::InvalidArgumentError("--gpu-exchange needs --device cuda");
  }
  if (gpu_exchange == "nccl" && gpu_expert_cache_bytes > 0) {
    return absl::InvalidArgumentError(
        "--gpu-exchange nccl does not combine with the GPU expert cache (--expert-cache-mb)");
  }
  if (placement.empty()) return absl::InvalidArgumentError("empty expert placement");
  if (max_sequences < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_sequences must be >= 1, got ", max_sequences));
  }
  if (max_tokens_per_step < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens_per_step must be >= 1, got ", max_tokens_per_step));
  }
  return absl::OkStatus();
}

bool IsAgreedFailure(const absl::Status& status) {
  return !status.ok() && status.GetPayload(kAgreedPayload).has_value();
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options,
                                                       Communicator* comm) {
  auto engine = std::make_unique<EngineImpl>(options, comm);
  RETURN_IF_ERROR(engine->Init());
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace tritmoe
