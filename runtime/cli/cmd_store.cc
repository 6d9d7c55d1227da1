// tritmoe store: serves a GGUF model's tensor bytes over gRPC to ranks that stream their experts
// (grpc://host:port), or with --write-checksums records the model's chunk checksums once.
// tritmoe bench-cache: decode/prefill speed, hit rate and bytes per token against the expert
// cache budget (runtime/store/cache_bench.h).
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "runtime/cli/commands.h"
#include "runtime/store/cache_bench.h"
#include "runtime/store/checksum_manifest.h"
#include "runtime/store/file_store.h"
#include "runtime/store/store_server.h"

namespace tritmoe {
namespace {

struct StoreArgs {
  std::string model;
  std::string host = "0.0.0.0";
  int port = 7070;
  int chunk_kb = 1024;
  bool write_checksums = false;
  bool require_checksums = false;
  int threads = 4;
};

absl::Status WriteChecksums(const StoreArgs& a) {
  FileStoreOptions fo;
  fo.verify = FileStoreOptions::Verify::kFirstRead;
  fo.reader_threads = a.threads;
  ASSIGN_OR_RETURN(std::unique_ptr<FileStore> store, FileStore::Open(a.model, fo));
  ASSIGN_OR_RETURN(ChecksumManifest m,
                   store->ComputeManifest(static_cast<uint64_t>(a.chunk_kb) << 10));
  const std::string path = ChecksumManifest::DefaultPath(store->model().path());
  RETURN_IF_ERROR(m.Write(path));
  uint64_t chunks = 0;
  for (const auto& t : m.tensors) chunks += t.crcs.size();
  std::printf("wrote %s: %zu tensors, %llu chunks of up to %d KiB\n", path.c_str(),
              m.tensors.size(), static_cast<unsigned long long>(chunks), a.chunk_kb);
  return absl::OkStatus();
}

absl::Status Serve(const StoreArgs& a) {
  FileStoreOptions fo;
  fo.verify =
      a.require_checksums ? FileStoreOptions::Verify::kManifest : FileStoreOptions::Verify::kAuto;
  fo.reader_threads = a.threads;
  ASSIGN_OR_RETURN(std::unique_ptr<FileStore> store, FileStore::Open(a.model, fo));
  // SIGINT/SIGTERM are taken by sigwait below; blocked before gRPC starts its threads so that
  // none of them gets the signal.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  StoreServerOptions so;
  so.host = a.host;
  so.port = a.port;
  so.chunk_bytes = static_cast<uint64_t>(a.chunk_kb) << 10;
  so.verified_by_manifest = store->verified_by_manifest();
  ASSIGN_OR_RETURN(std::unique_ptr<StoreServer> server, StoreServer::Start(store.get(), so));
  std::printf("tritmoe store: serving %s (%zu tensors; checksums %s) on %s:%d\n", a.model.c_str(),
              store->tensors().size(),
              store->verified_by_manifest()
                  ? absl::StrCat("from ", store->manifest_path()).c_str()
                  : "taken at first read (no manifest; see --write-checksums)",
              a.host.c_str(), server->port());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&signals, &sig);
  std::printf("tritmoe store: signal %d, shutting down\n", sig);
  server->Shutdown();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> ParseList(const std::string& s, const char* what) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    int64_t v = 0;
    if (part == "all" || part == "unlimited") {
      v = 0;
    } else if (!absl::SimpleAtoi(part, &v) || v < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": '", std::string(part), "' is not a size in MiB or 'unlimited'"));
    }
    out.push_back(v);
  }
  return out;
}

}  // namespace

void RegisterStoreCommand(CLI::App& app, absl::Status* result) {
  auto a = std::make_shared<StoreArgs>();
  CLI::App* cmd = app.add_subcommand(
      "store", "Serve a model's tensors to ranks over gRPC (grpc://host:port), verified by chunk");
  cmd->add_option("--model,-m", a->model, "GGUF model (any shard of a split set)")->required();
  cmd->add_option("--host", a->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port,-p", a->port, "Port (0: any free port, printed)")->capture_default_str();
  cmd->add_option(
         "--chunk-kb", a->chunk_kb,
         "Chunk size in KiB: of streamed messages, and of checksums with --write-checksums")
      ->capture_default_str()
      ->check(CLI::Range(1, 3072));
  cmd->add_flag("--write-checksums", a->write_checksums,
                "Record every chunk's CRC-32C next to the model (<first shard>.tmsum) and exit");
  cmd->add_flag("--require-checksums", a->require_checksums,
                "Refuse to serve a model without a checksum manifest");
  cmd->add_option("--threads,-t", a->threads, "Parallel reads")->capture_default_str();
  cmd->callback([a, result] { *result = a->write_checksums ? WriteChecksums(*a) : Serve(*a); });

  auto b = std::make_shared<CacheBenchConfig>();
  auto budgets = std::make_shared<std::string>("0");
  auto prefetch = std::make_shared<std::string>("off");
  CLI::App* bench = app.add_subcommand(
      "bench-cache", "Decode/prefill speed, hit rate and bytes per token against the cache budget");
  bench->add_option("--model,-m", b->model, "GGUF model")->required();
  bench->add_option("--expert-store", b->store,
                    "Where experts come from: a path or grpc://host:port (default: the model)");
  bench->add_option("--budgets-mb", *budgets, "Comma-separated cache budgets in MiB (0: unlimited)")
      ->capture_default_str();
  bench->add_option("--prefetch", *prefetch, "off, on, or both")->capture_default_str();
  bench->add_option("--prompt", b->prompt, "Prefill tokens")->capture_default_str();
  bench->add_option("--tokens", b->tokens, "Decode steps")->capture_default_str();
  bench->add_option("--batch", b->batch, "Sequences decoding together")->capture_default_str();
  bench->add_option("--reps", b->reps, "Runs per cell (median)")->capture_default_str();
  bench->add_option("--threads,-t", b->threads, "CPU threads (0: all cores)");
  bench->callback([b, budgets, prefetch, result] {
    *result = [&]() -> absl::Status {
      CacheBenchConfig c = *b;
      ASSIGN_OR_RETURN(c.budgets_mb, ParseList(*budgets, "--budgets-mb"));
      if (*prefetch == "off") {
        c.prefetch = {false};
      } else if (*prefetch == "on") {
        c.prefetch = {true};
      } else if (*prefetch == "both") {
        c.prefetch = {false, true};
      } else {
        return absl::InvalidArgumentError("--prefetch: expected off, on or both");
      }
      ASSIGN_OR_RETURN(std::vector<CacheBenchRow> rows, RunCacheBench(c));
      std::printf("%s", FormatCacheBench(c, rows).c_str());
      return absl::OkStatus();
    }();
  });
}

}  // namespace tritmoe
