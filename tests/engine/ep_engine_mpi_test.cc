// Expert parallelism end to end on N ranks (run under tests/mpi/mpirun.sh -np N):
//   * a workload of several sequences -- spread over the ranks by the engine, started, decoded
//     and released at different steps -- gives the same greedy tokens, and logits within 1e-4
//     relative, as the same steps run through one Model holding every expert (the reference,
//     computed on rank 0 after the engine is gone);
//   * each rank's weight_bytes_loaded() is exactly the replicated tensors plus its share of the
//     routed experts, counted here independently from the file's tensor list;
//   * no rank touches another rank's experts: before the workload, each rank turns the pages of
//     the other ranks' expert byte ranges in its own mapping of the file to PROT_NONE, so any
//     read of them (a validation pass, a stray expert) kills the rank and fails the job.
//     (Resident-set size cannot show this: on kernels with large page-cache folios a fault maps
//     the whole folio, neighbours included; it is printed for information only.)
// Exits non-zero (the job aborts) on any failure, naming the rank.
//
//   tests/mpi/mpirun.sh -np 3 ep_engine_mpi_test DIR   (models are generated into DIR)
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "comm/mpi_communicator.h"
#include "runtime/engine/engine.h"
#include "runtime/gguf/gguf.h"
#include "runtime/modelgen/model_generator.h"
#include "tests/engine/mpi_test_main.h"
#include "tests/engine/mpi_test_model.h"

namespace tritmoe {
namespace {

// Rss of every mapping of `path` in this process, in bytes.
int64_t MappingRssBytes(const std::string& path) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in_mapping = false;
  int64_t kb = 0;
  while (std::getline(smaps, line)) {
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) &&
        line.find('-') != std::string::npos && line.find(':') > line.find(' ')) {
      // A mapping header: "start-end perms offset dev inode [path]".
      const size_t slash = line.find('/');
      in_mapping = slash != std::string::npos && line.substr(slash) == path;
      continue;
    }
    if (in_mapping && line.rfind("Rss:", 0) == 0) {
      std::istringstream in(line.substr(4));
      int64_t v = 0;
      in >> v;
      kb += v;
    }
  }
  return kb * 1024;
}

// Start address of this process's mapping of `path` at file offset 0 (0 when none).
uintptr_t MappingBase(const std::string& path) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos || line.substr(slash) != path) continue;
    std::istringstream in(line);
    std::string range, perms, offset;
    in >> range >> perms >> offset;
    if (std::stoull(offset, nullptr, 16) != 0) continue;
    return static_cast<uintptr_t>(std::stoull(range.substr(0, range.find('-')), nullptr, 16));
  }
  return 0;
}

struct ByteRange {
  uint64_t begin = 0, end = 0;  // file offsets
};

// File byte ranges of the routed experts that contiguous placement gives to OTHER ranks.
std::vector<ByteRange> OtherRanksExperts(const gguf::GgufModel& file, int n_expert, int rank,
                                         int n_ranks) {
  const int first = rank * (n_expert / n_ranks) + std::min(rank, n_expert % n_ranks);
  const int count = n_expert / n_ranks + (rank < n_expert % n_ranks ? 1 : 0);
  std::vector<ByteRange> out;
  const uint64_t data = file.shard(0).data_offset();
  for (const gguf::TensorInfo& t : file.tensors()) {
    if (t.name.find("_exps.weight") == std::string::npos) continue;
    const uint64_t per = t.nbytes / n_expert, base = data + t.offset;
    if (first > 0) out.push_back({base, base + first * per});
    if (first + count < n_expert) out.push_back({base + (first + count) * per, base + t.nbytes});
  }
  return out;
}

// Sets the whole pages inside `ranges` of the mapping at `base` to `prot`; returns bytes covered.
int64_t Protect(uintptr_t base, const std::vector<ByteRange>& ranges, int prot) {
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  int64_t covered = 0;
  for (const ByteRange& r : ranges) {
    const uint64_t b = (r.begin + page - 1) / page * page, e = r.end / page * page;
    if (e <= b) continue;
    if (mprotect(reinterpret_cast<void*>(base + b), e - b, prot) != 0) {
      std::perror("mprotect");
      std::abort();
    }
    covered += static_cast<int64_t>(e - b);
  }
  return covered;
}

// The workload: five sequences of different prompt lengths; sequence 2 ends after step 2 and
// sequence 5 starts at step 3, so the engine places and frees sequences while others decode.
constexpr int kSteps = 7;
std::vector<int32_t> Prompt(int seq) {
  std::vector<int32_t> p;
  for (int i = 0; i < 2 + 3 * seq; ++i) p.push_back((seq * 131 + i * 37 + 5) % 1000);
  return p;
}
bool Live(int seq, int step) {
  if (seq == 2) return step <= 2;
  if (seq == 5) return step >= 3;
  return true;
}
int StartStep(int seq) { return seq == 5 ? 3 : 0; }

struct Trace {
  std::vector<std::vector<int32_t>> tokens;  // [seq][...]
  std::vector<std::vector<float>> logits;    // [seq]: concatenated rows
};

double RelError(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size() || b.empty()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs(double(a[i]) - b[i]));
    den = std::max(den, std::fabs(double(b[i])));
  }
  return num / den;
}

absl::StatusOr<Trace> RunEngine(Engine& e) {
  Trace t;
  t.tokens.resize(6);
  t.logits.resize(6);
  std::vector<int32_t> next(6, -1);
  for (int step = 0; step < kSteps; ++step) {
    EngineStep s;
    std::vector<int> seqs;
    for (int q = 1; q <= 5; ++q) {
      if (!Live(q, step)) continue;
      const bool first = step == StartStep(q);
      if (first)
        s.start.push_back(
            {.id = uint64_t(q), .sampling = SamplingParams::Greedy(), .capacity = 64});
      s.items.push_back({.id = uint64_t(q),
                         .tokens = first ? Prompt(q) : std::vector<int32_t>{next[q]},
                         .sample = true,
                         .logits = first ? LogitsRequest::kAll : LogitsRequest::kLast});
      if (!Live(q, step + 1)) s.release.push_back(q);
      seqs.push_back(q);
    }
    ASSIGN_OR_RETURN(EngineStepResult r, e.Step(s));
    for (size_t i = 0; i < seqs.size(); ++i) {
      const int q = seqs[i];
      next[q] = r.tokens[i];
      t.tokens[q].push_back(r.tokens[i]);
      t.logits[q].insert(t.logits[q].end(), r.logits[i].begin(), r.logits[i].end());
    }
  }
  return t;
}

// The same steps through one Model with every expert, all sequences batched as the driver sent
// them.
absl::StatusOr<Trace> RunReference(const std::string& path) {
  const EngineOptions eo = MpiTestEngineOptions(path);
  ASSIGN_OR_RETURN(std::unique_ptr<Model> m, Model::Load(path, eo.model));
  Trace t;
  t.tokens.resize(6);
  t.logits.resize(6);
  std::vector<int32_t> next(6, -1);
  std::vector<std::unique_ptr<KvCache>> caches(6);
  std::vector<std::vector<int32_t>> inputs(6);
  for (int step = 0; step < kSteps; ++step) {
    std::vector<SequenceInput> batch;
    std::vector<int> seqs;
    for (int q = 1; q <= 5; ++q) {
      if (!Live(q, step)) continue;
      const bool first = step == StartStep(q);
      if (first) {
        ASSIGN_OR_RETURN(caches[q], m->NewKvCache(64));
      }
      inputs[q] = first ? Prompt(q) : std::vector<int32_t>{next[q]};
      batch.push_back(
          {caches[q].get(), inputs[q], first ? LogitsRequest::kAll : LogitsRequest::kLast});
      seqs.push_back(q);
    }
    StepOutput out;
    RETURN_IF_ERROR(m->Step(batch, &out));
    for (size_t i = 0; i < seqs.size(); ++i) {
      const int q = seqs[i];
      const float* last = out.Row(i, out.n_rows[i] - 1);
      next[q] = static_cast<int32_t>(std::max_element(last, last + out.n_vocab) - last);
      t.tokens[q].push_back(next[q]);
      t.logits[q].insert(t.logits[q].end(), out.Row(i, 0),
                         out.Row(i, 0) + out.n_rows[i] * out.n_vocab);
    }
  }
  return t;
}

absl::Status CheckModel(Communicator& comm, const std::string& path, const std::string& recipe) {
  const int me = comm.rank(), n = comm.size();
  const int n_expert = 16;  // the tiny shape
  // Independent count: replicated tensors + this rank's contiguous share of each expert stack.
  int64_t replicated = 0, experts = 0;
  std::vector<ByteRange> fence;
  {
    ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufModel> file, gguf::GgufModel::Open(path));
    const int mine = n_expert / n + (me < n_expert % n ? 1 : 0);
    for (const gguf::TensorInfo& t : file->tensors()) {
      if (t.name.find("_exps.weight") != std::string::npos) {
        experts += static_cast<int64_t>(t.nbytes) / n_expert * mine;
      } else {
        replicated += static_cast<int64_t>(t.nbytes);
      }
    }
    fence = OtherRanksExperts(*file, n_expert, me, n);
  }

  std::unique_ptr<Engine> engine;
  ASSIGN_OR_RETURN(engine, Engine::Create(MpiTestEngineOptions(path), &comm));
  const int64_t loaded = engine->weight_bytes_loaded();
  if (loaded != replicated + experts) {
    return absl::InternalError(absl::StrCat(recipe, ": weight_bytes_loaded ", loaded,
                                            " != replicated ", replicated, " + experts ", experts));
  }
  const uintptr_t base = MappingBase(path);
  if (base == 0) return absl::InternalError(absl::StrCat("no mapping of ", path, " found"));
  const int64_t fenced = Protect(base, fence, PROT_NONE);
  if (n > 1 && fenced == 0) return absl::InternalError("nothing to fence: the test is void");

  Trace got;
  if (engine->is_driver()) {
    ASSIGN_OR_RETURN(got, RunEngine(*engine));
    RETURN_IF_ERROR(engine->Shutdown());
  } else {
    RETURN_IF_ERROR(engine->RunWorker());
  }
  const int64_t rss = MappingRssBytes(path);
  Protect(base, fence, PROT_READ);
  engine.reset();
  std::printf(
      "[rank %d/%d %s] weight bytes %lld (replicated %lld + experts %lld); %lld bytes of "
      "other ranks' experts fenced, never touched; resident %lld\n",
      me, n, recipe.c_str(), static_cast<long long>(loaded), static_cast<long long>(replicated),
      static_cast<long long>(experts), static_cast<long long>(fenced), static_cast<long long>(rss));
  std::fflush(stdout);

  if (me == 0) {
    ASSIGN_OR_RETURN(Trace want, RunReference(path));
    for (int q = 1; q <= 5; ++q) {
      if (got.tokens[q] != want.tokens[q]) {
        return absl::InternalError(absl::StrCat(recipe, ": sequence ", q,
                                                " greedy tokens differ from the one-model "
                                                "reference"));
      }
      const double err = RelError(got.logits[q], want.logits[q]);
      std::printf("[%s np=%d] sequence %d: %zu tokens, logits rel error %.3g\n", recipe.c_str(), n,
                  q, got.tokens[q].size(), err);
      if (!(err <= 1e-4)) {
        return absl::InternalError(absl::StrCat(recipe, ": sequence ", q, " logits differ by ", err,
                                                " (relative) from the reference"));
      }
    }
  }
  return comm.Barrier();
}

absl::Status Run(Communicator& comm, const std::string& dir) {
  for (const std::string recipe : {"f16", "ud-1.58"}) {
    ASSIGN_OR_RETURN(std::string path, EnsureTinyModel(comm, dir, recipe));
    RETURN_IF_ERROR(CheckModel(comm, path, recipe));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace tritmoe

int main(int argc, char** argv) { return tritmoe::MpiTestMain(argc, argv, tritmoe::Run); }
