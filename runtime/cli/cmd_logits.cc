// tritmoe logits: runs the model over a token sequence and writes the logits after every position
// (little-endian float32 [n_tokens][n_vocab]); the engine's end of the NumPy reference comparison.
// Runs on the Engine, so `mpirun -np N tritmoe logits ...` spreads the experts over N ranks (the
// sequence lives on rank 0, which alone reads the token file and writes the output).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/cli/commands.h"
#include "runtime/cli/engine_expert_cache.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/engine_job.h"

namespace tritmoe {
namespace {

// Token ids, decimal, one per line (any whitespace separates; '#' starts a comment).
absl::StatusOr<std::vector<int32_t>> ReadTokenFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open token file ", path));
  std::vector<int32_t> ids;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string word;
    while (words >> word) {
      int32_t id = 0;
      if (!absl::SimpleAtoi(word, &id)) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", line_no, ": '", word, "' is not a token id"));
      }
      ids.push_back(id);
    }
  }
  if (ids.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no token ids"));
  return ids;
}

struct LogitsArgs {
  std::string model, tokens, out;
  std::string precision = "quantized";
  std::string kv_type = "f16";
  std::string attention = "auto";
  std::string comm = "auto";
  std::string placement = "contiguous";
  std::string device = "cpu";
  std::string gpu_exchange;  // "" = the default (EngineOptions::gpu_exchange)
  int threads = 0;
  bool verbose = false;
  ExpertCacheFlags expert_cache;
};

absl::Status RunLogits(const LogitsArgs& a) {
  using Clock = std::chrono::steady_clock;
  EngineOptions eo;
  eo.model_path = a.model;
  eo.placement = a.placement;
  eo.device = a.device;
  eo.gpu_exchange = a.gpu_exchange;
  ModelOptions& opts = eo.model;
  if (a.precision == "float") {
    opts.precision = ActPrecision::kFloat;
  } else if (a.precision == "quantized") {
    opts.precision = ActPrecision::kQuantized;
  } else {
    return absl::InvalidArgumentError("--precision must be float or quantized");
  }
  ASSIGN_OR_RETURN(opts.kv_type, ParseKvCacheType(a.kv_type));
  if (a.attention == "auto") {
    opts.attention = AttentionForm::kAuto;
  } else if (a.attention == "naive") {
    opts.attention = AttentionForm::kNaive;
  } else if (a.attention == "absorbed") {
    opts.attention = AttentionForm::kAbsorbed;
  } else {
    return absl::InvalidArgumentError("--attention must be auto, naive or absorbed");
  }
  opts.threads = a.threads;
  ASSIGN_OR_RETURN(ExpertCacheSetup cache, ApplyExpertCacheFlags(a.expert_cache, &eo));
  EngineJobOptions job;
  job.comm = a.comm;
  job.report = a.verbose;

  const auto t0 = Clock::now();
  return RunEngineJob(job, eo, [&](Engine& engine) -> absl::Status {
    // Only the driver reads the tokens: workers just follow its steps.
    ASSIGN_OR_RETURN(std::vector<int32_t> tokens, ReadTokenFile(a.tokens));
    const int64_t n = static_cast<int64_t>(tokens.size());
    if (a.verbose) std::fprintf(stderr, "%s\n", engine.config().DebugString().c_str());
    const auto t1 = Clock::now();
    // One sequence, prefilled in chunks of at most max_tokens_per_step, logits at every token.
    const int64_t chunk = EngineOptions().max_tokens_per_step;
    std::vector<float> logits;
    logits.reserve(n * engine.config().n_vocab);
    for (int64_t begin = 0; begin < n; begin += chunk) {
      EngineStep step;
      if (begin == 0) {
        step.start.push_back({.id = 1, .sampling = SamplingParams::Greedy(), .capacity = n});
      }
      const int64_t end = std::min(n, begin + chunk);
      step.items.push_back({.id = 1,
                            .tokens = {tokens.begin() + begin, tokens.begin() + end},
                            .sample = false,
                            .logits = LogitsRequest::kAll});
      if (end == n) step.release.push_back(1);
      absl::StatusOr<EngineStepResult> r = engine.Step(step);
      if (!r.ok()) {
        return absl::Status(r.status().code(), absl::StrCat(a.tokens, ": ", r.status().message()));
      }
      logits.insert(logits.end(), r->logits[0].begin(), r->logits[0].end());
    }
    const auto t2 = Clock::now();

    // float32 is little-endian on every host we build for (x86-64, aarch64).
    std::ofstream f(a.out, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(logits.data()),
            static_cast<std::streamsize>(logits.size() * sizeof(float)));
    f.close();
    if (!f) return absl::InternalError(absl::StrCat("cannot write ", a.out));
    std::fprintf(stderr,
                 "logits: %lld tokens x %lld vocab -> %s (%d rank%s, load %.2f s, forward %.2f "
                 "s)\n",
                 static_cast<long long>(n), static_cast<long long>(engine.config().n_vocab),
                 a.out.c_str(), engine.num_ranks(), engine.num_ranks() == 1 ? "" : "s",
                 std::chrono::duration<double>(t1 - t0).count(),
                 std::chrono::duration<double>(t2 - t1).count());
    return absl::OkStatus();
  });
}

}  // namespace

void RegisterLogitsCommand(CLI::App& app, absl::Status* result) {
  auto args = std::make_shared<LogitsArgs>();
  CLI::App* cmd = app.add_subcommand(
      "logits",
      "Run one forward pass over a token sequence and write the logits of every position "
      "(works under mpirun: experts spread over the ranks)");
  cmd->add_option("--model,-m", args->model, "GGUF model (a file or any shard of a split set)")
      ->required();
  cmd->add_option("--tokens-file", args->tokens, "Token ids, one per line")->required();
  cmd->add_option("--out,-o", args->out, "Output: little-endian float32 [n_tokens][n_vocab]")
      ->required();
  cmd->add_option("--precision", args->precision,
                  "float (weights decoded, float math) or quantized (activations quantized)")
      ->capture_default_str();
  cmd->add_option("--kv-type", args->kv_type, "KV cache type: f16, q8_0, q4_0 (or f32, exact)")
      ->capture_default_str();
  cmd->add_option("--attention", args->attention,
                  "MLA form: auto (naive prefill, absorbed decode), naive or absorbed")
      ->capture_default_str();
  cmd->add_option("--threads,-t", args->threads,
                  "Threads per rank (0: cores / ranks on this host)");
  cmd->add_option("--comm", args->comm, "auto (MPI when started by mpirun), mpi or local")
      ->capture_default_str();
  cmd->add_option("--placement", args->placement,
                  "Expert placement: contiguous, balanced:<routing stats>, or a placement file")
      ->capture_default_str();
  cmd->add_option("--device", args->device, kDeviceHelp)->capture_default_str();
  cmd->add_option("--gpu-exchange", args->gpu_exchange, kGpuExchangeHelp);
  cmd->add_flag("--verbose,-v", args->verbose,
                "Print the ranks, the bytes each maps, and the model configuration");
  AddExpertCacheFlags(cmd, &args->expert_cache);
  cmd->callback([args, result] { *result = RunLogits(*args); });
}

}  // namespace tritmoe
