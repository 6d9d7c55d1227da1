#include "runtime/gpu/gpu_model.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <iterator>
#include <map>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/thread_pool.h"
#include "experts/cuda/device_buffer.h"
#include "runtime/gpu/device_expert_exchange.h"
#include "runtime/gpu/elementwise.h"
#include "runtime/gpu/embedding.h"
#include "runtime/gpu/gpu_expert_cache.h"
#include "runtime/gpu/gpu_kv_cache.h"
#include "runtime/gpu/gpu_linear.h"
#include "runtime/gpu/gpu_weights.h"
#include "runtime/gpu/mla_attention.h"
#include "runtime/gpu/moe_route.h"
#include "runtime/gpu/pinned_buffer.h"
#include "runtime/gpu/rope.h"
#include "runtime/gpu/rope_table.h"
#include "runtime/gpu/sampling.h"
#include "runtime/gpu/step_workspace.h"
#include "runtime/model/ffn.h"
#include "runtime/model/step_input_check.h"
#include "runtime/model/weights.h"
#include "runtime/model/workspace.h"

namespace tritmoe::gpu {
namespace {

absl::Status Cuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("CUDA error in ", what, ": ", cudaGetErrorName(err), " (",
                                          cudaGetErrorString(err), ")"));
}

// An instantiated CUDA graph.
class GraphExec {
 public:
  explicit GraphExec(cudaGraphExec_t e) : e_(e) {}
  ~GraphExec() {
    if (e_ != nullptr) cudaGraphExecDestroy(e_);
  }
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  cudaGraphExec_t get() const { return e_; }

 private:
  cudaGraphExec_t e_ = nullptr;
};

// An event record that becomes an event node when the stream is being captured (a plain record
// would only mark a dependency there), so that profiles can be timed inside a graph.
void RecordEvent(CudaEvent& e, cudaStream_t stream) {
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  TM_CHECK_CUDA(cudaStreamIsCapturing(stream, &capturing));
  // The external flag is valid only while capturing (eager profiles: a plain record).
  TM_CHECK_CUDA(cudaEventRecordWithFlags(e.get(), stream,
                                         capturing == cudaStreamCaptureStatusActive
                                             ? cudaEventRecordExternal
                                             : cudaEventRecordDefault));
}

// Key lengths are bucketed so that a decode graph serves 256 consecutive positions.
constexpr int kKeyBucket = 256;
// Tokens of one step (grid limits of the row kernels).
constexpr int kMaxStepTokens = 16384;

// Device buffers of the routed experts this rank computes for an ExpertExchange, sized in one
// place for `rows` received rows (grown, never shrunk).
struct EpBuffers {
  int64_t rows = 0;
  DeviceBuffer in;      // [rows][n_embd] received rows
  DeviceBuffer gu;      // [rows][2 ff]
  DeviceBuffer act;     // [rows][ff] SwiGLU output (unfused path)
  DeviceBuffer out;     // [rows][n_embd] expert outputs
  DeviceBuffer act_ws;  // quantized activations of the widest input
  int64_t act_ws_bytes = 0;
  DeviceBuffer offsets;  // [n_expert + 1] rows of expert e: [offsets[e], offsets[e + 1])
  // Fixed: the combine reads the routed sum as one slot of weight 1 per token.
  DeviceBuffer identity;  // int32 [kMaxStepTokens]: t
  DeviceBuffer ones;      // float [kMaxStepTokens]: 1.0f

  void Reserve(int64_t want, int64_t n_embd, int64_t ff) {
    if (want <= rows) return;
    rows = std::max<int64_t>(want, 2 * rows);
    in = DeviceBuffer(sizeof(float) * rows * n_embd);
    gu = DeviceBuffer(sizeof(float) * rows * 2 * ff);
    act = DeviceBuffer(sizeof(float) * rows * ff);
    out = DeviceBuffer(sizeof(float) * rows * n_embd);
    act_ws_bytes = std::max(GpuActivationBytes(rows, n_embd), GpuActivationBytes(rows, ff));
    act_ws = DeviceBuffer(act_ws_bytes);
  }
};

}  // namespace

absl::Status GpuModelOptions::Validate() const {
  if (device < 0) return absl::InvalidArgumentError("device must be >= 0");
  if (max_context < 0) return absl::InvalidArgumentError("max_context must be >= 0");
  if (threads < 0) return absl::InvalidArgumentError("threads must be >= 0");
  if (expert_cache_bytes < 0) {
    return absl::InvalidArgumentError("expert_cache_bytes (--expert-cache-mb) must be >= 0");
  }
  if (expert_cpu < 0 || expert_cpu > 2) {
    return absl::InvalidArgumentError("expert_cpu must be 0 (off), 1 (cost model) or 2 (all)");
  }
  if (expert_cpu != 0 && expert_cache_bytes == 0) {
    return absl::InvalidArgumentError(
        "computing missed experts on the CPU (--expert-cpu) needs an expert cache budget "
        "(--expert-cache-mb)");
  }
  if (expert_prefetch && expert_cache_bytes == 0) {
    return absl::InvalidArgumentError(
        "expert prefetch (--expert-prefetch) needs an expert cache budget (--expert-cache-mb)");
  }
  if (exchange != nullptr && (expert_prefetch || expert_cpu != 0)) {
    return absl::UnimplementedError(
        "with expert parallelism (more than one rank) the GPU expert cache runs without "
        "--expert-prefetch and --expert-cpu");
  }
  if (exchange == nullptr && !local_experts.empty()) {
    return absl::InvalidArgumentError("local_experts without an expert exchange");
  }
  return absl::OkStatus();
}

class GpuModel::Impl {
 public:
  absl::Status Load(const std::string& path, const GpuModelOptions& options);
  absl::Status RunStep(std::span<const GpuSequenceInput> batch, StepOutput* out,
                       std::vector<int32_t>* next, StepProfile* profile);
  absl::StatusOr<std::unique_ptr<GpuKvCache>> NewKvCache(int64_t capacity) const;
  GpuExpertCache* cache() const { return cache_.get(); }
  std::array<double, 3> cpu_cost() const {
    return {cpu_expert_us_[0], cpu_expert_us_[1], copy_expert_us_};
  }

  GpuModelOptions options_;
  std::unique_ptr<gguf::GgufModel> gguf_;
  ModelConfig config_;
  int64_t max_context_ = 0;
  GpuWeightBytes weight_bytes_;

 private:
  absl::Status CheckBatch(std::span<const GpuSequenceInput> batch) const;
  // Enqueues the whole step; marks, when given, get an event after the embedding, after each
  // layer and after the head (n_layer + 3 events, the first before everything).
  absl::Status Enqueue(const StepShape& s, std::vector<CudaEvent>* marks);
  absl::Status Attention(int il, const StepShape& s, GpuActivations* h_act);
  absl::Status Moe(int il, const StepShape& s, GpuActivations* h_act);
  // The routed experts through the expert cache: routing to the host (one sync; the shared
  // expert runs meanwhile), misses copied, the products in rounds; then the next layer's
  // prefetch. shared_expert may be empty.
  absl::Status CachedExperts(int il, const StepShape& s, const RouteParams& rp,
                             const std::function<absl::Status(const GpuExpertSlots*)>& routed,
                             const std::function<absl::Status()>& shared_expert);
  absl::Status DenseFfn(int il, const StepShape& s, GpuActivations* h_act);
  // Expert parallelism (options_.exchange): the routing (ws_.sel_experts / sel_weights) and h of
  // T tokens to the host, Dispatch, this rank's experts over the received rows, Combine; leaves
  // the routed weighted sum in ws_.y_down rows [0, T). shared_expert (may be empty) is enqueued
  // while the downloads run. T = 0: a rank without tokens serving the others.
  absl::Status ExchangedExperts(int il, int T, const std::function<absl::Status()>& shared_expert);
  // A step with no tokens of this rank: every MoE layer's exchange, in layer order.
  absl::Status ExchangeOnlyStep();
  // The grouped gate ‖ up, SwiGLU and down GEMVs over the exchange's R received rows (ep_.in ->
  // ep_.out, CSR ep_.offsets); with slots, one cache round's experts only.
  absl::Status ExchangedExpertGemvs(int il, int64_t R, int64_t max_rows,
                                    const GpuExpertSlots* slots);

 public:
  absl::Status AttachDeviceExchange(DeviceExpertExchange* exchange);

 private:
  // Expert parallelism on device buffers (dex_): h's rows (int8 records where the routed gate ‖
  // up is tiled, else floats) and the routing of T tokens dispatched, shared_expert (may be
  // empty) enqueued, this rank's experts over every rank's received tokens, then the combine
  // into ws_.x (+ shared, + residual). T = 0: a rank without tokens serving the others.
  absl::Status DeviceExchangedExperts(int il, int T, GpuActivations* h_act,
                                      const std::function<absl::Status()>& shared_expert);
  DeviceExpertExchange* dex_ = nullptr;  // not owned
  std::vector<int> moe_index_;           // per layer: its index among the MoE layers, or -1
  // out_act->data stays null unless fused.
  void FuseQuantization(int T, RmsNormParams* norm, GpuActivations* out_act);
  // One SwiGLU FFN over `rows` rows (tokens or expert pairs): gate ‖ up into s.gu ([rows][2 ff]),
  // SwiGLU folded into down's activation quantization (into s.act_ws) where fusion is on and down
  // is tiled, else a SwiGLU kernel into s.act ([rows][ff]), then down. gu carries the input side
  // (x, rows, offsets, quantized records, slots), dn the output side (y, offsets, max_pairs,
  // slots); the rest is set here. names: the profile's three op names (static strings); slots:
  // one expert-cache round's.
  struct FfnScratch {
    float* gu = nullptr;
    float* act = nullptr;
    void* act_ws = nullptr;
    int64_t act_ws_bytes = 0;
  };
  struct FfnNames {
    const char* gate_up;
    const char* swiglu;
    const char* down;
  };
  // The routed experts' ops, whichever path runs them.
  static constexpr FfnNames kExpertOps{"experts gate+up", "experts swiglu", "experts down"};
  absl::Status Ffn(int il, const FfnNames& names, const GpuLinear& gate_up, const GpuLinear& down,
                   int64_t rows, LinearArgs gu, LinearArgs dn, const FfnScratch& s,
                   const GpuExpertSlots* slots = nullptr);
  FfnScratch StepScratch() { return {ws_.gu, ws_.ffn_act, ws_.act_tmp, ws_.act_tmp_bytes}; }
  absl::Status Head(const StepShape& s);
  absl::StatusOr<cudaGraphExec_t> Graph(const StepShape& s);

  GpuWeights weights_;
  std::unique_ptr<GpuExpertCache> cache_;  // null: every routed expert resident
  EpBuffers ep_;                           // options_.exchange only
  PinnedBuffer ep_host_;                   // a layer's routing and h, downloaded
  PinnedBuffer route_host_;                // expert offsets (and predictions) of a layer
  DeviceBuffer pred_buf_;                  // predicted experts and weights [T * k] each
  std::unique_ptr<CudaEvent> routed_;      // a layer's routing has reached the host
  // CPU compute of misses (options_.expert_cpu): the file's expert bytes, a pool, the layer's
  // input rows and pair tokens from the GPU, the outputs to upload, and the cost model.
  std::unique_ptr<Weights> cpu_weights_;
  std::unique_ptr<ThreadPool> cpu_pool_;
  Workspace cpu_ws_;
  PinnedBuffer cpu_in_, cpu_out_;
  double cpu_expert_us_[2] = {0, 0};  // one expert on the host for 1 and 8 tokens
  double copy_expert_us_ = 0;         // one expert's copy to a slot
  absl::Status MeasureCpuCost();
  StepDims dims_;
  DeviceBuffer rope_cos_, rope_sin_;
  std::unique_ptr<CudaStream> stream_;  // created once the device is known
  StepWorkspace ws_;
  PinnedBuffer staging_;  // step inputs, then sampled tokens
  // Keyed on (tokens, logits rows, keys) and, with a device exchange, every rank's tokens.
  using GraphKey = std::tuple<int, int, int, std::vector<int32_t>>;
  GraphKey KeyOf(const StepShape& s) const;
  std::map<GraphKey, std::unique_ptr<GraphExec>> graphs_;
  std::set<GraphKey> seen_shapes_;  // run once eagerly before capture
  // ProfileStep: an event after every op.
  std::vector<CudaEvent>* op_events_ = nullptr;
  std::vector<std::pair<const char*, int>>* op_names_ = nullptr;
  void Mark(const char* name, int layer) {
    if (op_events_ == nullptr || op_names_->size() >= op_events_->size()) return;
    RecordEvent((*op_events_)[op_names_->size()], stream_->get());
    op_names_->push_back({name, layer});
  }
};

absl::Status GpuModel::Impl::Load(const std::string& path, const GpuModelOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  options_ = options;
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    cudaGetLastError();
    return absl::FailedPreconditionError("no CUDA GPU is visible to this process");
  }
  if (options.device >= n_dev) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CUDA device ", options.device, " requested; ", n_dev,
        " visible (with mpirun, --device cuda gives each rank the GPU of its local rank: one GPU "
        "per rank on each host; --device cuda:N puts every rank on GPU N)"));
  }
  RETURN_IF_ERROR(Cuda(cudaSetDevice(options.device), "cudaSetDevice"));
  ASSIGN_OR_RETURN(gguf_, gguf::GgufModel::Open(path));
  ASSIGN_OR_RETURN(config_, ModelConfig::FromGguf(*gguf_));
  const ModelConfig& c = config_;
  max_context_ = options.max_context > 0 ? options.max_context : c.context_length;
  if (c.n_expert > 0 && c.n_expert_used <= 0) {
    return absl::InvalidArgumentError("MoE model without expert_used_count");
  }
  if (!options.local_experts.empty() &&
      static_cast<int64_t>(options.local_experts.size()) != c.n_expert) {
    return absl::InvalidArgumentError(
        absl::StrCat("local_experts has ", options.local_experts.size(), " flags; the model has ",
                     c.n_expert, " experts"));
  }
  ASSIGN_OR_RETURN(Weights w, Weights::Bind(*gguf_, c));
  ThreadPool pool(options.threads > 0 ? options.threads : DefaultThreadCount());
  // The expert cache: slots for what the budget buys; none when every expert fits.
  int slots = 0;
  if (options.expert_cache_bytes > 0 && c.n_expert > 0) {
    std::vector<int64_t> expert_bytes;
    for (int il = 0; il < c.n_layer; ++il) {
      if (!c.IsMoeLayer(il)) continue;
      const LayerWeights& lw = w.layer(il);
      int64_t b = 0;
      for (const MatrixStack* m : {&lw.gate_exps, &lw.up_exps, &lw.down_exps}) {
        absl::StatusOr<int64_t> mb = tritmoe::GpuWeightBytes(m->type, m->rows, m->cols);
        b += mb.ok() ? *mb : m->rows * RowBytes(m->type, m->cols);
      }
      expert_bytes.push_back(b);
    }
    slots = GpuExpertCache::SlotsFor(options.expert_cache_bytes, expert_bytes);
    if (slots >= c.n_expert) slots = 0;
  }
  ASSIGN_OR_RETURN(weights_, GpuWeights::Upload(w, c, pool, /*experts_on_host=*/slots > 0));
  stream_ = std::make_unique<CudaStream>();
  routed_ = std::make_unique<CudaEvent>();
  if (slots > 0) {
    std::vector<GpuExpertLayerSource> src;
    for (int il = 0; il < c.n_layer; ++il) {
      if (!c.IsMoeLayer(il)) continue;
      src.push_back({il, &weights_.layer(il).exp_gate_up, &weights_.layer(il).exp_down});
    }
    GpuExpertCacheOptions co;
    co.budget_bytes = options.expert_cache_bytes;
    co.prefetch = options.expert_prefetch;
    ASSIGN_OR_RETURN(cache_, GpuExpertCache::Create(std::move(src), slots, co));
    if (options.expert_cpu != 0) {
      cpu_weights_ = std::make_unique<Weights>(std::move(w));
      cpu_pool_ = std::make_unique<ThreadPool>(options.threads > 0 ? options.threads
                                                                   : DefaultThreadCount());
      RETURN_IF_ERROR(MeasureCpuCost());
    }
  }

  int64_t gate_up = 0;
  GpuWeightBytes& b = weight_bytes_;
  b.total = weights_.bytes();
  b.embd_row = weights_.token_embd_row_bytes();
  b.head = weights_.output().bytes();
  for (int il = 0; il < c.n_layer; ++il) {
    const GpuLayerWeights& l = weights_.layer(il);
    gate_up =
        std::max({gate_up, l.ffn_gate_up.rows(), l.exp_gate_up.rows(), l.shared_gate_up.rows()});
    for (const GpuLinear* m :
         {&l.qkv_a, &l.q_a, &l.kv_a, &l.q_b, &l.q, &l.attn_k, &l.attn_v, &l.attn_output}) {
      b.attn_per_layer += m->bytes();
    }
    if (c.IsMoeLayer(il)) {
      ++b.n_moe_layers;
      b.moe_fixed_per_layer += l.router.bytes() + l.shared_gate_up.bytes() + l.shared_down.bytes();
      b.expert_per_layer += l.exp_gate_up.matrix_bytes() + l.exp_down.matrix_bytes();
    } else {
      ++b.n_dense_layers;
      b.dense_ffn_per_layer += l.ffn_gate_up.bytes() + l.ffn_down.bytes();
    }
  }
  b.attn_per_layer /= std::max(1, c.n_layer);
  b.dense_ffn_per_layer /= std::max(1, b.n_dense_layers);
  b.moe_fixed_per_layer /= std::max(1, b.n_moe_layers);
  b.expert_per_layer /= std::max(1, b.n_moe_layers);
  dims_ = StepDims::From(c, gate_up);

  const RopeHostTable rope = BuildRopeTable(c.rope, max_context_);
  rope_cos_ = UploadFloats(rope.cos);
  rope_sin_ = UploadFloats(rope.sin);
  if (options.exchange != nullptr) {
    std::vector<int32_t> identity(kMaxStepTokens);
    for (int t = 0; t < kMaxStepTokens; ++t) identity[t] = t;
    ep_.identity = DeviceBuffer(sizeof(int32_t) * kMaxStepTokens);
    RETURN_IF_ERROR(Cuda(cudaMemcpy(ep_.identity.get(), identity.data(), ep_.identity.bytes(),
                                    cudaMemcpyHostToDevice),
                         "exchange identity upload"));
    ep_.ones = UploadFloats(std::vector<float>(kMaxStepTokens, 1.0f));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GpuKvCache>> GpuModel::Impl::NewKvCache(int64_t capacity) const {
  if (capacity == 0) capacity = max_context_;
  if (capacity < 0 || capacity > max_context_) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache of ", capacity,
                                                   " tokens requested; the limit is ", max_context_,
                                                   " (max context)"));
  }
  if (!LatentCacheSupports(static_cast<uint32_t>(KvCacheGgmlType(options_.kv_type)))) {
    return absl::UnimplementedError("KV cache type not supported on the GPU");
  }
  // The current device is per host thread: a server may make caches on another thread than the
  // one that loaded the model (and with one GPU per rank it need not be device 0).
  RETURN_IF_ERROR(Cuda(cudaSetDevice(options_.device), "cudaSetDevice"));
  KvCacheConfig kc;
  kc.n_layer = config_.n_layer;
  kc.kv_lora_rank = config_.kv_lora_rank;
  kc.n_rot = config_.qk_rope;
  kc.type = options_.kv_type;
  kc.capacity = capacity;
  return GpuKvCache::Create(kc);
}

absl::Status GpuModel::Impl::CheckBatch(std::span<const GpuSequenceInput> batch) const {
  if (batch.empty()) return absl::InvalidArgumentError("empty batch");
  std::set<const GpuKvCache*> seen;
  int64_t total = 0;
  for (size_t s = 0; s < batch.size(); ++s) {
    const GpuSequenceInput& in = batch[s];
    if (in.cache == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, " has no KV cache"));
    }
    if (!seen.insert(in.cache).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", s, " shares its KV cache with an earlier sequence"));
    }
    const KvCacheConfig& kc = in.cache->config();
    if (kc.type != options_.kv_type || kc.capacity > max_context_) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", s, ": the KV cache was not made for this model"));
    }
    RETURN_IF_ERROR(CheckSequenceTokens(s, kc, in.tokens, config_));
    if (in.argmax_exclude < -1 || in.argmax_exclude >= config_.n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": argmax_exclude ",
                                                     in.argmax_exclude, " is outside [-1, ",
                                                     config_.n_vocab, ")"));
    }
    absl::Status room = in.cache->CheckRoom(static_cast<int64_t>(in.tokens.size()));
    if (!room.ok()) {
      return absl::Status(room.code(), absl::StrCat("sequence ", s, ": ", room.message()));
    }
    total += static_cast<int64_t>(in.tokens.size());
  }
  if (total > kMaxStepTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("a GPU step takes at most ", kMaxStepTokens, " tokens, got ", total));
  }
  return absl::OkStatus();
}

absl::Status GpuModel::Impl::Enqueue(const StepShape& s, std::vector<CudaEvent>* marks) {
  const ModelConfig& c = config_;
  cudaStream_t st = stream_->get();
  const int T = s.tokens;
  const int64_t D = c.n_embd;
  auto mark = [&](size_t i) {
    if (marks != nullptr) RecordEvent((*marks)[i], st);
  };
  mark(0);
  EmbedParams ep;
  ep.type_id = static_cast<uint32_t>(weights_.token_embd_type());
  ep.table = weights_.token_embd();
  ep.row_bytes = weights_.token_embd_row_bytes();
  ep.cols = c.n_embd;
  ep.tokens = ws_.tokens;
  ep.n_tokens = T;
  ep.x = ws_.x;
  RETURN_IF_ERROR(Cuda(LaunchEmbed(ep, st), "embedding"));
  RETURN_IF_ERROR(
      Cuda(LaunchHeadPairs(T, c.n_head, ws_.head_offsets, ws_.head_rows, st), "head pairs"));
  mark(1);
  Mark("start", -1);
  for (int il = 0; il < c.n_layer; ++il) {
    const GpuLayerWeights& lw = weights_.layer(il);
    RmsNormParams norm;
    norm.x = ws_.x;
    norm.x_stride = D;
    norm.y = ws_.h;
    norm.y_stride = D;
    norm.n_rows = T;
    norm.n = c.n_embd;
    norm.gain = lw.attn_norm.as<float>();
    norm.eps = c.rms_eps;
    GpuActivations h_act;
    const GpuLinear& first = !lw.qkv_a.empty() ? lw.qkv_a : c.q_lora_rank > 0 ? lw.q_a : lw.kv_a;
    if (options_.fuse_small_ops && first.tiled()) FuseQuantization(T, &norm, &h_act);
    RETURN_IF_ERROR(Cuda(LaunchRmsNorm(norm, st), "attn_norm"));
    Mark("attn_norm", il);
    RETURN_IF_ERROR(Attention(il, s, &h_act));
    norm.gain = lw.ffn_norm.as<float>();
    norm.act = nullptr;
    h_act = GpuActivations();
    if (options_.fuse_small_ops) {
      norm.residual = ws_.f;  // x += attention output, inside the norm
      const GpuLinear& up = c.IsMoeLayer(il) ? lw.exp_gate_up : lw.ffn_gate_up;
      if (up.tiled()) FuseQuantization(T, &norm, &h_act);
    } else {
      RETURN_IF_ERROR(Cuda(LaunchAdd(ws_.x, ws_.f, T * D, st), "residual"));
      Mark("residual", il);
    }
    RETURN_IF_ERROR(Cuda(LaunchRmsNorm(norm, st), "ffn_norm"));
    Mark("ffn_norm", il);
    if (c.IsMoeLayer(il)) {
      RETURN_IF_ERROR(Moe(il, s, &h_act));
    } else {
      RETURN_IF_ERROR(DenseFfn(il, s, &h_act));
    }
    mark(2 + il);
  }
  RETURN_IF_ERROR(Head(s));
  Mark("head", -1);
  mark(2 + c.n_layer);
  return absl::OkStatus();
}

absl::Status GpuModel::Impl::Attention(int il, const StepShape& s, GpuActivations* h_act) {
  const ModelConfig& c = config_;
  const GpuLayerWeights& lw = weights_.layer(il);
  cudaStream_t st = stream_->get();
  const int T = s.tokens;
  const int64_t D = c.n_embd, H = c.n_head, qk = c.qk_head(), R = c.kv_lora_rank;
  const int64_t L = c.latent_row(), V = c.v_head, qlr = c.q_lora_rank;
  const int64_t kvs = qlr + L;  // qkv row: [q_a (qlr)] [latent (R)] [k_pe (n_rot)]

  LinearArgs in;  // products over the normed layer input h
  in.x = ws_.h;
  in.x_stride = D;
  in.n_x_rows = T;
  in.act_workspace = ws_.act_in;
  in.act_workspace_bytes = ws_.act_in_bytes;
  in.y = ws_.qkv;
  in.y_stride = kvs;
  in.quantized_out = h_act;
  if (h_act->data != nullptr) in.quantized = h_act;  // quantized by the norm
  if (qlr > 0) {
    if (!lw.qkv_a.empty()) {
      RETURN_IF_ERROR(lw.qkv_a.Apply(in, st));
      Mark("q_a+kv_a", il);
    } else {
      RETURN_IF_ERROR(lw.q_a.Apply(in, st));
      if (lw.q_a.tiled() && lw.kv_a.tiled()) in.quantized = h_act;
      in.y = ws_.qkv + qlr;
      RETURN_IF_ERROR(lw.kv_a.Apply(in, st));
      Mark("q_a, kv_a", il);
    }
    RmsNormParams norm;
    norm.x = ws_.qkv;
    norm.x_stride = kvs;
    norm.y = ws_.cq;
    norm.y_stride = qlr;
    norm.n_rows = T;
    norm.n = static_cast<int>(qlr);
    norm.gain = lw.attn_q_a_norm.as<float>();
    norm.eps = c.rms_eps;
    GpuActivations cq_act;
    if (options_.fuse_small_ops && lw.q_b.tiled() && qlr % 256 == 0) {
      norm.act = static_cast<uint8_t*>(ws_.act_tmp);
      cq_act = {ws_.act_tmp, T, qlr};
    }
    RETURN_IF_ERROR(Cuda(LaunchRmsNorm(norm, st), "attn_q_a_norm"));
    Mark("q_a_norm", il);
    LinearArgs qb;
    if (cq_act.data != nullptr) qb.quantized = &cq_act;
    qb.x = ws_.cq;
    qb.x_stride = qlr;
    qb.n_x_rows = T;
    qb.act_workspace = ws_.act_tmp;
    qb.act_workspace_bytes = ws_.act_tmp_bytes;
    qb.y = ws_.q;
    qb.y_stride = H * qk;
    RETURN_IF_ERROR(lw.q_b.Apply(qb, st));
    Mark("q_b", il);
  } else {
    RETURN_IF_ERROR(lw.kv_a.Apply(in, st));
    Mark("kv_a", il);
    if (lw.kv_a.tiled() && lw.q.tiled()) in.quantized = h_act;
    in.y = ws_.q;
    in.y_stride = H * qk;
    RETURN_IF_ERROR(lw.q.Apply(in, st));
    Mark("q", il);
  }
  float* kv = ws_.qkv + qlr;

  // k_pe: RoPE in place, then the latent row (normed) goes to the cache.
  RopeParams rope;
  rope.in = kv;
  rope.in_token_stride = kvs;
  rope.in_offset = R;
  rope.out = kv;
  rope.out_token_stride = kvs;
  rope.out_offset = R;
  rope.n_tokens = T;
  rope.n_heads = 1;
  rope.n_rot = c.qk_rope;
  rope.pos = ws_.pos;
  rope.cos = rope_cos_.as<float>();
  rope.sin = rope_sin_.as<float>();
  RETURN_IF_ERROR(Cuda(LaunchRope(rope, st), "rope k_pe"));
  Mark("rope k_pe", il);
  KvCacheConfig kc;
  kc.n_layer = c.n_layer;
  kc.kv_lora_rank = c.kv_lora_rank;
  kc.n_rot = c.qk_rope;
  kc.type = options_.kv_type;
  LatentWriteParams lwp;
  lwp.kv = kv;
  lwp.kv_stride = kvs;
  lwp.rows = ws_.rows;
  lwp.layer = il;
  lwp.n_tokens = T;
  lwp.R = static_cast<int>(R);
  lwp.n_rot = c.qk_rope;
  lwp.padded = static_cast<int>(kc.padded_row_elems());
  lwp.row_bytes = kc.row_bytes();
  lwp.type_id = static_cast<uint32_t>(KvCacheGgmlType(options_.kv_type));
  lwp.gain = lw.attn_kv_a_norm.as<float>();
  lwp.eps = c.rms_eps;
  RETURN_IF_ERROR(Cuda(LaunchLatentWrite(lwp, st), "latent cache write"));
  Mark("latent write", il);

  // Absorbed queries: qa[t][h] = K_h^T q_nope[t][h] ‖ rope(q_pe[t][h]).
  LinearArgs qk_args;
  qk_args.x = ws_.q;
  qk_args.x_stride = qk;
  qk_args.n_x_rows = T * H;
  qk_args.offsets = ws_.head_offsets;
  qk_args.x_rows = ws_.head_rows;
  qk_args.y_rows = ws_.head_rows;
  qk_args.max_pairs = T;
  qk_args.y = ws_.qa;
  qk_args.y_stride = L;
  RETURN_IF_ERROR(lw.attn_k.Apply(qk_args, st));
  Mark("q_abs (attn_k)", il);
  rope.in = ws_.q;
  rope.in_token_stride = H * qk;
  rope.in_head_stride = qk;
  rope.in_offset = c.qk_nope;
  rope.out = ws_.qa;
  rope.out_token_stride = H * L;
  rope.out_head_stride = L;
  rope.out_offset = R;
  rope.n_heads = static_cast<int>(H);
  RETURN_IF_ERROR(Cuda(LaunchRope(rope, st), "rope q_pe"));
  Mark("rope q_pe", il);

  // Scores, softmax and the weighted latent sum, in chunks of query rows.
  const int chunk = StepWorkspace::AttentionChunk(dims_, T, s.keys);
  for (int t0 = 0; t0 < T; t0 += chunk) {
    MlaParams mp;
    mp.qa = ws_.qa + t0 * H * L;
    mp.rows = ws_.rows + t0;
    mp.layer = il;
    mp.n_tokens = std::min(chunk, T - t0);
    mp.n_heads = static_cast<int>(H);
    mp.R = static_cast<int>(R);
    mp.L = static_cast<int>(L);
    mp.row_bytes = kc.row_bytes();
    mp.type_id = lwp.type_id;
    mp.scores = ws_.scores;
    mp.max_keys = s.keys;
    mp.kq_scale = c.kq_scale;
    mp.o_lat = ws_.o_lat + t0 * H * R;
    RETURN_IF_ERROR(Cuda(LaunchMlaScores(mp, st), "attention scores"));
    RETURN_IF_ERROR(Cuda(LaunchMlaSoftmax(mp, st), "attention softmax"));
    RETURN_IF_ERROR(Cuda(LaunchMlaWeightedSum(mp, st), "attention weighted sum"));
    Mark("attention", il);
  }

  // o[t][h] = V_h o_lat[t][h], then attn_output.
  LinearArgs va;
  va.x = ws_.o_lat;
  va.x_stride = R;
  va.n_x_rows = T * H;
  va.offsets = ws_.head_offsets;
  va.x_rows = ws_.head_rows;
  va.y_rows = ws_.head_rows;
  va.max_pairs = T;
  va.y = ws_.o;
  va.y_stride = V;
  va.act_workspace = ws_.act_tmp;
  va.act_workspace_bytes = ws_.act_tmp_bytes;
  RETURN_IF_ERROR(lw.attn_v.Apply(va, st));
  Mark("attn_v", il);
  LinearArgs out;
  out.x = ws_.o;
  out.x_stride = H * V;
  out.n_x_rows = T;
  out.y = ws_.f;
  out.y_stride = D;
  out.act_workspace = ws_.act_tmp;
  out.act_workspace_bytes = ws_.act_tmp_bytes;
  RETURN_IF_ERROR(lw.attn_output.Apply(out, st));
  Mark("attn_output", il);
  return absl::OkStatus();
}

void GpuModel::Impl::FuseQuantization(int T, RmsNormParams* norm, GpuActivations* out_act) {
  if (norm->n % 256 != 0 || norm->y_stride != norm->n) return;
  norm->act = static_cast<uint8_t*>(ws_.act_in);
  *out_act = {ws_.act_in, T, norm->n};
}

absl::Status GpuModel::Impl::Ffn(int il, const FfnNames& names, const GpuLinear& gate_up,
                                 const GpuLinear& down, int64_t rows, LinearArgs gu, LinearArgs dn,
                                 const FfnScratch& s, const GpuExpertSlots* slots) {
  cudaStream_t st = stream_->get();
  if (slots != nullptr) {  // one cache round: its slots, experts outside it skipped
    gu.slots = slots->gate_up;
    gu.expert_slot = slots->expert_slot;
    dn.slots = slots->down;
    dn.expert_slot = slots->expert_slot;
  }
  if (gu.offsets != nullptr) {  // routed experts: `rows` pairs (picks the GEMV kernel)
    gu.total_pairs = rows;
    dn.total_pairs = rows;
  }
  const int64_t ff = gate_up.rows() / 2;
  gu.y = s.gu;
  gu.y_stride = 2 * ff;
  RETURN_IF_ERROR(gate_up.Apply(gu, st));
  Mark(names.gate_up, il);
  GpuActivations dn_act;
  if (options_.fuse_small_ops && down.tiled() && ff % 256 == 0 && down.cols() == ff) {
    RETURN_IF_ERROR(
        QuantizeSwiGluActivationsGpu(s.gu, rows, ff, s.act_ws, s.act_ws_bytes, st, &dn_act));
    dn.quantized = &dn_act;
  } else {
    SwiGluParams sw;
    sw.gu = s.gu;
    sw.out = s.act;
    sw.n_rows = static_cast<int>(rows);
    sw.n_ff = static_cast<int>(ff);
    RETURN_IF_ERROR(Cuda(LaunchSwiGlu(sw, st), "swiglu"));
  }
  Mark(names.swiglu, il);
  dn.x = s.act;
  dn.x_stride = ff;
  dn.n_x_rows = rows;
  dn.act_workspace = s.act_ws;
  dn.act_workspace_bytes = s.act_ws_bytes;
  RETURN_IF_ERROR(down.Apply(dn, st));
  Mark(names.down, il);
  return absl::OkStatus();
}

absl::Status GpuModel::Impl::DenseFfn(int il, const StepShape& s, GpuActivations* h_act) {
  const ModelConfig& c = config_;
  const GpuLayerWeights& lw = weights_.layer(il);
  cudaStream_t st = stream_->get();
  const int T = s.tokens;
  const int64_t D = c.n_embd;
  LinearArgs gu;
  gu.x = ws_.h;
  gu.x_stride = D;
  gu.n_x_rows = T;
  gu.act_workspace = ws_.act_in;
  gu.act_workspace_bytes = ws_.act_in_bytes;
  gu.quantized_out = h_act;
  if (h_act->data != nullptr) gu.quantized = h_act;
  LinearArgs dn;
  dn.y = ws_.f;
  dn.y_stride = D;
  RETURN_IF_ERROR(Ffn(il, {"ffn gate+up", "ffn swiglu", "ffn down"}, lw.ffn_gate_up, lw.ffn_down, T,
                      gu, dn, StepScratch()));
  RETURN_IF_ERROR(Cuda(LaunchAdd(ws_.x, ws_.f, T * D, st), "residual"));
  Mark("residual", il);
  return absl::OkStatus();
}

absl::Status GpuModel::Impl::Moe(int il, const StepShape& s, GpuActivations* h_act) {
  const ModelConfig& c = config_;
  const GpuLayerWeights& lw = weights_.layer(il);
  cudaStream_t st = stream_->get();
  const int T = s.tokens, k = c.n_expert_used, E = c.n_expert;
  const int64_t D = c.n_embd, P = static_cast<int64_t>(T) * k;

  LinearArgs router;
  router.x = ws_.h;
  router.x_stride = D;
  router.n_x_rows = T;
  router.y = ws_.router_logits;
  router.y_stride = E;
  RETURN_IF_ERROR(lw.router.Apply(router, st));
  Mark("router", il);
  RouteParams rp;
  rp.logits = ws_.router_logits;
  rp.bias = lw.exp_probs_b.bytes() > 0 ? lw.exp_probs_b.as<float>() : nullptr;
  rp.n_tokens = T;
  rp.n_expert = E;
  rp.k = k;
  rp.gating = static_cast<int>(c.gating);
  rp.group_limited = c.group_limited;
  rp.n_group = c.n_group;
  rp.n_group_used = c.n_group_used;
  rp.weights_norm = c.weights_norm;
  rp.weights_scale = c.weights_scale;
  rp.experts = ws_.sel_experts;
  rp.weights = ws_.sel_weights;
  GroupParams gp;
  gp.experts = ws_.sel_experts;
  gp.n_tokens = T;
  gp.k = k;
  gp.n_expert = E;
  gp.offsets = ws_.expert_offsets;
  gp.pair_token = ws_.pair_token;
  gp.slot_pair = ws_.slot_pair;
  if (options_.fuse_small_ops && RouteAndGroupFits(rp)) {
    RETURN_IF_ERROR(Cuda(LaunchRouteAndGroup(rp, gp, st), "route + group"));
    Mark("route+group", il);
  } else {
    RETURN_IF_ERROR(Cuda(LaunchRoute(rp, st), "router"));
    Mark("route", il);
    RETURN_IF_ERROR(Cuda(LaunchGroupByExpert(gp, st), "group by expert"));
    Mark("group", il);
  }

  // Routed experts: gate ‖ up over the pairs, SwiGLU, down; `slots` when cached (one round).
  auto routed = [&](const GpuExpertSlots* slots) -> absl::Status {
    LinearArgs gu;
    gu.x = ws_.h;
    gu.x_stride = D;
    gu.n_x_rows = T;
    gu.offsets = ws_.expert_offsets;
    gu.x_rows = ws_.pair_token;
    gu.max_pairs = T;
    gu.act_workspace = ws_.act_in;
    gu.act_workspace_bytes = ws_.act_in_bytes;
    gu.quantized_out = h_act;
    if (h_act->data != nullptr) gu.quantized = h_act;
    LinearArgs dn;
    dn.offsets = ws_.expert_offsets;
    dn.max_pairs = T;
    dn.y = ws_.y_down;
    dn.y_stride = D;
    return Ffn(il, kExpertOps, lw.exp_gate_up, lw.exp_down, P, gu, dn, StepScratch(), slots);
  };
  const bool shared = !lw.shared_gate_up.empty();
  auto shared_expert = [&]() -> absl::Status {
    LinearArgs sgu;
    sgu.x = ws_.h;
    sgu.x_stride = D;
    sgu.n_x_rows = T;
    sgu.act_workspace = ws_.act_in;
    sgu.act_workspace_bytes = ws_.act_in_bytes;
    if (lw.exp_gate_up.tiled() && lw.shared_gate_up.tiled()) {
      // Shares h's quantization with the routed gate ‖ up, whichever runs first.
      if (h_act->data != nullptr) {
        sgu.quantized = h_act;
      } else {
        sgu.quantized_out = h_act;
      }
    }
    LinearArgs sdn;
    sdn.y = ws_.shared_out;
    sdn.y_stride = D;
    return Ffn(il, {"shared gate+up", "shared swiglu", "shared down"}, lw.shared_gate_up,
               lw.shared_down, T, sgu, sdn, StepScratch());
  };

  if (dex_ != nullptr) {
    std::function<absl::Status()> sh;
    if (shared) sh = shared_expert;
    return DeviceExchangedExperts(il, T, h_act, sh);
  }
  if (options_.exchange != nullptr) {
    // The routed sum arrives already weighted (ws_.y_down rows [0, T)): the combine reads it as
    // one slot of weight 1.0f per token, so that x += (0.0f + 1.0f * y) + shared is exactly the
    // CPU model's y (Combine from 0.0f) + shared, + residual.
    std::function<absl::Status()> sh;
    if (shared) sh = shared_expert;
    RETURN_IF_ERROR(ExchangedExperts(il, T, sh));
    CombineParams cp;
    cp.x = ws_.x;
    cp.y = ws_.y_down;
    cp.pair = ep_.identity.as<int32_t>();
    cp.w = ep_.ones.as<float>();
    cp.shared = shared ? ws_.shared_out : nullptr;
    cp.n_tokens = T;
    cp.k = 1;
    cp.n = static_cast<int>(D);
    RETURN_IF_ERROR(Cuda(LaunchCombine(cp, st), "combine"));
    Mark("combine", il);
    return absl::OkStatus();
  }
  if (cache_ == nullptr) {
    RETURN_IF_ERROR(routed(nullptr));
    if (shared) RETURN_IF_ERROR(shared_expert());
  } else {
    std::function<absl::Status()> sh;
    if (shared) sh = shared_expert;
    RETURN_IF_ERROR(CachedExperts(il, s, rp, routed, sh));
  }
  CombineParams cp;
  cp.x = ws_.x;
  cp.y = ws_.y_down;
  cp.pair = ws_.slot_pair;
  cp.w = ws_.sel_weights;
  cp.shared = shared ? ws_.shared_out : nullptr;
  cp.n_tokens = T;
  cp.k = k;
  cp.n = static_cast<int>(D);
  RETURN_IF_ERROR(Cuda(LaunchCombine(cp, st), "combine"));
  Mark("combine", il);
  return absl::OkStatus();
}

absl::Status GpuModel::Impl::CachedExperts(
    int il, const StepShape& s, const RouteParams& rp,
    const std::function<absl::Status(const GpuExpertSlots*)>& routed,
    const std::function<absl::Status()>& shared_expert) {
  const ModelConfig& c = config_;
  cudaStream_t st = stream_->get();
  const int T = s.tokens, k = c.n_expert_used, E = c.n_expert;
  const int li = cache_->IndexOf(il);
  if (li < 0) return absl::InternalError(absl::StrCat("layer ", il, " has no expert cache"));
  // The next MoE layer's router on this layer's normed input: its likely experts.
  const int next = il + 1 < c.n_layer && c.IsMoeLayer(il + 1) ? il + 1 : -1;
  const bool predict = options_.expert_prefetch && next >= 0;
  const size_t route_ints = static_cast<size_t>(E + 1) + (predict ? size_t(T) * k : 0);
  if (route_host_.bytes() < route_ints * sizeof(int32_t)) {
    route_host_ = PinnedBuffer(route_ints * sizeof(int32_t) * 2);
  }
  int32_t* host = reinterpret_cast<int32_t*>(route_host_.get());
  RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(host, ws_.expert_offsets, (E + 1) * sizeof(int32_t),
                                       cudaMemcpyDeviceToHost, st),
                       "routing download"));
  if (predict) {
    const size_t pred_bytes = size_t(2) * T * k * sizeof(int32_t);
    if (pred_buf_.bytes() < pred_bytes) pred_buf_ = DeviceBuffer(pred_bytes * 2);
    const GpuLayerWeights& nw = weights_.layer(next);
    LinearArgs router;
    router.x = ws_.h;
    router.x_stride = c.n_embd;
    router.n_x_rows = T;
    router.y = ws_.router_logits;  // this layer's routing has consumed them
    router.y_stride = E;
    RETURN_IF_ERROR(nw.router.Apply(router, st));
    RouteParams np = rp;
    np.bias = nw.exp_probs_b.bytes() > 0 ? nw.exp_probs_b.as<float>() : nullptr;
    np.experts = pred_buf_.as<int32_t>();
    np.weights = reinterpret_cast<float*>(pred_buf_.as<int32_t>() + size_t(T) * k);
    RETURN_IF_ERROR(Cuda(LaunchRoute(np, st), "prefetch route"));
    RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(host + E + 1, np.experts, size_t(T) * k * sizeof(int32_t),
                                         cudaMemcpyDeviceToHost, st),
                         "prediction download"));
  }
  const bool cpu = options_.expert_cpu != 0 && T <= GpuModelOptions::kMaxCpuExpertTokens;
  const int64_t D = c.n_embd, P = int64_t{T} * k;
  if (cpu) {
    const size_t in_bytes = sizeof(float) * T * D + sizeof(int32_t) * P;
    if (cpu_in_.bytes() < in_bytes) cpu_in_ = PinnedBuffer(in_bytes);
    if (cpu_out_.bytes() < sizeof(float) * P * D) cpu_out_ = PinnedBuffer(sizeof(float) * P * D);
    RETURN_IF_ERROR(Cuda(
        cudaMemcpyAsync(cpu_in_.get(), ws_.h, sizeof(float) * T * D, cudaMemcpyDeviceToHost, st),
        "input download"));
    RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(cpu_in_.get() + sizeof(float) * T * D, ws_.pair_token,
                                         sizeof(int32_t) * P, cudaMemcpyDeviceToHost, st),
                         "pair download"));
  }
  RETURN_IF_ERROR(Cuda(cudaEventRecord(routed_->get(), st), "record routing"));
  // The shared expert runs while the host plans and the misses copy.
  if (shared_expert) RETURN_IF_ERROR(shared_expert());
  RETURN_IF_ERROR(Cuda(cudaEventSynchronize(routed_->get()), "routing wait"));
  std::vector<int32_t> experts, on_cpu;
  for (int e = 0; e < E; ++e) {
    if (host[e + 1] > host[e]) experts.push_back(e);
  }
  if (cpu) {
    // Which misses the host computes: all (mode 2), or, cheapest first, as long as the host
    // finishes before the copies still left to the copy engine (mode 1).
    std::vector<int32_t> misses;
    for (int32_t e : experts) {
      if (!cache_->Resident(li, e)) misses.push_back(e);
    }
    std::stable_sort(misses.begin(), misses.end(), [&](int32_t a, int32_t b) {
      return host[a + 1] - host[a] < host[b + 1] - host[b];
    });
    double copy_left = copy_expert_us_ * misses.size(), cpu_us = 0;
    for (int32_t e : misses) {
      const int n = host[e + 1] - host[e];
      const double t =
          cpu_expert_us_[0] + (cpu_expert_us_[1] - cpu_expert_us_[0]) * (std::min(n, 8) - 1) / 7;
      if (options_.expert_cpu == 1 && cpu_us + t > copy_left - copy_expert_us_) break;
      cpu_us += t;
      copy_left -= copy_expert_us_;
      on_cpu.push_back(e);
    }
    std::sort(on_cpu.begin(), on_cpu.end());
    std::vector<int32_t> rest;
    std::set_difference(experts.begin(), experts.end(), on_cpu.begin(), on_cpu.end(),
                        std::back_inserter(rest));
    experts.swap(rest);
    cache_->CountCpu(li, static_cast<int64_t>(on_cpu.size()));
  }
  ASSIGN_OR_RETURN(const int rounds, cache_->Begin(li, experts, T));
  for (int r = 0; r < rounds; ++r) {
    ASSIGN_OR_RETURN(const GpuExpertSlots slots, cache_->EnqueueRound(r, st));
    RETURN_IF_ERROR(routed(&slots));
    RETURN_IF_ERROR(cache_->EndRound(r, st));
  }
  if (!on_cpu.empty()) {
    // The GPU runs the rounds meanwhile; each host expert's rows then go to its pairs' rows of
    // y_down (the GEMVs skipped them), before the combine.
    const float* h = reinterpret_cast<const float*>(cpu_in_.get());
    const int32_t* pair_token =
        reinterpret_cast<const int32_t*>(cpu_in_.get() + sizeof(float) * T * D);
    float* y = reinterpret_cast<float*>(cpu_out_.get());
    const LayerWeights& lw = cpu_weights_->layer(il);
    for (int32_t e : on_cpu) {
      const int p0 = host[e], n = host[e + 1] - host[e];
      float* x = cpu_ws_.Get(Buf::kIn, int64_t{n} * D);
      for (int i = 0; i < n; ++i) {
        std::memcpy(x + int64_t{i} * D, h + int64_t{pair_token[p0 + i]} * D, sizeof(float) * D);
      }
      SwiGluFfn(lw.Expert(e), x, n, y + int64_t{p0} * D, *cpu_pool_, ActPrecision::kQuantized,
                cpu_ws_);
      RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(ws_.y_down + int64_t{p0} * D, y + int64_t{p0} * D,
                                           sizeof(float) * n * D, cudaMemcpyHostToDevice, st),
                           "host expert upload"));
    }
  }
  if (predict) {
    // Most wanted first: by the number of tokens that picked each expert.
    std::vector<int32_t> count(E, 0);
    for (int64_t i = 0; i < int64_t{T} * k; ++i) {
      const int32_t e = host[E + 1 + i];
      if (e >= 0 && e < E) ++count[e];
    }
    std::vector<int32_t> order;
    for (int e = 0; e < E; ++e) {
      if (count[e] > 0) order.push_back(e);
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return count[a] > count[b]; });
    RETURN_IF_ERROR(cache_->Prefetch(cache_->IndexOf(next), order));
  }
  return absl::OkStatus();
}

absl::Status GpuModel::Impl::ExchangedExperts(int il, int T,
                                              const std::function<absl::Status()>& shared_expert) {
  const ModelConfig& c = config_;
  const GpuLayerWeights& lw = weights_.layer(il);
  cudaStream_t st = stream_->get();
  const int k = c.n_expert_used, E = c.n_expert;
  const int64_t D = c.n_embd, P = int64_t{T} * k, ff = lw.exp_gate_up.rows() / 2;
  // Routing (experts, weights) and h of this rank's tokens to the host.
  const size_t host_bytes = sizeof(int32_t) * P + sizeof(float) * P + sizeof(float) * T * D;
  if (ep_host_.bytes() < host_bytes) ep_host_ = PinnedBuffer(host_bytes * 2);
  int32_t* host_experts = reinterpret_cast<int32_t*>(ep_host_.get());
  float* host_weights = reinterpret_cast<float*>(host_experts + P);
  float* host_h = host_weights + P;
  if (T > 0) {
    RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(host_experts, ws_.sel_experts, sizeof(int32_t) * P,
                                         cudaMemcpyDeviceToHost, st),
                         "routing download"));
    RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(host_weights, ws_.sel_weights, sizeof(float) * P,
                                         cudaMemcpyDeviceToHost, st),
                         "routing weights download"));
    RETURN_IF_ERROR(
        Cuda(cudaMemcpyAsync(host_h, ws_.h, sizeof(float) * T * D, cudaMemcpyDeviceToHost, st),
             "layer input download"));
    RETURN_IF_ERROR(Cuda(cudaEventRecord(routed_->get(), st), "record routing"));
    // The shared expert runs on the GPU while the host exchanges rows.
    if (shared_expert) RETURN_IF_ERROR(shared_expert());
    RETURN_IF_ERROR(Cuda(cudaEventSynchronize(routed_->get()), "routing wait"));
  }
  Routing routing;
  routing.n_tokens = T;
  routing.k = k;
  routing.experts.assign(host_experts, host_experts + P);
  routing.weights.assign(host_weights, host_weights + P);
  ExpertBatch batch;
  RETURN_IF_ERROR(options_.exchange->Dispatch(il, host_h, D, routing, &batch));
  const int64_t R = batch.n_rows();
  // The received rows as a CSR over all E experts (zero rows for the others), as the grouped
  // GEMVs take it.
  if (batch.offsets.size() != batch.experts.size() + 1 && !(R == 0 && batch.offsets.empty())) {
    return absl::InternalError(absl::StrCat("MoE layer ", il, ": the exchange returned ",
                                            batch.experts.size(), " experts and ",
                                            batch.offsets.size(), " offsets"));
  }
  if (static_cast<int64_t>(batch.input.size()) != R * D ||
      static_cast<int64_t>(batch.output.size()) != R * D) {
    return absl::InternalError(
        absl::StrCat("MoE layer ", il, ": the exchange's rows do not match its offsets"));
  }
  if (R > 0) {
    std::vector<int32_t> offsets(E + 1, 0);
    int64_t max_rows = 0;
    int32_t prev = -1;
    for (size_t i = 0; i < batch.experts.size(); ++i) {
      const int32_t e = batch.experts[i];
      const bool local =
          options_.local_experts.empty() || (e >= 0 && e < E && options_.local_experts[e]);
      if (e < 0 || e >= E || !local) {
        return absl::FailedPreconditionError(absl::StrCat(
            "MoE layer ", il, ": expert ", e, " was dispatched to a rank that does not hold it"));
      }
      // The grouped GEMVs take one CSR over expert ids (ExpertBatch: experts ascending).
      if (e <= prev) {
        return absl::InternalError(absl::StrCat("MoE layer ", il,
                                                ": the exchange's experts are not "
                                                "ascending (",
                                                prev, " then ", e, ")"));
      }
      const int64_t n = batch.offsets[i + 1] - batch.offsets[i];
      if (n < 0) return absl::InternalError("the exchange's offsets decrease");
      max_rows = std::max(max_rows, n);
      offsets[e + 1] = static_cast<int32_t>(n);
      prev = e;
    }
    for (int e = 0; e < E; ++e) offsets[e + 1] += offsets[e];
    ep_.Reserve(R, D, ff);
    if (ep_.offsets.bytes() < sizeof(int32_t) * (E + 1)) {
      ep_.offsets = DeviceBuffer(sizeof(int32_t) * (E + 1));
    }
    RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(ep_.offsets.get(), offsets.data(),
                                         sizeof(int32_t) * (E + 1), cudaMemcpyHostToDevice, st),
                         "exchange offsets upload"));
    RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(ep_.in.get(), batch.input.data(), sizeof(float) * R * D,
                                         cudaMemcpyHostToDevice, st),
                         "exchange rows upload"));
    // With a cache: the received rows' experts (all local) in rounds of resident slots, as
    // CachedExperts; each round's GEMVs skip the experts outside it.
    int rounds = 1, li = -1;
    if (cache_ != nullptr) {
      li = cache_->IndexOf(il);
      if (li < 0) return absl::InternalError(absl::StrCat("layer ", il, " has no expert cache"));
      ASSIGN_OR_RETURN(rounds, cache_->Begin(li, batch.experts, T));
    }
    for (int r = 0; r < rounds; ++r) {
      GpuExpertSlots slots;
      if (cache_ != nullptr) {
        ASSIGN_OR_RETURN(slots, cache_->EnqueueRound(r, st));
      }
      RETURN_IF_ERROR(ExchangedExpertGemvs(il, R, max_rows, cache_ ? &slots : nullptr));
      if (cache_ != nullptr) RETURN_IF_ERROR(cache_->EndRound(r, st));
    }
    RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(batch.output.data(), ep_.out.get(), sizeof(float) * R * D,
                                         cudaMemcpyDeviceToHost, st),
                         "expert outputs download"));
    RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(st), "experts"));
  }
  std::vector<float> y(static_cast<size_t>(T) * D);
  RETURN_IF_ERROR(options_.exchange->Combine(batch, routing, y.data()));
  if (T > 0) {
    // Pageable source: the copy is complete when cudaMemcpyAsync returns, so y may go.
    RETURN_IF_ERROR(Cuda(
        cudaMemcpyAsync(ws_.y_down, y.data(), sizeof(float) * T * D, cudaMemcpyHostToDevice, st),
        "routed sum upload"));
  }
  return absl::OkStatus();
}

absl::Status GpuModel::Impl::ExchangedExpertGemvs(int il, int64_t R, int64_t max_rows,
                                                  const GpuExpertSlots* slots) {
  const GpuLayerWeights& lw = weights_.layer(il);
  const int64_t D = config_.n_embd;
  LinearArgs gu;
  gu.x = ep_.in.as<float>();
  gu.x_stride = D;
  gu.n_x_rows = R;
  gu.offsets = ep_.offsets.as<int32_t>();
  gu.max_pairs = static_cast<int>(max_rows);
  gu.act_workspace = ep_.act_ws.get();
  gu.act_workspace_bytes = ep_.act_ws_bytes;
  LinearArgs dn;
  dn.offsets = ep_.offsets.as<int32_t>();
  dn.max_pairs = static_cast<int>(max_rows);
  dn.y = ep_.out.as<float>();
  dn.y_stride = D;
  return Ffn(il, kExpertOps, lw.exp_gate_up, lw.exp_down, R, gu, dn,
             {ep_.gu.as<float>(), ep_.act.as<float>(), ep_.act_ws.get(), ep_.act_ws_bytes}, slots);
}

absl::Status GpuModel::Impl::ExchangeOnlyStep() {
  RETURN_IF_ERROR(Cuda(cudaSetDevice(options_.device), "cudaSetDevice"));
  if (dex_ != nullptr) {
    ASSIGN_OR_RETURN(const bool moved, dex_->BeginStep(0));
    if (moved) {
      graphs_.clear();
      seen_shapes_.clear();
    }
  }
  for (int il = 0; il < config_.n_layer; ++il) {
    if (!config_.IsMoeLayer(il)) continue;
    if (dex_ != nullptr) {
      GpuActivations none;
      RETURN_IF_ERROR(DeviceExchangedExperts(il, 0, &none, nullptr));
    } else {
      absl::Status s = ExchangedExperts(il, 0, nullptr);
      if (!s.ok() && cache_ != nullptr) {
        cudaStreamSynchronize(stream_->get());
        cache_->Clear();  // planned copies may not have been issued
      }
      RETURN_IF_ERROR(s);
    }
  }
  RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream_->get()), "exchange-only step"));
  if (cache_ != nullptr) cache_->FinishStep();
  return absl::OkStatus();
}

absl::Status GpuModel::Impl::DeviceExchangedExperts(
    int il, int T, GpuActivations* h_act, const std::function<absl::Status()>& shared_expert) {
  const ModelConfig& c = config_;
  const GpuLayerWeights& lw = weights_.layer(il);
  cudaStream_t st = stream_->get();
  const int64_t D = c.n_embd;
  // What the routed gate ‖ up reads goes out: int8 records (exact, 3.4x smaller than floats)
  // where it is tiled, else float rows.
  const bool tiled = lw.exp_gate_up.tiled();
  const void* rows = ws_.h;
  int64_t row_bytes = int64_t{sizeof(float)} * D;
  if (tiled) {
    if (T > 0 && h_act->data == nullptr) {
      RETURN_IF_ERROR(QuantizeActivationsGpu(ws_.h, T, D, ws_.act_in, ws_.act_in_bytes, st, h_act));
    }
    rows = h_act->data;
    row_bytes = GpuActivationBytes(1, D);
  }
  ASSIGN_OR_RETURN(const ExchangeReceived r, dex_->Dispatch(moe_index_[il], rows, row_bytes,
                                                            ws_.sel_experts, ws_.sel_weights, st));
  Mark("dispatch", il);
  if (shared_expert) RETURN_IF_ERROR(shared_expert());
  const int64_t N = r.n_tokens, P = N * c.n_expert_used;
  if (N > 0) {
    // The grouped GEMVs of the resident path over every rank's tokens (max_pairs = all of them).
    const GpuActivations received{r.rows, N, D};
    LinearArgs gu;
    gu.x = static_cast<const float*>(r.rows);
    gu.x_stride = D;
    gu.n_x_rows = N;
    gu.offsets = r.offsets;
    gu.x_rows = r.pair_token;
    gu.max_pairs = static_cast<int>(N);
    if (tiled) gu.quantized = &received;
    LinearArgs dn;
    dn.offsets = r.offsets;
    dn.max_pairs = static_cast<int>(N);
    dn.y = r.y;
    dn.y_stride = D;
    RETURN_IF_ERROR(Ffn(il, kExpertOps, lw.exp_gate_up, lw.exp_down, P, gu, dn,
                        {r.gu, r.act, r.act_ws, r.act_ws_bytes}));
  }
  RETURN_IF_ERROR(dex_->Combine(ws_.x, shared_expert ? ws_.shared_out : nullptr, st));
  Mark("combine", il);
  return absl::OkStatus();
}

absl::Status GpuModel::Impl::AttachDeviceExchange(DeviceExpertExchange* exchange) {
  const ModelConfig& c = config_;
  if (exchange == nullptr) return absl::InvalidArgumentError("no device exchange");
  if (options_.exchange != nullptr || cache_ != nullptr) {
    return absl::FailedPreconditionError(
        "the device expert exchange does not combine with the host-staged exchange or the GPU "
        "expert cache");
  }
  const DeviceExchangeConfig& x = exchange->config();
  std::vector<int> index(c.n_layer, -1);
  int n_moe = 0;
  int64_t ff = 0;
  for (int il = 0; il < c.n_layer; ++il) {
    if (!c.IsMoeLayer(il)) continue;
    index[il] = n_moe++;
    ff = std::max(ff, weights_.layer(il).exp_gate_up.rows() / 2);
  }
  if (n_moe != exchange->n_moe_layers() || x.n_expert != c.n_expert || x.k != c.n_expert_used ||
      x.n_embd != c.n_embd || x.max_ff < ff) {
    return absl::InvalidArgumentError(
        absl::StrCat("the device expert exchange was made for ", exchange->n_moe_layers(),
                     " MoE layers of ", x.n_expert, " experts (top-", x.k, ", width ", x.n_embd,
                     ", ff ", x.max_ff, "); the model has ", n_moe, " of ", c.n_expert, " (top-",
                     c.n_expert_used, ", width ", c.n_embd, ", ff ", ff, ")"));
  }
  moe_index_ = std::move(index);
  dex_ = exchange;
  graphs_.clear();
  seen_shapes_.clear();
  return absl::OkStatus();
}

absl::Status GpuModel::Impl::MeasureCpuCost() {
  const ModelConfig& c = config_;
  int il = 0;
  while (il < c.n_layer && !c.IsMoeLayer(il)) ++il;
  if (il == c.n_layer) return absl::OkStatus();
  const FfnWeights fw = cpu_weights_->layer(il).Expert(0);
  std::vector<float> x(8 * fw.gate.cols, 0.01f), y(8 * fw.down.rows);
  for (int i = 0; i < 2; ++i) {
    const int n = i == 0 ? 1 : 8;
    std::vector<double> us;
    for (int r = 0; r < 6; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      SwiGluFfn(fw, x.data(), n, y.data(), *cpu_pool_, ActPrecision::kQuantized, cpu_ws_);
      const double t =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
      if (r > 0) us.push_back(t);
    }
    std::sort(us.begin(), us.end());
    cpu_expert_us_[i] = us[us.size() / 2];
  }
  copy_expert_us_ = cache_->MeasureCopyUs();
  return absl::OkStatus();
}

absl::Status GpuModel::Impl::Head(const StepShape& s) {
  if (s.logit_rows == 0) return absl::OkStatus();
  const ModelConfig& c = config_;
  cudaStream_t st = stream_->get();
  RmsNormParams norm;
  norm.x = ws_.x;
  norm.x_stride = c.n_embd;
  norm.in_rows = ws_.logit_rows;
  norm.y = ws_.normed;
  norm.y_stride = c.n_embd;
  norm.n_rows = s.logit_rows;
  norm.n = c.n_embd;
  norm.gain = weights_.output_norm().as<float>();
  norm.eps = c.rms_eps;
  RETURN_IF_ERROR(Cuda(LaunchRmsNorm(norm, st), "output_norm"));
  LinearArgs lm;
  lm.x = ws_.normed;
  lm.x_stride = c.n_embd;
  lm.n_x_rows = s.logit_rows;
  lm.act_workspace = ws_.act_tmp;
  lm.act_workspace_bytes = ws_.act_tmp_bytes;
  lm.y = ws_.logits;
  lm.y_stride = c.n_vocab;
  RETURN_IF_ERROR(weights_.output().Apply(lm, st));
  return Cuda(LaunchArgmax(ws_.logits, s.logit_rows, c.n_vocab, ws_.argmax, st, ws_.argmax_exclude),
              "argmax");
}

GpuModel::Impl::GraphKey GpuModel::Impl::KeyOf(const StepShape& s) const {
  std::vector<int32_t> ranks;
  if (dex_ != nullptr) ranks.assign(dex_->step_tokens().begin(), dex_->step_tokens().end());
  return {s.tokens, s.logit_rows, s.keys, std::move(ranks)};
}

absl::StatusOr<cudaGraphExec_t> GpuModel::Impl::Graph(const StepShape& s) {
  const GraphKey key = KeyOf(s);
  if (auto it = graphs_.find(key); it != graphs_.end()) return it->second->get();
  cudaStream_t st = stream_->get();
  RETURN_IF_ERROR(Cuda(cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed), "begin capture"));
  absl::Status enq = Enqueue(s, nullptr);
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(st, &graph);
  if (!enq.ok()) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    return enq;
  }
  RETURN_IF_ERROR(Cuda(end, "end capture"));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  RETURN_IF_ERROR(Cuda(inst, "graph instantiate"));
  graphs_[key] = std::make_unique<GraphExec>(exec);
  return exec;
}

absl::Status GpuModel::Impl::RunStep(std::span<const GpuSequenceInput> batch, StepOutput* out,
                                     std::vector<int32_t>* next, StepProfile* profile) {
  if (batch.empty() && (options_.exchange != nullptr || dex_ != nullptr)) {
    // No tokens here, but this rank's experts serve the other ranks' rows.
    RETURN_IF_ERROR(ExchangeOnlyStep());
    if (next != nullptr) next->clear();
    if (out != nullptr) {
      *out = StepOutput{};
      out->n_vocab = config_.n_vocab;
    }
    if (profile != nullptr) *profile = StepProfile{};
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(CheckBatch(batch));
  RETURN_IF_ERROR(Cuda(cudaSetDevice(options_.device), "cudaSetDevice"));
  const bool greedy = next != nullptr;
  std::vector<int32_t> tokens, pos, logit_rows, argmax_exclude;
  std::vector<AttnRow> rows;
  std::vector<int64_t> first_row(batch.size()), n_rows(batch.size());
  int64_t max_keys = 0;
  bool decode = true;
  for (size_t s = 0; s < batch.size(); ++s) {
    const GpuSequenceInput& in = batch[s];
    const int64_t n_past = in.cache->size(), n_new = static_cast<int64_t>(in.tokens.size());
    const int64_t row0 = static_cast<int64_t>(tokens.size());
    decode = decode && n_new == 1;
    max_keys = std::max(max_keys, n_past + n_new);
    for (int64_t i = 0; i < n_new; ++i) {
      tokens.push_back(in.tokens[i]);
      pos.push_back(static_cast<int32_t>(n_past + i));
      AttnRow r;
      r.cache = in.cache->data();
      r.layer_stride = in.cache->layer_stride();
      r.pos = static_cast<int32_t>(n_past + i);
      rows.push_back(r);
    }
    if (greedy && in.logits == LogitsRequest::kAll) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", s, ": greedy steps take LogitsRequest::kLast or kNone"));
    }
    first_row[s] = static_cast<int64_t>(logit_rows.size());
    if (in.logits == LogitsRequest::kLast) {
      logit_rows.push_back(static_cast<int32_t>(row0 + n_new - 1));
    } else if (in.logits == LogitsRequest::kAll) {
      for (int64_t i = 0; i < n_new; ++i) logit_rows.push_back(static_cast<int32_t>(row0 + i));
    }
    argmax_exclude.resize(logit_rows.size(), in.argmax_exclude);
    n_rows[s] = static_cast<int64_t>(logit_rows.size()) - first_row[s];
  }
  StepShape shape;
  shape.tokens = static_cast<int>(tokens.size());
  shape.logit_rows = static_cast<int>(logit_rows.size());
  shape.keys = static_cast<int>((max_keys + kKeyBucket - 1) / kKeyBucket * kKeyBucket);
  bool moved = ws_.Reserve(dims_, shape);
  if (dex_ != nullptr) {
    // Every rank's token count (host collective): sizes and graph keys follow from it. A step
    // that fails after this point leaves the peers in the layer collectives.
    ASSIGN_OR_RETURN(const bool dex_moved, dex_->BeginStep(shape.tokens));
    moved = moved || dex_moved;
  }
  if (moved) {
    graphs_.clear();
    seen_shapes_.clear();
    const size_t need =
        std::max<size_t>(ws_.input_bytes(), ws_.capacity().logit_rows * sizeof(int32_t));
    if (staging_.bytes() < need) staging_ = PinnedBuffer(need);
  }
  cudaStream_t st = stream_->get();
  uint8_t* host = staging_.get();
  std::memcpy(host + ws_.tokens_offset(), tokens.data(), tokens.size() * sizeof(int32_t));
  std::memcpy(host + ws_.pos_offset(), pos.data(), pos.size() * sizeof(int32_t));
  std::memcpy(host + ws_.logit_rows_offset(), logit_rows.data(),
              logit_rows.size() * sizeof(int32_t));
  std::memcpy(host + ws_.argmax_exclude_offset(), argmax_exclude.data(),
              argmax_exclude.size() * sizeof(int32_t));
  std::memcpy(host + ws_.rows_offset(), rows.data(), rows.size() * sizeof(AttnRow));
  RETURN_IF_ERROR(
      Cuda(cudaMemcpyAsync(ws_.inputs(), host, ws_.input_bytes(), cudaMemcpyHostToDevice, st),
           "step input upload"));

  std::vector<CudaEvent> marks, op_events;
  std::vector<std::pair<const char*, int>> op_names;
  if (profile != nullptr) {
    marks.resize(config_.n_layer + 3);
    op_events.resize(40 * config_.n_layer + 8);
    op_events_ = &op_events;
    op_names_ = &op_names;
    // Inside a graph, so that launch gaps do not count; eager if capture fails.
    profile->graph = false;
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    // The expert cache synchronizes inside the step: never captured (a failed capture would
    // leave its plan without the copies).
    absl::Status enq =
        cache_ != nullptr || options_.exchange != nullptr
            ? absl::UnavailableError("eager")
            : Cuda(cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed), "capture");
    if (enq.ok()) {
      enq = Enqueue(shape, &marks);
      const cudaError_t end = cudaStreamEndCapture(st, &graph);
      if (enq.ok()) enq = Cuda(end, "end capture");
      if (enq.ok()) enq = Cuda(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
      if (graph != nullptr) cudaGraphDestroy(graph);
      if (enq.ok()) enq = Cuda(cudaGraphLaunch(exec, st), "graph launch");
      if (exec != nullptr) cudaGraphExecDestroy(exec);
      profile->graph = enq.ok();
    }
    if (!enq.ok()) {
      cudaGetLastError();
      op_names.clear();
      enq = Enqueue(shape, &marks);
    }
    op_events_ = nullptr;
    op_names_ = nullptr;
    if (!enq.ok() && cache_ != nullptr) {
      cudaStreamSynchronize(st);
      cache_->Clear();
    }
    RETURN_IF_ERROR(enq);
  } else {
    const GraphKey key = KeyOf(shape);
    // With an expert cache every MoE layer waits on the host for its routing: eager launches.
    // So does the expert exchange (the host dispatches and combines).
    if (options_.cuda_graphs && decode && cache_ == nullptr && options_.exchange == nullptr &&
        seen_shapes_.count(key) > 0) {
      ASSIGN_OR_RETURN(cudaGraphExec_t exec, Graph(shape));
      RETURN_IF_ERROR(Cuda(cudaGraphLaunch(exec, st), "graph launch"));
    } else {
      absl::Status enq = Enqueue(shape, nullptr);
      if (!enq.ok() && cache_ != nullptr) {
        cudaStreamSynchronize(st);
        cache_->Clear();  // planned copies may not have been issued
      }
      RETURN_IF_ERROR(enq);
      seen_shapes_.insert(key);
    }
  }
  const int n_out = shape.logit_rows;
  if (greedy) {
    RETURN_IF_ERROR(
        Cuda(cudaMemcpyAsync(host, ws_.argmax, n_out * sizeof(int32_t), cudaMemcpyDeviceToHost, st),
             "token download"));
  } else {
    out->logits.resize(static_cast<size_t>(n_out) * config_.n_vocab);
    RETURN_IF_ERROR(
        Cuda(cudaMemcpyAsync(out->logits.data(), ws_.logits, out->logits.size() * sizeof(float),
                             cudaMemcpyDeviceToHost, st),
             "logits download"));
  }
  RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(st), "step"));
  if (cache_ != nullptr) cache_->FinishStep();
  if (greedy) {
    // One token per sequence: its row's argmax, -1 for a sequence without a logits row.
    const int32_t* row_token = reinterpret_cast<const int32_t*>(host);
    next->assign(batch.size(), -1);
    for (size_t s = 0; s < batch.size(); ++s) {
      if (n_rows[s] > 0) (*next)[s] = row_token[first_row[s]];
    }
  } else {
    out->n_vocab = config_.n_vocab;
    out->first_row = first_row;
    out->n_rows = n_rows;
  }
  if (profile != nullptr) {
    profile->embed_ms = marks[1].MillisSince(marks[0]);
    profile->layer_ms.resize(config_.n_layer);
    for (int il = 0; il < config_.n_layer; ++il) {
      profile->layer_ms[il] = marks[2 + il].MillisSince(marks[1 + il]);
    }
    profile->head_ms = marks[2 + config_.n_layer].MillisSince(marks[1 + config_.n_layer]);
    profile->ops.clear();
    for (size_t i = 1; i < op_names.size(); ++i) {
      profile->ops.push_back(
          {op_names[i].first, op_names[i].second, op_events[i].MillisSince(op_events[i - 1])});
    }
  }
  for (const GpuSequenceInput& in : batch) {
    in.cache->Commit(static_cast<int64_t>(in.tokens.size()));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------

GpuModel::GpuModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GpuModel::~GpuModel() = default;

absl::StatusOr<std::unique_ptr<GpuModel>> GpuModel::Load(const std::string& path,
                                                         const GpuModelOptions& options) {
  auto impl = std::make_unique<Impl>();
  RETURN_IF_ERROR(impl->Load(path, options));
  return std::unique_ptr<GpuModel>(new GpuModel(std::move(impl)));
}

const ModelConfig& GpuModel::config() const { return impl_->config_; }
const GpuModelOptions& GpuModel::options() const { return impl_->options_; }
const gguf::GgufModel& GpuModel::gguf() const { return *impl_->gguf_; }
int64_t GpuModel::n_vocab() const { return impl_->config_.n_vocab; }
int64_t GpuModel::max_context() const { return impl_->max_context_; }
GpuWeightBytes GpuModel::weight_bytes() const { return impl_->weight_bytes_; }

std::optional<ExpertCacheStats> GpuModel::expert_cache_stats() const {
  if (impl_->cache() == nullptr) return std::nullopt;
  return impl_->cache()->Stats();
}

std::array<double, 3> GpuModel::expert_cpu_cost_us() const { return impl_->cpu_cost(); }

int64_t GpuModel::expert_cpu_count() const {
  return impl_->cache() == nullptr ? 0 : impl_->cache()->cpu_experts();
}

void GpuModel::ResetExpertCacheStats() {
  if (impl_->cache() != nullptr) impl_->cache()->ResetStats();
}

absl::StatusOr<std::unique_ptr<GpuKvCache>> GpuModel::NewKvCache(int64_t capacity) const {
  return impl_->NewKvCache(capacity);
}

absl::Status GpuModel::AttachDeviceExchange(DeviceExpertExchange* exchange) {
  return impl_->AttachDeviceExchange(exchange);
}

absl::Status GpuModel::Step(std::span<const GpuSequenceInput> batch, StepOutput* out) {
  return impl_->RunStep(batch, out, nullptr, nullptr);
}

absl::Status GpuModel::StepGreedy(std::span<const GpuSequenceInput> batch,
                                  std::vector<int32_t>* next) {
  return impl_->RunStep(batch, nullptr, next, nullptr);
}

absl::Status GpuModel::ProfileStep(std::span<const GpuSequenceInput> batch,
                                   std::vector<int32_t>* next, StepProfile* profile) {
  return impl_->RunStep(batch, nullptr, next, profile);
}

}  // namespace tritmoe::gpu
