#include "runtime/store/cache_bench.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "runtime/model/model.h"
#include "runtime/store/cached_expert_source.h"
#include "runtime/store/expert_store.h"

namespace tritmoe {
namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

int32_t Argmax(const float* row, int64_t n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);
}

// One run on a fresh model: fills `row` with this run's figures.
absl::Status RunOnce(const CacheBenchConfig& c, ExpertStore* store, CacheBenchRow* row) {
  std::unique_ptr<CachedExpertSource> source;
  ModelOptions options;
  options.threads = c.threads;
  if (!row->resident) {
    ExpertCacheOptions co;
    co.budget_bytes = row->budget_mb << 20;
    co.prefetch = row->prefetch;
    source = std::make_unique<CachedExpertSource>(store, co);
    options.expert_source = source.get();
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Load(c.model, options));
  std::mt19937 rng(1234);
  std::vector<std::unique_ptr<KvCache>> caches;
  std::vector<std::vector<int32_t>> prompts(c.batch);
  for (auto& p : prompts) {
    for (int i = 0; i < c.prompt; ++i) p.push_back(static_cast<int32_t>(rng() % model->n_vocab()));
  }
  StepOutput out;
  std::vector<int32_t> next(c.batch);
  double prefill_s = 0;
  for (int b = 0; b < c.batch; ++b) {
    ASSIGN_OR_RETURN(std::unique_ptr<KvCache> kv, model->NewKvCache(c.prompt + c.tokens + 1));
    const Clock::time_point t0 = Clock::now();
    RETURN_IF_ERROR(model->Step({{kv.get(), prompts[b], LogitsRequest::kLast}}, &out));
    prefill_s += std::chrono::duration<double>(Clock::now() - t0).count();
    next[b] = Argmax(out.Row(0, 0), out.n_vocab);
    caches.push_back(std::move(kv));
  }
  row->prefill_tok_s = c.batch * c.prompt / prefill_s;
  if (source) source->ResetStats();
  std::vector<SequenceInput> step(c.batch);
  const Clock::time_point t0 = Clock::now();
  for (int t = 0; t < c.tokens; ++t) {
    for (int b = 0; b < c.batch; ++b) {
      step[b] = {caches[b].get(), {&next[b], 1}, LogitsRequest::kLast};
    }
    RETURN_IF_ERROR(model->Step(step, &out));
    for (int b = 0; b < c.batch; ++b) next[b] = Argmax(out.Row(b, 0), out.n_vocab);
  }
  const double decode_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const double n_tok = static_cast<double>(c.tokens) * c.batch;
  row->decode_tok_s = n_tok / decode_s;
  if (source) {
    const ExpertCacheStats s = source->Stats();
    const LayerCacheStats total = s.Total();
    row->slots_per_layer = s.slots_per_layer;
    row->hit_rate = total.hit_rate();
    row->mib_per_token = total.bytes_read / n_tok / (1 << 20);
    row->stall_ms_per_token = 1e3 * total.stall_s / n_tok;
    row->prefetch_used =
        total.prefetched == 0 ? 0.0 : static_cast<double>(total.prefetch_used) / total.prefetched;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CacheBenchConfig::Validate() const {
  if (model.empty()) return absl::InvalidArgumentError("bench-cache: --model is required");
  if (prompt < 1 || tokens < 1 || batch < 1 || reps < 1) {
    return absl::InvalidArgumentError("bench-cache: prompt, tokens, batch and reps must be >= 1");
  }
  for (int64_t b : budgets_mb) {
    if (b < 0) return absl::InvalidArgumentError("bench-cache: budgets must be >= 0 MiB");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<CacheBenchRow>> RunCacheBench(const CacheBenchConfig& c) {
  RETURN_IF_ERROR(c.Validate());
  ASSIGN_OR_RETURN(std::unique_ptr<ExpertStore> store,
                   OpenExpertStore(c.store.empty() ? c.model : c.store));
  std::vector<CacheBenchRow> plan;
  plan.emplace_back().resident = true;
  for (int64_t mb : c.budgets_mb) {
    for (bool p : c.prefetch) {
      CacheBenchRow& r = plan.emplace_back();
      r.budget_mb = mb;
      r.prefetch = p;
    }
  }
  std::vector<CacheBenchRow> rows;
  for (const CacheBenchRow& want : plan) {
    std::vector<CacheBenchRow> runs;
    for (int r = 0; r < c.reps; ++r) {
      CacheBenchRow row = want;
      RETURN_IF_ERROR(RunOnce(c, store.get(), &row));
      runs.push_back(row);
    }
    auto median = [&](double CacheBenchRow::*f) {
      std::vector<double> v;
      for (const CacheBenchRow& r : runs) v.push_back(r.*f);
      return Median(v);
    };
    CacheBenchRow m = runs[0];
    m.prefill_tok_s = median(&CacheBenchRow::prefill_tok_s);
    m.decode_tok_s = median(&CacheBenchRow::decode_tok_s);
    m.hit_rate = median(&CacheBenchRow::hit_rate);
    m.mib_per_token = median(&CacheBenchRow::mib_per_token);
    m.stall_ms_per_token = median(&CacheBenchRow::stall_ms_per_token);
    m.prefetch_used = median(&CacheBenchRow::prefetch_used);
    rows.push_back(m);
  }
  return rows;
}

std::string FormatCacheBench(const CacheBenchConfig& c, const std::vector<CacheBenchRow>& rows) {
  std::string s = absl::StrFormat(
      "prefill %d tokens, then %d decode steps at batch %d; medians of %d runs\n\n"
      "| budget | prefetch | slots/layer | prefill tok/s | decode tok/s | hit rate | MiB read / "
      "token | stall ms / token | prefetched used |\n"
      "|---|---|---|---|---|---|---|---|---|\n",
      c.prompt, c.tokens, c.batch, c.reps);
  for (const CacheBenchRow& r : rows) {
    if (r.resident) {
      absl::StrAppendFormat(
          &s, "| resident (mmap, no cache) | - | all | %.1f | %.2f | - | - | - | - |\n",
          r.prefill_tok_s, r.decode_tok_s);
      continue;
    }
    absl::StrAppendFormat(
        &s, "| %s | %s | %d | %.1f | %.2f | %.1f%% | %.2f | %.2f | %s |\n",
        r.budget_mb == 0 ? std::string("unlimited") : absl::StrCat(r.budget_mb, " MiB"),
        r.prefetch ? "on" : "off", r.slots_per_layer, r.prefill_tok_s, r.decode_tok_s,
        100.0 * r.hit_rate, r.mib_per_token, r.stall_ms_per_token,
        r.prefetch ? absl::StrFormat("%.0f%%", 100.0 * r.prefetch_used) : std::string("-"));
  }
  return s;
}

}  // namespace tritmoe
