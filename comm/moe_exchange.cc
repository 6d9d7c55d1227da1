#include "comm/moe_exchange.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "base/thread_pool.h"

namespace tritmoe {
namespace {

constexpr int64_t kRowAlign = 64;
// Far above real models; keeps every derived size comfortably inside int64 and row indices
// inside int32.
constexpr int kMaxHidden = 1 << 20;
constexpr int kMaxTopK = 64;
constexpr int kMaxTokens = 1 << 20;
constexpr int kMaxExperts = 1 << 16;

// Minimum rows per thread chunk when packing or reducing: below this a thread costs more than
// the copy.
constexpr int64_t kGrainTokens = 16;

}  // namespace

absl::Status MoeExchangeConfig::Validate() const {
  auto bad = [](const char* field, int value, int lo, int hi) {
    return absl::InvalidArgumentError(absl::StrCat("MoeExchangeConfig.", std::string(field), " = ",
                                                   value, " is outside [", lo, ", ", hi, "]"));
  };
  if (num_experts < 1 || num_experts > kMaxExperts) {
    return bad("num_experts", num_experts, 1, kMaxExperts);
  }
  if (hidden < 1 || hidden > kMaxHidden) return bad("hidden", hidden, 1, kMaxHidden);
  if (top_k < 1 || top_k > std::min(kMaxTopK, num_experts)) {
    return bad("top_k", top_k, 1, std::min(kMaxTopK, num_experts));
  }
  if (max_tokens_per_rank < 1 || max_tokens_per_rank > kMaxTokens) {
    return bad("max_tokens_per_rank", max_tokens_per_rank, 1, kMaxTokens);
  }
  if (num_layers < 1 || num_layers > 4096) return bad("num_layers", num_layers, 1, 4096);
  return absl::OkStatus();
}

MoeExchangeSizes MoeExchangeSizes::Compute(const MoeExchangeConfig& c, int num_ranks) {
  MoeExchangeSizes s;
  const int64_t payload = int64_t{c.hidden} * 4 + int64_t{c.top_k} * 8;
  s.dispatch_row_bytes = (payload + kRowAlign - 1) / kRowAlign * kRowAlign;
  s.combine_row_bytes = int64_t{c.hidden} * 4;
  s.max_dests_per_token = std::min(c.top_k, num_ranks);
  s.max_send_rows = int64_t{c.max_tokens_per_rank} * s.max_dests_per_token;
  s.max_recv_rows = int64_t{c.max_tokens_per_rank} * num_ranks;
  s.max_entries = s.max_recv_rows * c.top_k;
  return s;
}

int64_t MoeExchangeSizes::buffer_bytes() const {
  return (max_send_rows + max_recv_rows) * (dispatch_row_bytes + combine_row_bytes);
}

MoeExchange::MoeExchange(const MoeExchangeConfig& config, Communicator* comm, ThreadPool* pool)
    : config_(config),
      comm_(comm),
      pool_(pool),
      sizes_(MoeExchangeSizes::Compute(config, comm->size())) {}

absl::StatusOr<std::unique_ptr<MoeExchange>> MoeExchange::Create(const MoeExchangeConfig& config,
                                                                 Communicator* comm,
                                                                 ThreadPool* pool) {
  if (comm == nullptr) return absl::InvalidArgumentError("MoeExchange: null communicator");
  // Local problems are not returned at once: the verdict travels with the config check below so
  // that every rank fails together instead of some waiting in the gather.
  absl::Status local = config.Validate();
  std::unique_ptr<MoeExchange> ex;
  if (local.ok()) {
    ex.reset(new MoeExchange(config, comm, pool));
    const MoeExchangeSizes& s = ex->sizes_;
    if (s.max_recv_rows > INT32_MAX || s.max_entries > INT32_MAX) {
      local = absl::InvalidArgumentError(
          absl::StrCat("MoeExchange: ", s.max_recv_rows,
                       " receive rows (max_tokens_per_rank x ranks) is too "
                       "many; lower max_tokens_per_rank"));
    } else {
      ex->dispatch_send_ = HostBuffer(s.max_send_rows * s.dispatch_row_bytes);
      ex->dispatch_recv_ = HostBuffer(s.max_recv_rows * s.dispatch_row_bytes);
      ex->combine_send_ = HostBuffer(s.max_recv_rows * s.combine_row_bytes);
      ex->combine_recv_ = HostBuffer(s.max_send_rows * s.combine_row_bytes);
      if (ex->dispatch_send_.data() == nullptr || ex->dispatch_recv_.data() == nullptr ||
          ex->combine_send_.data() == nullptr || ex->combine_recv_.data() == nullptr) {
        local = absl::ResourceExhaustedError(absl::StrCat(
            "MoeExchange: cannot reserve ", s.buffer_bytes(), " bytes of exchange buffers"));
      }
    }
  }

  // Every rank must have built the same config: buffer sizes and row formats depend on it.
  constexpr int kFields = 6;
  const int64_t mine[kFields] = {local.ok() ? 1 : 0, config.num_experts,         config.hidden,
                                 config.top_k,       config.max_tokens_per_rank, config.num_layers};
  std::vector<int64_t> all(static_cast<size_t>(kFields) * comm->size());
  RETURN_IF_ERROR(
      comm->AllGather(std::span<const int64_t>(mine, kFields), std::span<int64_t>(all)));
  if (!local.ok()) return local;
  for (int p = 0; p < comm->size(); ++p) {
    const int64_t* theirs = &all[static_cast<size_t>(p) * kFields];
    if (theirs[0] != 1) {
      return absl::AbortedError(
          absl::StrCat("MoeExchange: rank ", p, " could not create its exchange (see its log)"));
    }
    if (!std::equal(mine + 1, mine + kFields, theirs + 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "MoeExchange: rank ", p, " has config (experts ", theirs[1], ", hidden ", theirs[2],
          ", top_k ", theirs[3], ", max_tokens_per_rank ", theirs[4], ", layers ", theirs[5],
          ") but rank ", comm->rank(), " has (", mine[1], ", ", mine[2], ", ", mine[3], ", ",
          mine[4], ", ", mine[5], "): every rank must use the same"));
    }
  }

  const int n = comm->size();
  const MoeExchangeSizes& s = ex->sizes_;
  ex->send_headers_.resize(n);
  ex->recv_headers_.resize(n);
  for (auto* v : {&ex->send_rows_, &ex->recv_rows_, &ex->send_row_offsets_, &ex->recv_row_offsets_,
                  &ex->send_bytes_, &ex->send_displs_, &ex->recv_bytes_, &ex->recv_displs_}) {
    v->assign(n, 0);
  }
  const size_t token_slots =
      static_cast<size_t>(config.max_tokens_per_rank) * s.max_dests_per_token;
  ex->token_dests_.assign(token_slots, -1);
  ex->token_rows_.assign(token_slots, -1);
  ex->token_num_dests_.assign(config.max_tokens_per_rank, 0);
  ex->send_row_token_.assign(s.max_send_rows, -1);
  ex->slot_of_expert_.assign(config.num_experts, -1);
  ex->entry_rows_.resize(s.max_entries);
  ex->entry_weights_.resize(s.max_entries);
  ex->stats_.routing = RoutingStats(config.num_layers, config.num_experts);
  return ex;
}

void MoeExchange::ResetStats() {
  RoutingStats routing = std::move(stats_.routing);
  routing.Clear();
  stats_ = MoeExchangeStats();
  stats_.routing = std::move(routing);
}

void MoeExchange::ParallelFor(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (pool_ == nullptr || pool_->size() <= 1 || n <= grain) {
    fn(0, n);
    return;
  }
  pool_->ParallelFor(n, grain, [&](int64_t b, int64_t e, int) { fn(b, e); });
}

absl::Status MoeExchange::ValidateDispatch(const ExpertPlacement& placement, int layer,
                                           int n_tokens, std::span<const float> x,
                                           std::span<const int32_t> topk_ids,
                                           std::span<const float> topk_weights) const {
  const int K = config_.top_k;
  if (placement.num_ranks() != comm_->size() || placement.num_experts() != config_.num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("MoE dispatch: placement is for ", placement.num_experts(), " experts on ",
                     placement.num_ranks(), " ranks; the exchange has ", config_.num_experts,
                     " experts on ", comm_->size(), " ranks"));
  }
  if (layer < 0 || layer >= config_.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("MoE dispatch: layer ", layer, " outside [0, ", config_.num_layers, ")"));
  }
  if (n_tokens < 0 || n_tokens > config_.max_tokens_per_rank) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MoE dispatch: ", n_tokens,
        " tokens, outside [0, max_tokens_per_rank = ", config_.max_tokens_per_rank, "]"));
  }
  const size_t rows = static_cast<size_t>(n_tokens);
  if (x.size() != rows * config_.hidden || topk_ids.size() != rows * K ||
      topk_weights.size() != rows * K) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MoE dispatch: for ", n_tokens, " tokens expected x of ", rows * config_.hidden,
        " floats and ", rows * K, " top-k ids and weights; got ", x.size(), ", ", topk_ids.size(),
        ", ", topk_weights.size()));
  }
  for (size_t i = 0; i < topk_ids.size(); ++i) {
    if (topk_ids[i] < -1 || topk_ids[i] >= config_.num_experts) {
      return absl::InvalidArgumentError(absl::StrCat("MoE dispatch: token ", i / K, " slot ", i % K,
                                                     " names expert ", topk_ids[i],
                                                     ", outside [0, ", config_.num_experts, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status MoeExchange::Dispatch(const ExpertPlacement& placement, int layer, int n_tokens,
                                   std::span<const float> x, std::span<const int32_t> topk_ids,
                                   std::span<const float> topk_weights) {
  const int n = comm_->size();
  const int me = comm_->rank();
  const int K = config_.top_k;
  const int64_t H = config_.hidden;
  const int64_t D = sizes_.max_dests_per_token;
  const int64_t row_bytes = sizes_.dispatch_row_bytes;
  dispatched_ = false;

  // 1. Route: each token's distinct destination ranks, in top-k order.
  absl::Status local = ValidateDispatch(placement, layer, n_tokens, x, topk_ids, topk_weights);
  std::fill(send_rows_.begin(), send_rows_.end(), 0);
  if (local.ok()) {
    for (int t = 0; t < n_tokens; ++t) {
      int32_t* dests = &token_dests_[t * D];
      int nd = 0;
      for (int k = 0; k < K; ++k) {
        const int e = topk_ids[static_cast<size_t>(t) * K + k];
        if (e < 0) continue;
        stats_.routing.Add(layer, e, 1);
        const int r = placement.RouteToRank(e, int64_t{t} + me);
        if (std::find(dests, dests + nd, r) == dests + nd) {
          dests[nd++] = r;
          ++send_rows_[r];
        }
      }
      token_num_dests_[t] = nd;
    }
  }

  // 2. Counts, placement fingerprint and this rank's verdict, to every peer.
  for (int p = 0; p < n; ++p) {
    send_headers_[p] = {local.ok() ? send_rows_[p] : -1, placement.fingerprint()};
  }
  RETURN_IF_ERROR(comm_->AllToAll(send_headers_.data(), recv_headers_.data(), sizeof(Header)));
  if (!local.ok()) return local;
  for (int p = 0; p < n; ++p) {
    if (recv_headers_[p].rows < 0) {
      return absl::AbortedError(
          absl::StrCat("MoE dispatch: rank ", p, " rejected its input (see its log)"));
    }
  }
  for (int p = 0; p < n; ++p) {
    if (recv_headers_[p].fingerprint != placement.fingerprint()) {
      return absl::FailedPreconditionError(
          absl::StrCat("MoE dispatch: rank ", p, " uses a different expert placement than rank ",
                       me, " (fingerprints ", recv_headers_[p].fingerprint, " vs ",
                       placement.fingerprint(), "): every rank must load the same placement"));
    }
  }
  int64_t total_send = 0, total_recv = 0;
  for (int p = 0; p < n; ++p) {
    recv_rows_[p] = recv_headers_[p].rows;
    send_row_offsets_[p] = total_send;
    recv_row_offsets_[p] = total_recv;
    total_send += send_rows_[p];
    total_recv += recv_rows_[p];
  }
  // Peers run the same validated config, so they cannot send more than max_tokens_per_rank rows.
  TM_CHECK(total_send <= sizes_.max_send_rows && total_recv <= sizes_.max_recv_rows)
      << "MoE dispatch row counts exceed the buffers: send " << total_send << ", recv "
      << total_recv;
  num_send_rows_ = total_send;
  num_recv_rows_ = total_recv;

  // 3. Assign send rows (grouped by destination, tokens ascending), then pack in parallel.
  {
    std::vector<int64_t>& cursor = send_bytes_;  // reused as scratch; rewritten below
    std::copy(send_row_offsets_.begin(), send_row_offsets_.end(), cursor.begin());
    for (int t = 0; t < n_tokens; ++t) {
      for (int j = 0; j < token_num_dests_[t]; ++j) {
        const int64_t row = cursor[token_dests_[t * D + j]]++;
        token_rows_[t * D + j] = static_cast<int32_t>(row);
        send_row_token_[row] = t;
      }
    }
  }
  // Rows for this rank skip the all-to-all: they are packed straight into their place in the
  // receive buffer (MPI would deliver them there in the same order), saving one copy of them.
  std::byte* const send = dispatch_send_.data();
  const int64_t self_shift = recv_row_offsets_[me] - send_row_offsets_[me];
  ParallelFor(n_tokens, kGrainTokens, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      for (int j = 0; j < token_num_dests_[t]; ++j) {
        const int r = token_dests_[t * D + j];
        const int64_t send_row = token_rows_[t * D + j];
        std::byte* row = r == me ? dispatch_recv_.data() + (send_row + self_shift) * row_bytes
                                 : send + send_row * row_bytes;
        std::memcpy(row, x.data() + t * H, H * sizeof(float));
        int32_t ids[kMaxTopK];
        float weights[kMaxTopK];
        int m = 0;
        for (int k = 0; k < K; ++k) {
          const int e = topk_ids[t * K + k];
          if (e >= 0 && placement.RouteToRank(e, t + me) == r) {
            ids[m] = e;
            weights[m] = topk_weights[t * K + k];
            ++m;
          }
        }
        for (; m < K; ++m) {
          ids[m] = -1;
          weights[m] = 0.0f;
        }
        std::memcpy(row + H * sizeof(float), ids, K * sizeof(int32_t));
        std::memcpy(row + H * sizeof(float) + K * sizeof(int32_t), weights, K * sizeof(float));
      }
    }
  });

  // 4. The rows.
  for (int p = 0; p < n; ++p) {
    send_bytes_[p] = send_rows_[p] * row_bytes;
    send_displs_[p] = send_row_offsets_[p] * row_bytes;
    recv_bytes_[p] = recv_rows_[p] * row_bytes;
    recv_displs_[p] = recv_row_offsets_[p] * row_bytes;
  }
  send_bytes_[me] = recv_bytes_[me] = 0;  // already in place
  RETURN_IF_ERROR(comm_->AllToAllV(send, send_bytes_, send_displs_, dispatch_recv_.data(),
                                   recv_bytes_, recv_displs_));

  // 5. Index the received rows by local expert slot.
  std::span<const int> mine = placement.local_experts(me);
  for (int e : local_experts_) slot_of_expert_[e] = -1;
  local_experts_.assign(mine.begin(), mine.end());
  for (size_t s = 0; s < local_experts_.size(); ++s)
    slot_of_expert_[local_experts_[s]] = static_cast<int>(s);
  expert_offsets_.assign(local_experts_.size() + 1, 0);
  const std::byte* recv = dispatch_recv_.data();
  auto row_ids = [&](int64_t row) {
    return reinterpret_cast<const int32_t*>(recv + row * row_bytes + H * sizeof(float));
  };
  auto row_weights = [&](int64_t row) {
    return reinterpret_cast<const float*>(recv + row * row_bytes + H * sizeof(float) +
                                          K * sizeof(int32_t));
  };
  for (int64_t row = 0; row < total_recv; ++row) {
    const int32_t* ids = row_ids(row);
    for (int m = 0; m < K && ids[m] >= 0; ++m) {
      const int slot = ids[m] < config_.num_experts ? slot_of_expert_[ids[m]] : -1;
      // The fingerprints matched, so a sender routed here only experts this rank holds.
      TM_CHECK(slot >= 0) << "received a row for expert " << ids[m] << ", which rank " << me
                          << " does not hold";
      ++expert_offsets_[slot + 1];
    }
  }
  for (size_t s = 0; s < local_experts_.size(); ++s) expert_offsets_[s + 1] += expert_offsets_[s];
  num_entries_ = static_cast<size_t>(expert_offsets_.back());
  {
    std::vector<int64_t> fill(expert_offsets_.begin(), expert_offsets_.end() - 1);
    for (int64_t row = 0; row < total_recv; ++row) {
      const int32_t* ids = row_ids(row);
      const float* weights = row_weights(row);
      for (int m = 0; m < K && ids[m] >= 0; ++m) {
        const int64_t i = fill[slot_of_expert_[ids[m]]]++;
        entry_rows_[i] = static_cast<int32_t>(row);
        entry_weights_[i] = weights[m];
      }
    }
  }
  float* combine = reinterpret_cast<float*>(combine_send_.data());
  ParallelFor(total_recv, kGrainTokens, [&](int64_t r0, int64_t r1) {
    std::memset(combine + r0 * H, 0, (r1 - r0) * H * sizeof(float));
  });

  ++stats_.dispatches;
  stats_.rows_sent += total_send;
  stats_.rows_received += total_recv;
  for (int p = 0; p < n; ++p) {
    if (p == me) {
      stats_.self_bytes += send_rows_[p] * row_bytes;
    } else {
      stats_.dispatch_bytes_sent += send_rows_[p] * row_bytes;
      stats_.dispatch_bytes_received += recv_rows_[p] * row_bytes;
    }
  }
  n_tokens_ = n_tokens;
  dispatched_ = true;
  return absl::OkStatus();
}

std::span<const float> MoeExchange::received_row(int64_t row) const {
  return {reinterpret_cast<const float*>(dispatch_recv_.data() + row * sizes_.dispatch_row_bytes),
          static_cast<size_t>(config_.hidden)};
}

std::span<float> MoeExchange::combine_row(int64_t row) {
  return {reinterpret_cast<float*>(combine_send_.data()) + row * config_.hidden,
          static_cast<size_t>(config_.hidden)};
}

void MoeExchange::AddExpertOutput(int64_t entry, std::span<const float> y) {
  const float w = entry_weights_[entry];
  float* out = combine_row(entry_rows_[entry]).data();
  const float* in = y.data();
  for (int64_t h = 0; h < config_.hidden; ++h) out[h] += w * in[h];
}

absl::Status MoeExchange::Combine(std::span<float> out) {
  if (!dispatched_) {
    return absl::FailedPreconditionError(
        "MoE combine without a successful Dispatch before it (every rank must call Dispatch, "
        "then Combine)");
  }
  dispatched_ = false;
  const int n = comm_->size();
  const int me = comm_->rank();
  const int64_t H = config_.hidden;
  const int64_t D = sizes_.max_dests_per_token;
  const int64_t row_bytes = sizes_.combine_row_bytes;
  // Rows go back the way they came: what arrived from p returns to p, in the same order.
  for (int p = 0; p < n; ++p) {
    send_bytes_[p] = recv_rows_[p] * row_bytes;
    send_displs_[p] = recv_row_offsets_[p] * row_bytes;
    recv_bytes_[p] = send_rows_[p] * row_bytes;
    recv_displs_[p] = send_row_offsets_[p] * row_bytes;
  }
  send_bytes_[me] = recv_bytes_[me] = 0;  // read in place below
  RETURN_IF_ERROR(comm_->AllToAllV(combine_send_.data(), send_bytes_, send_displs_,
                                   combine_recv_.data(), recv_bytes_, recv_displs_));
  ++stats_.combines;
  for (int p = 0; p < n; ++p) {
    if (p == me) {
      stats_.self_bytes += recv_rows_[p] * row_bytes;
    } else {
      stats_.combine_bytes_sent += recv_rows_[p] * row_bytes;
      stats_.combine_bytes_received += send_rows_[p] * row_bytes;
    }
  }
  // Checked after the exchange, which needs only this object's buffers, so a bad `out` on one
  // rank does not leave the others waiting.
  if (out.size() != static_cast<size_t>(n_tokens_) * H) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MoE combine: out has ", out.size(), " floats, expected ", n_tokens_, " tokens x ", H));
  }
  // A token's contribution from rank p sits at its send row in combine_recv_, except this
  // rank's own, which never left combine_send_.
  const float* recv = reinterpret_cast<const float*>(combine_recv_.data());
  const float* self = reinterpret_cast<const float*>(combine_send_.data());
  const int64_t self_shift = recv_row_offsets_[me] - send_row_offsets_[me];
  auto contribution = [&](int64_t t, int j) {
    const int64_t row = token_rows_[t * D + j];
    return token_dests_[t * D + j] == me ? self + (row + self_shift) * H : recv + row * H;
  };
  ParallelFor(n_tokens_, kGrainTokens, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* o = out.data() + t * H;
      const int nd = token_num_dests_[t];
      if (nd == 0) {
        std::memset(o, 0, H * sizeof(float));
        continue;
      }
      std::memcpy(o, contribution(t, 0), H * sizeof(float));
      for (int j = 1; j < nd; ++j) {
        const float* c = contribution(t, j);
        for (int64_t h = 0; h < H; ++h) o[h] += c[h];
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace tritmoe
