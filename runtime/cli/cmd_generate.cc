// tritmoe generate: streams a completion (or, with --chat, an R1 chat reply) to stdout, then
// prints prompt and generation speed to stderr. Runs on the Engine: under `mpirun -np N` the
// experts are spread over N ranks and rank 0 alone prints; the start-up report (ranks, bytes
// each maps) goes to stderr first.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/cli/commands.h"
#include "runtime/cli/engine_expert_cache.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/engine_job.h"
#include "runtime/engine/engine_report.h"
#include "runtime/store/expert_cache_setup.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/sampler.h"
#include "runtime/text/stop_checker.h"
#include "runtime/text/streaming_detokenizer.h"

namespace tritmoe {
namespace {

struct GenerateArgs {
  std::string model;
  std::string prompt;
  bool chat = false;
  int threads = 0;
  std::string kv_type = "f16";
  std::string comm = "auto";
  std::string placement = "contiguous";
  std::string device = "cpu";
  std::string gpu_exchange;       // "" = the default (EngineOptions::gpu_exchange)
  std::string routing_stats_out;  // tokens per (MoE layer, expert), summed over ranks
  SamplingParams sampling;
  int n_predict = 128;
  ExpertCacheFlags expert_cache;
};

// Driver only: encodes the prompt, runs it, streams the completion to stdout.
absl::Status Generate(const GenerateArgs& a, Engine& engine) {
  using Clock = std::chrono::steady_clock;
  const Tokenizer& tokenizer = engine.tokenizer();
  std::vector<int32_t> prompt;
  if (a.chat) {
    ASSIGN_OR_RETURN(ChatPrompt chat, RenderR1ChatPrompt({ChatMessage{"user", a.prompt}}));
    ASSIGN_OR_RETURN(prompt, EncodeChatPrompt(tokenizer, chat));
  } else {
    ASSIGN_OR_RETURN(prompt, tokenizer.Encode(a.prompt, tokenizer.add_bos(), false));
  }
  if (prompt.empty()) return absl::InvalidArgumentError("--prompt encodes to no tokens");
  SamplingParams params = a.sampling;
  params.max_tokens = a.n_predict;
  StopChecker stops(params, tokenizer.eos_id());
  StreamingDetokenizer detok(tokenizer);
  const int64_t capacity =
      std::min<int64_t>(engine.max_context(), static_cast<int64_t>(prompt.size()) + a.n_predict);
  if (static_cast<int64_t>(prompt.size()) > capacity) {
    return absl::InvalidArgumentError(
        absl::StrCat("the prompt has ", prompt.size(), " tokens; the context holds ", capacity));
  }
  constexpr uint64_t kId = 1;
  const int64_t chunk = EngineOptions().max_tokens_per_step;

  const auto t0 = Clock::now();
  int32_t next = -1;
  for (size_t begin = 0; begin < prompt.size(); begin += chunk) {
    EngineStep step;
    if (begin == 0) step.start.push_back({.id = kId, .sampling = params, .capacity = capacity});
    const size_t end = std::min(prompt.size(), begin + static_cast<size_t>(chunk));
    step.items.push_back({.id = kId,
                          .tokens = {prompt.begin() + begin, prompt.begin() + end},
                          .sample = end == prompt.size()});
    ASSIGN_OR_RETURN(EngineStepResult r, engine.Step(step));
    next = r.tokens[0];
  }
  const auto t1 = Clock::now();
  int n_generated = 0;
  int64_t held = static_cast<int64_t>(prompt.size());
  while (true) {
    ++n_generated;
    ASSIGN_OR_RETURN(std::string piece, detok.Push(next));
    StopChecker::Step step = stops.Push(next, piece);
    std::fwrite(step.text.data(), 1, step.text.size(), stdout);
    std::fflush(stdout);
    if (step.finish != FinishReason::kNone) break;
    if (held >= capacity) {
      std::string rest = stops.Flush();
      std::fwrite(rest.data(), 1, rest.size(), stdout);
      break;
    }
    EngineStep s;
    s.items.push_back({.id = kId, .tokens = {next}, .sample = true});
    ASSIGN_OR_RETURN(EngineStepResult r, engine.Step(s));
    ++held;
    next = r.tokens[0];
  }
  const auto t2 = Clock::now();
  EngineStep release;
  release.release.push_back(kId);
  RETURN_IF_ERROR(engine.Step(release).status());
  std::string tail = detok.Flush();
  std::fwrite(tail.data(), 1, tail.size(), stdout);
  std::printf("\n");
  const double prefill_s = std::chrono::duration<double>(t1 - t0).count();
  const double decode_s = std::chrono::duration<double>(t2 - t1).count();
  std::fprintf(stderr,
               "prompt: %zu tokens in %.3f s (%.1f tok/s); generated: %d tokens in %.3f s "
               "(%.1f tok/s); finish: %s\n",
               prompt.size(), prefill_s, prompt.size() / prefill_s, n_generated, decode_s,
               n_generated / decode_s,
               stops.finished() ? FinishReasonName(stops.finish_reason()) : "context");
  return absl::OkStatus();
}

absl::Status RunGenerate(const GenerateArgs& a) {
  EngineOptions options;
  options.model_path = a.model;
  options.placement = a.placement;
  options.device = a.device;
  options.gpu_exchange = a.gpu_exchange;
  options.model.threads = a.threads;
  ASSIGN_OR_RETURN(options.model.kv_type, ParseKvCacheType(a.kv_type));
  ASSIGN_OR_RETURN(ExpertCacheSetup cache, ApplyExpertCacheFlags(a.expert_cache, &options));
  EngineJobOptions job;
  job.comm = a.comm;
  return RunEngineJob(job, options, [&](Engine& engine) -> absl::Status {
    RETURN_IF_ERROR(Generate(a, engine));
    if (!a.routing_stats_out.empty()) {
      RETURN_IF_ERROR(SaveEngineRoutingStats(engine, a.routing_stats_out));
    }
    ASSIGN_OR_RETURN(const std::string summary, ExpertCacheSummary(engine));
    if (!summary.empty()) std::fprintf(stderr, "%s\n", summary.c_str());
    return absl::OkStatus();
  });
}

}  // namespace

void RegisterGenerateCommand(CLI::App& app, absl::Status* result) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt, streamed");
  cmd->add_option("--model,-m", a->model, "GGUF model (any shard of a split set)")->required();
  cmd->add_option("--prompt,-p", a->prompt, "Prompt text")->required();
  cmd->add_flag("--chat", a->chat, "Wrap the prompt in the DeepSeek-R1 chat template");
  cmd->add_option("-n,--n-predict", a->n_predict, "Maximum tokens to generate")
      ->capture_default_str();
  cmd->add_option("--threads,-t", a->threads,
                  "CPU threads per rank (0: cores / ranks on this host)");
  cmd->add_option("--comm", a->comm, "auto (MPI when started by mpirun), mpi or local")
      ->capture_default_str();
  cmd->add_option("--placement", a->placement,
                  "Expert placement: contiguous, balanced:<routing stats file>, balanced+<extra "
                  "replicas>:<routing stats file>, or a placement file")
      ->capture_default_str();
  cmd->add_option("--routing-stats-out", a->routing_stats_out,
                  "Write the tokens routed to each expert of each MoE layer (all ranks) to FILE "
                  "(.json, else TSV), for a later --placement balanced:FILE");
  cmd->add_option("--kv-type", a->kv_type, "KV cache type: f16, q8_0, q4_0, f32")
      ->capture_default_str();
  cmd->add_option("--device", a->device, kDeviceHelp)->capture_default_str();
  cmd->add_option("--gpu-exchange", a->gpu_exchange, kGpuExchangeHelp);
  cmd->add_option("--temperature,--temp", a->sampling.temperature, "0 = greedy")
      ->capture_default_str();
  cmd->add_option("--top-k", a->sampling.top_k, "0 = off")->capture_default_str();
  cmd->add_option("--top-p", a->sampling.top_p, "1 = off")->capture_default_str();
  cmd->add_option("--min-p", a->sampling.min_p, "0 = off")->capture_default_str();
  cmd->add_option("--seed", a->sampling.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--stop", a->sampling.stop, "Stop string (repeatable)");
  cmd->add_flag("--ignore-eos", a->sampling.ignore_eos, "Keep generating through EOS");
  AddExpertCacheFlags(cmd, &a->expert_cache);
  cmd->callback([a, result] { *result = RunGenerate(*a); });
}

}  // namespace tritmoe
