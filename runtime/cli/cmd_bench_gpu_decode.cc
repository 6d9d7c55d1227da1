// tritmoe bench-gpu-decode: prefill and batched greedy decode on one GPU (runtime/gpu/gpu_model.h),
// with the weight bytes each step reads and the HBM bound beside every figure.
//
// Prefill: one sequence of --prompt tokens in one step. Decode at batch B: B sequences prefilled
// with --context tokens, then --tokens greedy steps (argmax on the GPU, CUDA-graph replays), one
// untimed pass first (graph capture), then --reps timed passes from the same cache state; the
// median is reported. A model generated with fewer layers than the real one is extrapolated to
// --full-layers (--full-dense of them dense): each layer kind's share of the step comes from one
// profiled step (events between layers), applied to the measured step time.
//
// Bytes per step: every weight outside the routed experts once, one token_embd row per token, and
// per MoE layer the distinct routed experts the step's tokens select, taken as the expectation
// under uniform routing E * (1 - (1 - k/E)^tokens) (random weights route nearly uniformly).
// The bound is bytes / --hbm-gbs (default: the read bandwidth gpu_gemv_bench measured on an H200).
//
// Expert cache (--expert-cache-mb, or --card-gb: what a card of that size leaves per MoE layer
// after the --full-layers model's resident weights and --card-reserve-gb, scaled to this model's
// MoE layers): a second table with the hit rate, MiB streamed per token, stall per token and the
// PCIe bound (streamed bytes / the pinned H2D bandwidth measured in the same run), over the timed
// passes (the cache stays warm from the untimed pass); --expert-prefetch, --expert-cpu as
// GpuModelOptions.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "runtime/cli/commands.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/model_config.h"
#include "runtime/store/cache_stats.h"
#if TRITMOE_HAVE_CUDA
#include <cuda_runtime_api.h>

#include <cstring>
#include <optional>

#include "runtime/gpu/gpu_kv_cache.h"
#include "runtime/gpu/gpu_model.h"
#endif

namespace tritmoe {
namespace {

struct BenchGpuDecodeArgs {
  std::string model;
  std::string batches = "1,16,64";
  int prompt = 512;
  int context = 64;
  int tokens = 32;
  int reps = 3;
  std::string kv_type = "f16";
  int device = 0;
  bool no_graphs = false;
  bool unfused = false;
  double hbm_gbs = 4610.0;
  int full_layers = 61;
  int full_dense = 3;
  // Expert cache (gpu_expert_cache.h): a budget in MiB, or one derived from a card size.
  double expert_cache_mb = 0;
  bool expert_prefetch = false;
  int expert_cpu = 0;
  double card_gb = 0;          // GiB of a smaller card the full-depth model must fit
  double card_reserve_gb = 2;  // of it kept for KV caches, the step workspace and the context
};

#if TRITMOE_HAVE_CUDA

using gpu::GpuKvCache;
using gpu::GpuModel;
using gpu::GpuSequenceInput;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<int32_t> PromptTokens(int n, int64_t n_vocab, int salt) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) {
    t[i] = static_cast<int32_t>((1000003LL * (i + 1) + 7919LL * salt) % n_vocab);
  }
  return t;
}

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Expected distinct experts per MoE layer for `tokens` tokens under uniform routing.
double DistinctExperts(const ModelConfig& c, int tokens) {
  if (c.n_expert == 0) return 0.0;
  return c.n_expert * (1.0 - std::pow(1.0 - double(c.n_expert_used) / c.n_expert, tokens));
}

struct LayerShares {
  double embed = 0, head = 0, dense = 0, moe = 0;  // ms (means over the layers of a kind)
  // Per op, in order of first appearance: mean us per dense layer, per MoE layer.
  std::vector<std::string> op_names;
  std::vector<double> op_dense_us, op_moe_us;
  bool graph = false;
};

LayerShares Shares(const ModelConfig& c, const gpu::StepProfile& p) {
  LayerShares s;
  s.embed = p.embed_ms;
  s.head = p.head_ms;
  int nd = 0, nm = 0;
  for (int il = 0; il < c.n_layer; ++il) {
    if (c.IsMoeLayer(il)) {
      s.moe += p.layer_ms[il];
      ++nm;
    } else {
      s.dense += p.layer_ms[il];
      ++nd;
    }
  }
  s.dense = nd > 0 ? s.dense / nd : 0;
  s.moe = nm > 0 ? s.moe / nm : 0;
  s.graph = p.graph;
  for (const gpu::StepProfile::Op& op : p.ops) {
    if (op.layer < 0) continue;
    size_t i = std::find(s.op_names.begin(), s.op_names.end(), op.name) - s.op_names.begin();
    if (i == s.op_names.size()) {
      s.op_names.push_back(op.name);
      s.op_dense_us.push_back(0);
      s.op_moe_us.push_back(0);
    }
    if (c.IsMoeLayer(op.layer)) {
      s.op_moe_us[i] += op.ms * 1e3 / std::max(1, nm);
    } else {
      s.op_dense_us[i] += op.ms * 1e3 / std::max(1, nd);
    }
  }
  return s;
}

// Bytes of the file's tensors: outside every layer, per layer outside its routed experts (by
// kind), and one routed expert (averages over the layers of a kind).
struct FileBytes {
  double globals = 0, dense_layer = 0, moe_layer = 0, expert = 0;
};

FileBytes CountFileBytes(const gguf::GgufModel& g, const ModelConfig& c) {
  FileBytes f;
  std::vector<double> layer(c.n_layer, 0.0), experts(c.n_layer, 0.0);
  for (const gguf::TensorInfo& t : g.tensors()) {
    int il = -1;
    if (absl::StartsWith(t.name, "blk.")) {
      const std::vector<std::string> parts = absl::StrSplit(t.name, '.');
      if (parts.size() < 2 || !absl::SimpleAtoi(parts[1], &il) || il < 0 || il >= c.n_layer) {
        il = -1;
      }
    }
    if (il < 0) {
      f.globals += t.nbytes;
    } else if (absl::StrContains(t.name, "_exps.")) {
      experts[il] += t.nbytes;
    } else {
      layer[il] += t.nbytes;
    }
  }
  int nd = 0, nm = 0;
  for (int il = 0; il < c.n_layer; ++il) {
    if (c.IsMoeLayer(il)) {
      f.moe_layer += layer[il];
      f.expert += experts[il] / std::max(1, c.n_expert);
      ++nm;
    } else {
      f.dense_layer += layer[il];
      ++nd;
    }
  }
  f.dense_layer /= std::max(1, nd);
  f.moe_layer /= std::max(1, nm);
  f.expert /= std::max(1, nm);
  return f;
}

// Pinned host -> device copy bandwidth (GB/s, median of 5 copies of `bytes`).
double MeasureH2d(size_t bytes) {
  void *host = nullptr, *dev = nullptr;
  if (cudaMallocHost(&host, bytes) != cudaSuccess || cudaMalloc(&dev, bytes) != cudaSuccess) {
    cudaGetLastError();
    if (host != nullptr) cudaFreeHost(host);
    return 0;
  }
  std::memset(host, 1, bytes);
  std::vector<double> gbs;
  for (int r = 0; r < 6; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice);
    if (r > 0) gbs.push_back(bytes / Seconds(t0) / 1e9);
  }
  cudaFree(dev);
  cudaFreeHost(host);
  return Median(gbs);
}

struct Row {
  std::string phase;
  int batch = 0;
  std::optional<ExpertCacheStats> cache;  // over the timed passes
  int64_t cpu_experts = 0;                // computed on the host in the timed passes
  int64_t timed_tokens = 0;               // tokens of the timed passes
  double step_ms = 0;                     // this model
  double bytes = 0;                       // this model, per step
  double full_step_ms = 0;                // extrapolated
  double full_bytes = 0;
  LayerShares shares;
};

absl::Status RunBenchGpuDecode(const BenchGpuDecodeArgs& a) {
  if (a.prompt < 1 || a.context < 1 || a.tokens < 1 || a.reps < 1 || a.hbm_gbs <= 0 ||
      a.full_layers < 1 || a.full_dense < 0 || a.full_dense > a.full_layers) {
    return absl::InvalidArgumentError(
        "--prompt, --context, --tokens, --reps, --hbm-gbs and --full-layers must be positive, "
        "0 <= --full-dense <= --full-layers");
  }
  std::vector<int> batches;
  for (absl::string_view part : absl::StrSplit(a.batches, ',')) {
    int b = 0;
    if (!absl::SimpleAtoi(part, &b) || b < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--batch: '", part, "' is not a positive integer"));
    }
    batches.push_back(b);
  }
  gpu::GpuModelOptions o;
  o.device = a.device;
  ASSIGN_OR_RETURN(o.kv_type, ParseKvCacheType(a.kv_type));
  o.max_context = std::max(a.prompt, a.context + a.tokens);
  o.cuda_graphs = !a.no_graphs;
  o.fuse_small_ops = !a.unfused;
  o.expert_cache_bytes = static_cast<int64_t>(a.expert_cache_mb * (1 << 20));
  o.expert_prefetch = a.expert_prefetch;
  o.expert_cpu = a.expert_cpu;
  if (a.card_gb > 0) {
    // The budget a card of card_gb GiB leaves per MoE layer of the full-depth model after its
    // resident weights, scaled to this model's MoE layers.
    ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufModel> g, gguf::GgufModel::Open(a.model));
    ASSIGN_OR_RETURN(ModelConfig fc, ModelConfig::FromGguf(*g));
    const FileBytes f = CountFileBytes(*g, fc);
    const int full_moe = a.full_layers - a.full_dense;
    const double resident = f.globals + a.full_dense * f.dense_layer + full_moe * f.moe_layer;
    const double gib = double(1 << 30);
    const double cache = a.card_gb * gib - resident - a.card_reserve_gb * gib;
    if (cache <= 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--card-gb %.1f: the %d-layer model's resident weights (%.2f GiB) and the reserve "
          "(%.1f GiB) leave no room for experts",
          a.card_gb, a.full_layers, resident / gib, a.card_reserve_gb));
    }
    int n_moe_here = 0;
    for (int il = 0; il < fc.n_layer; ++il) n_moe_here += fc.IsMoeLayer(il) ? 1 : 0;
    o.expert_cache_bytes = static_cast<int64_t>(cache / full_moe * n_moe_here);
    std::printf(
        "card budget: %.1f GiB card - %.2f GiB resident weights of the %d-layer model (outside "
        "the routed experts: %.2f GiB globals, %.1f MiB per dense layer, %.1f MiB per MoE layer) "
        "- %.1f GiB reserve = %.2f GiB for experts = %.1f MiB per MoE layer = %.1f experts of "
        "%.2f MiB per layer (of %d); this model's %d MoE layers: budget %.1f MiB\n",
        a.card_gb, resident / gib, a.full_layers, f.globals / gib, f.dense_layer / (1 << 20),
        f.moe_layer / (1 << 20), a.card_reserve_gb, cache / gib, cache / full_moe / (1 << 20),
        cache / full_moe / f.expert, f.expert / (1 << 20), fc.n_expert, n_moe_here,
        o.expert_cache_bytes / double(1 << 20));
  }
  const auto t_load = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<GpuModel> model, GpuModel::Load(a.model, o));
  const double load_s = Seconds(t_load);
  const ModelConfig& c = model->config();
  const gpu::GpuWeightBytes wb = model->weight_bytes();
  const int nd = wb.n_dense_layers, nm = wb.n_moe_layers;
  const int full_moe = a.full_layers - a.full_dense;
  std::printf("model: %s (%d layers: %d dense, %d MoE; loaded and uploaded in %.1f s)\n",
              a.model.c_str(), c.n_layer, nd, nm, load_s);
  std::printf(
      "weights on the GPU: %.2f GB; per layer: attention %.1f MB, dense FFN %.1f MB, MoE "
      "router+shared %.1f MB, one routed expert %.2f MB; lm_head %.1f MB\n",
      wb.total / 1e9, wb.attn_per_layer / 1e6, wb.dense_ffn_per_layer / 1e6,
      wb.moe_fixed_per_layer / 1e6, wb.expert_per_layer / 1e6, wb.head / 1e6);
  std::printf(
      "kv cache: %s, CUDA graphs: %s, small ops: %s, HBM bandwidth for the bound: %.0f GB/s\n",
      a.kv_type.c_str(), a.no_graphs ? "off" : "on", a.unfused ? "separate" : "fused", a.hbm_gbs);

  std::vector<Row> rows;
  // Prefill.
  {
    std::vector<double> secs;
    std::vector<int32_t> next;
    const std::vector<int32_t> prompt = PromptTokens(a.prompt, c.n_vocab, 0);
    for (int r = 0; r < a.reps + 1; ++r) {  // the first run warms up
      ASSIGN_OR_RETURN(std::unique_ptr<GpuKvCache> cache, model->NewKvCache(a.prompt));
      const GpuSequenceInput in[1] = {{cache.get(), prompt, LogitsRequest::kLast}};
      if (r == 1) model->ResetExpertCacheStats();
      const auto t0 = std::chrono::steady_clock::now();
      RETURN_IF_ERROR(model->StepGreedy(in, &next));
      if (r > 0) secs.push_back(Seconds(t0));
    }
    const std::optional<ExpertCacheStats> prefill_cache = model->expert_cache_stats();
    const int64_t prefill_cpu = model->expert_cpu_count();
    ASSIGN_OR_RETURN(std::unique_ptr<GpuKvCache> cache, model->NewKvCache(a.prompt));
    const GpuSequenceInput in[1] = {{cache.get(), prompt, LogitsRequest::kLast}};
    gpu::StepProfile prof;
    RETURN_IF_ERROR(model->ProfileStep(in, &next, &prof));
    Row row;
    row.phase = "prefill";
    row.batch = a.prompt;
    row.cache = prefill_cache;
    row.cpu_experts = prefill_cpu;
    row.timed_tokens = int64_t{a.reps} * a.prompt;
    row.step_ms = Median(secs) * 1e3;
    row.shares = Shares(c, prof);
    const double distinct = DistinctExperts(c, a.prompt);
    row.bytes = wb.StepBytes(nd, nm, a.prompt, distinct);
    row.full_bytes = wb.StepBytes(a.full_dense, full_moe, a.prompt, distinct);
    rows.push_back(row);
  }
  // Decode.
  for (int b : batches) {
    std::vector<std::unique_ptr<GpuKvCache>> caches(b);
    std::vector<GpuSequenceInput> in(b);
    std::vector<std::vector<int32_t>> prompts(b);
    for (int s = 0; s < b; ++s) {
      ASSIGN_OR_RETURN(caches[s], model->NewKvCache(a.context + a.tokens));
      prompts[s] = PromptTokens(a.context, c.n_vocab, s + 1);
      in[s] = {caches[s].get(), prompts[s], LogitsRequest::kLast};
    }
    std::vector<int32_t> first, next;
    RETURN_IF_ERROR(model->StepGreedy(in, &first));
    std::vector<double> secs;
    for (int r = 0; r < a.reps + 1; ++r) {  // pass 0: graph capture, untimed
      if (r == 1) model->ResetExpertCacheStats();
      for (auto& cache : caches) cache->Truncate(a.context);
      next = first;
      const auto t0 = std::chrono::steady_clock::now();
      for (int step = 0; step < a.tokens; ++step) {
        for (int s = 0; s < b; ++s) in[s] = {caches[s].get(), {&next[s], 1}, LogitsRequest::kLast};
        std::vector<int32_t> out;
        RETURN_IF_ERROR(model->StepGreedy(in, &out));
        next = out;
      }
      if (r > 0) secs.push_back(Seconds(t0));
    }
    const std::optional<ExpertCacheStats> decode_cache = model->expert_cache_stats();
    const int64_t decode_cpu = model->expert_cpu_count();
    for (auto& cache : caches) cache->Truncate(a.context);
    next = first;
    for (int s = 0; s < b; ++s) in[s] = {caches[s].get(), {&next[s], 1}, LogitsRequest::kLast};
    gpu::StepProfile prof;
    std::vector<int32_t> out;
    RETURN_IF_ERROR(model->ProfileStep(in, &out, &prof));
    Row row;
    row.phase = "decode";
    row.batch = b;
    row.cache = decode_cache;
    row.cpu_experts = decode_cpu;
    row.timed_tokens = int64_t{a.reps} * a.tokens * b;
    row.step_ms = Median(secs) / a.tokens * 1e3;
    row.shares = Shares(c, prof);
    const double distinct = DistinctExperts(c, b);
    row.bytes = wb.StepBytes(nd, nm, b, distinct);
    row.full_bytes = wb.StepBytes(a.full_dense, full_moe, b, distinct);
    rows.push_back(row);
  }
  // Extrapolation to the full depth by the profiled shares of each layer kind.
  for (Row& r : rows) {
    const LayerShares& s = r.shares;
    const double here = s.embed + s.head + nd * s.dense + nm * s.moe;
    const double dense = nd > 0 ? s.dense : 0.0;  // a model without dense layers: attention only
    const double full = s.embed + s.head + a.full_dense * dense + full_moe * s.moe;
    r.full_step_ms = here > 0 ? r.step_ms * full / here : 0;
  }

  const double bw = a.hbm_gbs * 1e9;
  std::printf(
      "\n| phase | tokens/step | ms/step (%d layers) | tok/s | GB/step | GB/s | bound tok/s | "
      "ms/step (%d layers, extrapolated) | tok/s | bound tok/s | %% of bound |\n",
      c.n_layer, a.full_layers);
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    const double tok = r.batch;
    std::printf("| %s | %d | %.3f | %.1f | %.3f | %.0f | %.1f | %.2f | %.1f | %.1f | %.0f%% |\n",
                r.phase.c_str(), r.batch, r.step_ms, tok / (r.step_ms * 1e-3), r.bytes / 1e9,
                r.bytes / (r.step_ms * 1e-3) / 1e9, tok / (r.bytes / bw), r.full_step_ms,
                tok / (r.full_step_ms * 1e-3), tok / (r.full_bytes / bw),
                100.0 * (r.full_bytes / bw) / (r.full_step_ms * 1e-3));
  }
  std::printf(
      "\nprofiled step (events between parts), ms: phase tokens | embed | dense layer | MoE "
      "layer | head\n");
  for (const Row& r : rows) {
    std::printf("  %s %d | %.3f | %.3f | %.3f | %.3f\n", r.phase.c_str(), r.batch, r.shares.embed,
                r.shares.dense, r.shares.moe, r.shares.head);
  }
  std::printf("\nper op, us per layer (dense / MoE), profiled inside a CUDA graph:\n| op |");
  for (const Row& r : rows) std::printf(" %s %d |", r.phase.c_str(), r.batch);
  std::printf("\n|---|");
  for (size_t i = 0; i < rows.size(); ++i) std::printf("---|");
  std::printf("\n");
  // Every op of any row (fused ops exist only in some batch sizes), in order of appearance.
  std::vector<std::string> names;
  for (const Row& r : rows) {
    for (const std::string& name : r.shares.op_names) {
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    }
  }
  for (const std::string& name : names) {
    std::printf("| %s |", name.c_str());
    for (const Row& r : rows) {
      const LayerShares& s = r.shares;
      const size_t i = std::find(s.op_names.begin(), s.op_names.end(), name) - s.op_names.begin();
      if (i == s.op_names.size()) {
        std::printf(" - |");
      } else {
        std::printf(" %.1f / %.1f |", s.op_dense_us[i], s.op_moe_us[i]);
      }
    }
    std::printf("\n");
  }
  if (!rows.empty() && !rows.back().shares.graph) std::printf("(profiled with eager launches)\n");
  std::printf(
      "\nGB/step counts each weight a step reads once (routed experts: their expectation under "
      "uniform routing); bound = GB/step / HBM bandwidth.\n");
  if (const std::optional<ExpertCacheStats> st = model->expert_cache_stats(); st.has_value()) {
    const double h2d = MeasureH2d(size_t{1} << 30);
    std::printf(
        "\nexpert cache: %lld slots/layer of %d (%.1f MiB budget), prefetch %s, pinned host "
        "tier; pinned H2D bandwidth (1 GiB copies, median): %.1f GB/s\n",
        static_cast<long long>(st->slots_per_layer), c.n_expert, st->budget_bytes / 1048576.0,
        a.expert_prefetch ? "on" : "off", h2d);
    std::printf(
        "| phase | tokens/step | tok/s | hit rate | MiB streamed/token | stall ms/token | "
        "PCIe bound tok/s (streamed / H2D) | %d-layer tok/s (extrapolated) | %d-layer PCIe "
        "bound tok/s | host experts/token |\n|---|---|---|---|---|---|---|---|---|---|\n",
        a.full_layers, a.full_layers);
    for (const Row& r : rows) {
      if (!r.cache.has_value() || r.timed_tokens == 0) continue;
      const LayerCacheStats t = r.cache->Total();
      const double per_tok = double(t.bytes_read) / r.timed_tokens;
      const double bound = per_tok > 0 ? h2d * 1e9 / per_tok : 0;
      // The streamed bytes scale with the MoE layers.
      const double full_bound = bound * nm / std::max(1, full_moe);
      std::printf("| %s | %d | %.1f | %.1f%% | %.1f | %.3f | %.1f | %.1f | %.1f | %.2f |\n",
                  r.phase.c_str(), r.batch, r.batch / (r.step_ms * 1e-3), 100.0 * t.hit_rate(),
                  per_tok / 1048576.0, t.stall_s * 1e3 / r.timed_tokens, bound,
                  r.batch / (r.full_step_ms * 1e-3), full_bound,
                  double(r.cpu_experts) / r.timed_tokens);
    }
    std::printf("%s\n", st->Summary().c_str());
    if (a.expert_cpu != 0) {
      const std::array<double, 3> cost = model->expert_cpu_cost_us();
      std::printf(
          "host expert compute (--expert-cpu %d, steps of <= %d tokens): one expert on the host "
          "%.0f us (1 token) / %.0f us (8 tokens), one copy %.0f us\n",
          a.expert_cpu, gpu::GpuModelOptions::kMaxCpuExpertTokens, cost[0], cost[1], cost[2]);
    }
  }
  return absl::OkStatus();
}

#endif  // TRITMOE_HAVE_CUDA

}  // namespace

void RegisterBenchGpuDecodeCommand(CLI::App& app, absl::Status* result) {
  auto a = std::make_shared<BenchGpuDecodeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench-gpu-decode", "GPU prefill and batched decode throughput beside the HBM bound");
  cmd->add_option("--model,-m", a->model, "GGUF model")->required();
  cmd->add_option("--batch", a->batches, "Decode batch sizes, comma-separated")
      ->capture_default_str();
  cmd->add_option("--prompt", a->prompt, "Prefill length (tokens)")->capture_default_str();
  cmd->add_option("--context", a->context, "Tokens each decode sequence starts with")
      ->capture_default_str();
  cmd->add_option("--tokens", a->tokens, "Decode steps per measurement")->capture_default_str();
  cmd->add_option("--reps", a->reps, "Timed repetitions (median)")->capture_default_str();
  cmd->add_option("--kv-type", a->kv_type, "KV cache type: f16, q8_0, q4_0, f32")
      ->capture_default_str();
  cmd->add_option("--device", a->device, "CUDA device")->capture_default_str();
  cmd->add_flag("--no-graphs", a->no_graphs, "Launch decode steps eagerly (no CUDA graphs)");
  cmd->add_flag("--unfused", a->unfused,
                "Separate kernels for norm/quantize, residual, SwiGLU and routing (to measure "
                "what fusion gains)");
  cmd->add_option("--hbm-gbs", a->hbm_gbs, "HBM read bandwidth for the bound (GB/s)")
      ->capture_default_str();
  cmd->add_option("--full-layers", a->full_layers, "Depth to extrapolate to")
      ->capture_default_str();
  cmd->add_option("--full-dense", a->full_dense, "Dense layers of that depth")
      ->capture_default_str();
  cmd->add_option("--expert-cache-mb", a->expert_cache_mb,
                  "Routed experts in a bounded GPU cache of this many MiB, streamed from pinned "
                  "host memory (0: all resident)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--expert-prefetch", a->expert_prefetch,
                "Predict the next layer's experts from the current hidden state and copy them "
                "early");
  cmd->add_option("--expert-cpu", a->expert_cpu,
                  "Misses computed on the host CPU instead of copied: 0 off, 1 by the cost "
                  "model measured at load, 2 all (steps of <= 16 tokens)")
      ->capture_default_str()
      ->check(CLI::Range(0, 2));
  cmd->add_option("--card-gb", a->card_gb,
                  "Expert cache budget: what a card of this many GiB leaves after the resident "
                  "weights of the --full-layers model, per MoE layer (overrides "
                  "--expert-cache-mb)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--card-reserve-gb", a->card_reserve_gb,
                  "GiB of that card kept for KV caches, workspace and the CUDA context")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->callback([a, result] {
#if TRITMOE_HAVE_CUDA
    *result = RunBenchGpuDecode(*a);
#else
    *result = absl::UnimplementedError("bench-gpu-decode: this tritmoe was built without CUDA");
#endif
  });
}

}  // namespace tritmoe
