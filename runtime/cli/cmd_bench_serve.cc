// tritmoe bench-serve: a concurrency sweep against an OpenAI-compatible server (`tritmoe serve`
// or any other), reporting what `vllm bench serve` reports -- request/s, output and total
// tokens/s, TTFT, TPOT, ITL and end-to-end latency (mean, median, p99) -- as a table on stdout
// and, with --json-out, as JSON. Each level sends the same seeded random requests (token-id
// prompts, ignore_eos, exact max_tokens).
//
//   tritmoe bench-serve --port 8000 --concurrency 1,2,4,8,16,32,64 --input-len 128 --output-len 128
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/cli/commands.h"
#include "runtime/serve/load_generator.h"

namespace tritmoe {
namespace {

struct BenchServeArgs {
  LoadOptions load;
  std::vector<int> concurrency = {1, 2, 4, 8, 16, 32, 64};
  int prompts_per_stream = 4;  // requests per level: max(min_prompts, concurrency x this)
  int min_prompts = 8;
  int num_prompts = 0;  // fixed count per level when > 0
  std::string json_out;
};

nlohmann::json DistJson(const Distribution& d) {
  return {{"mean", d.mean}, {"median", d.median}, {"p99", d.p99}, {"count", d.count}};
}

absl::Status RunBenchServe(const BenchServeArgs& a) {
  ASSIGN_OR_RETURN(ServerModelInfo info, QueryModel(a.load.host, a.load.port));
  LoadOptions base = a.load;
  if (base.model.empty()) base.model = info.name;
  if (base.vocab_size == 0) base.vocab_size = info.vocab_size;
  std::printf("# bench-serve: %s at %s:%d%s, input %d, output %d tokens (range %.2f), rate %s\n",
              base.model.c_str(), base.host.c_str(), base.port, base.endpoint.c_str(),
              base.input_len, base.output_len, base.range_ratio,
              base.request_rate > 0 ? absl::StrCat(base.request_rate, " req/s").c_str() : "inf");
  {
    // One short request first, so the first level does not pay for cold caches.
    LoadOptions warm = base;
    warm.concurrency = 1;
    warm.num_prompts = 1;
    warm.output_len = 4;
    warm.request_rate = 0;
    ASSIGN_OR_RETURN(LoadResult w, RunLoad(warm));
    if (w.failed > 0) return absl::UnavailableError("warm-up request failed: " + w.first_error);
  }
  std::printf("%5s %5s %4s %8s %8s %9s %9s | %8s %8s %8s | %7s %7s %7s | %7s %7s %7s | %8s %8s\n",
              "conc", "reqs", "fail", "dur_s", "req/s", "out_tok/s", "tot_tok/s", "ttft_mean",
              "ttft_med", "ttft_p99", "tpot_mn", "tpot_md", "tpot_99", "itl_mn", "itl_md", "itl_99",
              "e2el_med", "e2el_p99");
  nlohmann::json levels = nlohmann::json::array();
  for (int c : a.concurrency) {
    LoadOptions o = base;
    o.concurrency = c;
    o.num_prompts =
        a.num_prompts > 0 ? a.num_prompts : std::max(a.min_prompts, c * a.prompts_per_stream);
    ASSIGN_OR_RETURN(LoadResult r, RunLoad(o));
    std::printf(
        "%5d %5d %4d %8.2f %8.2f %9.1f %9.1f | %8.1f %8.1f %8.1f | %7.1f %7.1f %7.1f | %7.1f "
        "%7.1f %7.1f | %8.1f %8.1f\n",
        c, r.completed, r.failed, r.duration_s, r.request_throughput, r.output_throughput,
        r.total_throughput, r.ttft_ms.mean, r.ttft_ms.median, r.ttft_ms.p99, r.tpot_ms.mean,
        r.tpot_ms.median, r.tpot_ms.p99, r.itl_ms.mean, r.itl_ms.median, r.itl_ms.p99,
        r.e2el_ms.median, r.e2el_ms.p99);
    std::fflush(stdout);
    if (r.failed > 0)
      std::fprintf(stderr, "bench-serve: %d failed, first: %s\n", r.failed, r.first_error.c_str());
    levels.push_back({{"concurrency", c},
                      {"num_prompts", o.num_prompts},
                      {"completed", r.completed},
                      {"failed", r.failed},
                      {"duration_s", r.duration_s},
                      {"input_tokens", r.input_tokens},
                      {"output_tokens", r.output_tokens},
                      {"request_throughput", r.request_throughput},
                      {"output_throughput", r.output_throughput},
                      {"total_token_throughput", r.total_throughput},
                      {"ttft_ms", DistJson(r.ttft_ms)},
                      {"tpot_ms", DistJson(r.tpot_ms)},
                      {"itl_ms", DistJson(r.itl_ms)},
                      {"e2el_ms", DistJson(r.e2el_ms)}});
  }
  std::printf(
      "# times in ms; ttft = time to first token, tpot = time per output token after the "
      "first, itl = inter-token latency, e2el = end-to-end latency\n");
  if (!a.json_out.empty()) {
    nlohmann::json j = {{"model", base.model},
                        {"endpoint", base.endpoint},
                        {"input_len", base.input_len},
                        {"output_len", base.output_len},
                        {"range_ratio", base.range_ratio},
                        {"request_rate", base.request_rate},
                        {"seed", base.seed},
                        {"levels", levels}};
    std::ofstream out(a.json_out);
    out << j.dump(2) << "\n";
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", a.json_out));
  }
  return absl::OkStatus();
}

}  // namespace

void RegisterBenchServeCommand(CLI::App& app, absl::Status* result) {
  auto a = std::make_shared<BenchServeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench-serve", "Concurrency sweep against an OpenAI-compatible server: tok/s, TTFT, ITL");
  cmd->add_option("--host", a->load.host, "Server address")->capture_default_str();
  cmd->add_option("--port", a->load.port, "Server HTTP port")->capture_default_str();
  cmd->add_option("--model", a->load.model, "Model name (default: the server's)");
  cmd->add_option("--endpoint", a->load.endpoint, "/v1/completions or /v1/chat/completions")
      ->capture_default_str();
  cmd->add_option("--concurrency,-c", a->concurrency, "Concurrent streams, one level each")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--num-prompts", a->num_prompts,
                  "Requests per level (0: max(--min-prompts, concurrency x "
                  "--prompts-per-stream))")
      ->capture_default_str();
  cmd->add_option("--prompts-per-stream", a->prompts_per_stream, "See --num-prompts")
      ->capture_default_str();
  cmd->add_option("--min-prompts", a->min_prompts, "See --num-prompts")->capture_default_str();
  cmd->add_option("--input-len", a->load.input_len, "Prompt tokens")->capture_default_str();
  cmd->add_option("--output-len", a->load.output_len, "Generated tokens (ignore_eos)")
      ->capture_default_str();
  cmd->add_option("--range-ratio", a->load.range_ratio,
                  "Lengths uniform in [len x (1 - r), len x (1 + r)]")
      ->capture_default_str();
  cmd->add_option("--request-rate", a->load.request_rate,
                  "Poisson arrivals at this many requests/s (0: all at once)")
      ->capture_default_str();
  cmd->add_option("--seed", a->load.seed, "Seed of the random requests")->capture_default_str();
  cmd->add_option("--vocab-size", a->load.vocab_size,
                  "Prompt token ids below this (0: the server's /v1/models vocab_size)");
  cmd->add_option("--json-out", a->json_out, "Also write the results as JSON here");
  cmd->callback([a, result] { *result = RunBenchServe(*a); });
}

}  // namespace tritmoe
