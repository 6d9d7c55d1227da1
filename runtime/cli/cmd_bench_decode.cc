// tritmoe bench-decode: prefill and batched-decode throughput of the model, with the weight bytes
// each token has to read and the bandwidth that implies. Runs on the Engine: a plain process is
// one rank; `mpirun -np N tritmoe bench-decode ...` spreads the routed experts over N ranks
// (expert parallelism) and the decode sequences over them (data-parallel attention), and rank 0
// prints the table.
//
// Prefill: one sequence of --prompt tokens in one step. Decode at batch B: B sequences, each
// prefilled with --context tokens, then --tokens steps of one token per sequence (greedy, fed
// back). Every measurement is repeated --reps times on fresh caches; the median is reported.
//
// Weight bytes per decode step: every tensor outside the routed experts (token_embd only one row
// per token), plus, per MoE layer, the distinct routed experts the step's B tokens select. With
// random weights routing is close to uniform, so the distinct count is taken as its expectation
// E * (1 - (1 - k/E)^B); the figure is labelled as such. Each distinct weight counts once per
// step, also with N ranks (where every rank reads its own copy of the replicated part).
//
// Then, per rank, the decode steps' wall time by phase (attention, MoE compute, dispatch, combine,
// other; Engine's StepPhaseTimes) and how evenly the routing recorded over the run loads the
// ranks under this run's placement, contiguous and balanced (max/mean per MoE layer).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "runtime/cli/commands.h"
#include "runtime/cli/engine_expert_cache.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/engine_job.h"
#include "runtime/engine/engine_report.h"
#include "runtime/gguf/gguf.h"

namespace tritmoe {
namespace {

struct BenchDecodeArgs {
  std::string model;
  int threads = 0;
  std::string kv_type = "f16";
  bool repack_experts = true;
  std::string batches = "1,16";
  int prompt = 128;
  int context = 16;
  int tokens = 16;
  int reps = 5;
  std::string comm = "auto";
  std::string placement = "contiguous";
  std::string device = "cpu";
  std::string gpu_exchange;  // "" = the default (EngineOptions::gpu_exchange)
  std::string routing_stats_out;
  ExpertCacheFlags expert_cache;
};

// The expert cache's totals over every rank (CPU caches or the GPU cache), nullopt without one.
absl::StatusOr<std::optional<LayerCacheStats>> CacheTotal(Engine& engine) {
  ASSIGN_OR_RETURN(std::optional<ExpertCacheStats> s, engine.CollectExpertCacheStats());
  if (!s.has_value()) return std::optional<LayerCacheStats>();
  return std::optional<LayerCacheStats>(s->Total());
}

// One phase's cache figures: the difference of two totals.
std::string CacheRow(const std::string& phase, const LayerCacheStats& a, const LayerCacheStats& b) {
  const int64_t hits = b.hits - a.hits, misses = b.misses - a.misses;
  const int64_t tokens = b.tokens - a.tokens;
  const double bytes = double(b.bytes_read - a.bytes_read), stall = b.stall_s - a.stall_s;
  return absl::StrFormat("| %s | %.1f%% | %d | %.2f | %.3f |\n", phase,
                         hits + misses > 0 ? 100.0 * hits / (hits + misses) : 0.0, tokens,
                         tokens > 0 ? bytes / tokens / (1 << 20) : 0.0,
                         tokens > 0 ? stall * 1e3 / tokens : 0.0);
}

// Bytes of weights one step reads apart from the routed experts, and one routed expert's bytes
// summed over the MoE layers (gate + up + down), from the file's tensor directory.
struct WeightBytes {
  int64_t dense_per_step = 0;     // attention, dense FFNs, shared experts, routers, norms, lm_head
  int64_t embd_row = 0;           // one token_embd row (read per token)
  int64_t expert_all_layers = 0;  // one routed expert in every MoE layer
  int n_moe_layers = 0;
};

WeightBytes CountWeightBytes(const gguf::GgufModel& file, const ModelConfig& c) {
  WeightBytes b;
  b.n_moe_layers = c.n_layer - c.n_dense_lead;
  for (const gguf::TensorInfo& t : file.tensors()) {
    const int64_t bytes = static_cast<int64_t>(t.nbytes);
    if (t.name == "token_embd.weight") {
      b.embd_row = bytes / c.n_vocab;
      if (c.tied_output) b.dense_per_step += bytes;  // lm_head reads all of it
    } else if (t.name.find("_exps.weight") != std::string::npos) {
      b.expert_all_layers += bytes / c.n_expert;
    } else {
      b.dense_per_step += bytes;
    }
  }
  return b;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Deterministic, in-vocabulary prompt tokens (no tokenizer needed).
std::vector<int32_t> PromptTokens(int n, int64_t n_vocab, int salt) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i)
    t[i] = static_cast<int32_t>((1000003LL * (i + 1) + 7919LL * salt) % n_vocab);
  return t;
}

absl::StatusOr<double> TimePrefill(Engine& engine, int prompt, uint64_t id) {
  using Clock = std::chrono::steady_clock;
  EngineStep step;
  step.start.push_back({.id = id, .sampling = SamplingParams::Greedy(), .capacity = prompt});
  step.items.push_back({.id = id, .tokens = PromptTokens(prompt, engine.config().n_vocab, 0)});
  step.release.push_back(id);
  const auto t0 = Clock::now();
  RETURN_IF_ERROR(engine.Step(step).status());
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Seconds for `steps` decode steps of `batch` sequences (after their prefill, untimed). The engine
// samples greedily (argmax) on each sequence's rank and returns only the tokens.
// Adds the timed steps' per-rank phase times to *phases.
absl::StatusOr<double> TimeDecode(Engine& engine, int batch, int context, int steps,
                                  uint64_t first_id, PhaseTimesAccumulator* phases) {
  using Clock = std::chrono::steady_clock;
  EngineStep prefill;
  for (int s = 0; s < batch; ++s) {
    const uint64_t id = first_id + s;
    prefill.start.push_back(
        {.id = id, .sampling = SamplingParams::Greedy(), .capacity = context + steps});
    prefill.items.push_back(
        {.id = id, .tokens = PromptTokens(context, engine.config().n_vocab, s + 1)});
  }
  ASSIGN_OR_RETURN(EngineStepResult r, engine.Step(prefill));
  const auto t0 = Clock::now();
  for (int step = 0; step < steps; ++step) {
    EngineStep d;
    for (int s = 0; s < batch; ++s)
      d.items.push_back({.id = first_id + s, .tokens = {r.tokens[s]}});
    ASSIGN_OR_RETURN(r, engine.Step(d));
    phases->Add(r);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  EngineStep release;
  for (int s = 0; s < batch; ++s) release.release.push_back(first_id + s);
  RETURN_IF_ERROR(engine.Step(release).status());
  return seconds;
}

absl::Status BenchDecode(const BenchDecodeArgs& a, const std::vector<int>& batches, Engine& engine);

absl::Status RunBenchDecode(const BenchDecodeArgs& a) {
  if (a.prompt < 1 || a.context < 1 || a.tokens < 1 || a.reps < 1) {
    return absl::InvalidArgumentError("--prompt, --context, --tokens and --reps must be >= 1");
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
  EngineOptions options;
  options.model_path = a.model;
  options.placement = a.placement;
  options.device = a.device;
  options.gpu_exchange = a.gpu_exchange;
  options.model.threads = a.threads;
  options.model.repack_experts = a.repack_experts;
  ASSIGN_OR_RETURN(options.model.kv_type, ParseKvCacheType(a.kv_type));
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  options.max_sequences = std::max(options.max_sequences, max_batch);
  options.max_tokens_per_step =
      std::max({options.max_tokens_per_step, a.prompt, max_batch * a.context});
  ASSIGN_OR_RETURN(ExpertCacheSetup cache, ApplyExpertCacheFlags(a.expert_cache, &options));
  EngineJobOptions job;
  job.comm = a.comm;
  return RunEngineJob(job, options, [&](Engine& engine) -> absl::Status {
    return BenchDecode(a, batches, engine);
  });
}

absl::Status BenchDecode(const BenchDecodeArgs& a, const std::vector<int>& batches,
                         Engine& engine) {
  const ModelConfig& c = engine.config();
  ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufModel> file, gguf::GgufModel::Open(a.model));
  const WeightBytes wb = CountWeightBytes(*file, c);
  file.reset();
  std::printf("model: %s\n", a.model.c_str());
  std::printf("ranks: %d, threads per rank: %d, device: %s, kv cache: %s, reps: %d (median)\n",
              engine.num_ranks(), engine.threads(), engine.ranks()[0].device.c_str(),
              a.kv_type.c_str(), a.reps);
  std::printf(
      "weights: %.1f MB outside routed experts, %.2f MB per routed expert (all %d MoE "
      "layers), %d of %d experts per token\n",
      wb.dense_per_step / 1e6, wb.expert_all_layers / 1e6, wb.n_moe_layers, c.n_expert_used,
      c.n_expert);
  uint64_t next_id = 1;

  std::string cache_rows;
  ASSIGN_OR_RETURN(std::optional<LayerCacheStats> cache_before, CacheTotal(engine));
  std::vector<double> prefill_s;
  for (int r = 0; r < a.reps; ++r) {
    ASSIGN_OR_RETURN(double s, TimePrefill(engine, a.prompt, next_id++));
    prefill_s.push_back(s);
  }
  const double pf = Median(prefill_s);
  ASSIGN_OR_RETURN(std::optional<LayerCacheStats> after_prefill, CacheTotal(engine));
  if (std::optional<LayerCacheStats> now = after_prefill; now.has_value()) {
    cache_rows += CacheRow(absl::StrCat("prefill ", a.prompt), *cache_before, *now);
    cache_before = now;
  }
  std::printf("\n| phase | batch | tokens | tok/s | weight MB/step | GB/s implied |\n");
  std::printf("|---|---|---|---|---|---|\n");
  {
    // A prefill step of P tokens reads every expert any token picks: ~all of them when P is large.
    const double distinct =
        c.n_expert * (1.0 - std::pow(1.0 - double(c.n_expert_used) / c.n_expert, a.prompt));
    const double bytes =
        wb.dense_per_step + a.prompt * wb.embd_row + distinct * wb.expert_all_layers;
    std::printf("| prefill | 1 | %d | %.1f | %.1f | %.2f |\n", a.prompt, a.prompt / pf, bytes / 1e6,
                bytes / pf / 1e9);
  }
  std::string phase_rows;
  for (int b : batches) {
    std::vector<double> secs;
    PhaseTimesAccumulator phases;
    for (int r = 0; r < a.reps; ++r) {
      ASSIGN_OR_RETURN(double s, TimeDecode(engine, b, a.context, a.tokens, next_id, &phases));
      next_id += b;
      secs.push_back(s);
    }
    const double step_s = Median(secs) / a.tokens;
    const double distinct =
        c.n_expert * (1.0 - std::pow(1.0 - double(c.n_expert_used) / c.n_expert, b));
    const double bytes = wb.dense_per_step + b * wb.embd_row + distinct * wb.expert_all_layers;
    std::printf("| decode | %d | %d | %.1f | %.1f | %.2f |\n", b, a.tokens, b / step_s, bytes / 1e6,
                bytes / step_s / 1e9);
    phase_rows += PhaseTableRows(absl::StrCat(b), phases);
    ASSIGN_OR_RETURN(std::optional<LayerCacheStats> after_decode, CacheTotal(engine));
    if (std::optional<LayerCacheStats> now = after_decode; now.has_value()) {
      cache_rows += CacheRow(absl::StrCat("decode ", b), *cache_before, *now);
      cache_before = now;
    }
  }
  std::printf(
      "\nweight MB/step counts each distinct weight once per step; the routed experts "
      "a step reads are taken as their expectation under uniform routing.\n");
  std::printf(
      "\ndecode step by phase, per rank (ms per step, mean over all timed steps; measured on each "
      "rank from receiving the step to sending its results; dispatch/combine include waiting for "
      "slower ranks):\n%s%s",
      PhaseTableHeader("batch").c_str(), phase_rows.c_str());
  if (!cache_rows.empty()) {
    ASSIGN_OR_RETURN(const std::string summary, ExpertCacheSummary(engine));
    std::printf(
        "\nexpert cache per phase (every step of the phase, decode's context prefill included):\n"
        "| phase | hit rate | tokens | MiB streamed/token | stall ms/token |\n"
        "|---|---|---|---|---|\n%s%s\n",
        cache_rows.c_str(), summary.c_str());
  }
  ASSIGN_OR_RETURN(std::string load, LoadImbalanceReport(engine));
  if (!load.empty()) std::printf("\n%s", load.c_str());
  if (!a.routing_stats_out.empty()) {
    RETURN_IF_ERROR(SaveEngineRoutingStats(engine, a.routing_stats_out));
  }
  return absl::OkStatus();
}

}  // namespace

void RegisterBenchDecodeCommand(CLI::App& app, absl::Status* result) {
  auto a = std::make_shared<BenchDecodeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench-decode", "Prefill and batched decode throughput, with weight bytes per step");
  cmd->add_option("--model,-m", a->model, "GGUF model")->required();
  cmd->add_option("--threads,-t", a->threads,
                  "CPU threads per rank (0: cores / ranks on this host)");
  cmd->add_option("--comm", a->comm, "auto (MPI when started by mpirun), mpi or local")
      ->capture_default_str();
  cmd->add_option("--placement", a->placement,
                  "Expert placement: contiguous, balanced:<routing stats file>, balanced+<extra "
                  "replicas>:<routing stats file>, or a placement file")
      ->capture_default_str();
  cmd->add_option("--routing-stats-out", a->routing_stats_out,
                  "Write the tokens routed to each expert of each MoE layer (all ranks, whole run) "
                  "to FILE (.json, else TSV), for a later --placement balanced:FILE");
  cmd->add_option("--repack-experts", a->repack_experts,
                  "Routed experts in the faster CPU layout (IQ1_S quads, TQ1_0 as TQ2_0) at load")
      ->capture_default_str();
  cmd->add_option("--kv-type", a->kv_type, "KV cache type: f16, q8_0, q4_0, f32")
      ->capture_default_str();
  cmd->add_option("--device", a->device, kDeviceHelp)->capture_default_str();
  cmd->add_option("--gpu-exchange", a->gpu_exchange, kGpuExchangeHelp);
  cmd->add_option("--batch", a->batches, "Decode batch sizes, comma-separated")
      ->capture_default_str();
  cmd->add_option("--prompt", a->prompt, "Prefill length (tokens)")->capture_default_str();
  cmd->add_option("--context", a->context, "Tokens each decode sequence starts with")
      ->capture_default_str();
  cmd->add_option("--tokens", a->tokens, "Decode steps per measurement")->capture_default_str();
  cmd->add_option("--reps", a->reps, "Repetitions (the median is reported)")->capture_default_str();
  AddExpertCacheFlags(cmd, &a->expert_cache);
  cmd->callback([a, result] { *result = RunBenchDecode(*a); });
}

}  // namespace tritmoe
