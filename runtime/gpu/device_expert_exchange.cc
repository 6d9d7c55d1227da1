#include "runtime/gpu/device_expert_exchange.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "experts/cuda/quant_gemv.h"
#include "runtime/gpu/exchange_kernels.h"
#include "runtime/gpu/moe_route.h"

namespace tritmoe::gpu {
namespace {

absl::Status Cuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("CUDA error in the device expert exchange (", what,
                                          "): ", cudaGetErrorName(err), " (",
                                          cudaGetErrorString(err), ")"));
}

DeviceBuffer Upload(const std::vector<int32_t>& v) {
  DeviceBuffer b(std::max<size_t>(1, v.size()) * sizeof(int32_t));
  if (!v.empty()) b.CopyFromHost(v.data(), v.size() * sizeof(int32_t));
  return b;
}

}  // namespace

absl::Status DeviceExchangeConfig::Validate(int n_ranks) const {
  if (n_expert <= 0 || n_expert + 1 > kMaxRoutedExperts) {
    return absl::InvalidArgumentError(
        absl::StrCat("device exchange: ", n_expert, " experts (1 to ", kMaxRoutedExperts - 1, ")"));
  }
  if (k <= 0 || k > n_expert || n_embd <= 0 || max_ff <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("device exchange: bad shape (k ", k, ", n_embd ",
                                                   n_embd, ", ff ", max_ff, ")"));
  }
  for (size_t l = 0; l < layers.size(); ++l) {
    const DeviceExchangeLayer& x = layers[l];
    if (static_cast<int>(x.replica_offsets.size()) != n_expert + 1 || x.replica_offsets[0] != 0 ||
        x.replica_offsets.back() != static_cast<int32_t>(x.replica_ranks.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("device exchange: MoE layer ", l, ": bad replica table"));
    }
    for (int e = 0; e < n_expert; ++e) {
      if (x.replica_offsets[e + 1] <= x.replica_offsets[e]) {
        return absl::InvalidArgumentError(
            absl::StrCat("device exchange: MoE layer ", l, ": expert ", e, " has no rank"));
      }
    }
    for (int32_t r : x.replica_ranks) {
      if (r < 0 || r >= n_ranks) {
        return absl::InvalidArgumentError(
            absl::StrCat("device exchange: MoE layer ", l, ": rank ", r, " of ", n_ranks));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DeviceExpertExchange>> DeviceExpertExchange::Create(
    const DeviceExchangeConfig& config, Communicator* host, DeviceCollectives* device) {
  if (host == nullptr || device == nullptr) {
    return absl::InvalidArgumentError("device exchange: no communicator");
  }
  if (host->size() != device->size() || host->rank() != device->rank()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device exchange: the host communicator (rank ", host->rank(), " of ", host->size(),
        ") and the device one (rank ", device->rank(), " of ", device->size(), ") differ"));
  }
  RETURN_IF_ERROR(config.Validate(device->size()));
  std::unique_ptr<DeviceExpertExchange> x(new DeviceExpertExchange());
  x->config_ = config;
  x->host_ = host;
  x->device_ = device;
  for (const DeviceExchangeLayer& l : config.layers) {
    x->replica_offsets_.push_back(Upload(l.replica_offsets));
    x->replica_ranks_.push_back(Upload(l.replica_ranks));
  }
  x->prefix_.assign(device->size() + 1, 0);
  return x;
}

absl::StatusOr<bool> DeviceExpertExchange::BeginStep(int tokens) {
  if (tokens < 0) return absl::InvalidArgumentError("device exchange: negative token count");
  tokens_.assign(size(), 0);
  RETURN_IF_ERROR(host_->AllGather(&tokens, sizeof(int32_t), tokens_.data()));
  total_ = 0;
  for (int r = 0; r < size(); ++r) {
    prefix_[r] = total_;
    total_ += tokens_[r];
  }
  prefix_[size()] = total_;
  return Reserve();
}

bool DeviceExpertExchange::Reserve() {
  const int64_t mine = tokens_[rank()];
  if (total_ <= cap_total_ && mine <= cap_mine_) return false;
  // Grown with headroom so that a few larger steps do not reallocate (and re-capture) each time.
  cap_total_ = std::max(total_, 2 * std::max<int64_t>(cap_total_, 0));
  cap_mine_ = std::max(mine, 2 * std::max<int64_t>(cap_mine_, 0));
  const int64_t T = std::max<int64_t>(cap_total_, 1), P = T * config_.k;
  const int64_t D = config_.n_embd, ff = config_.max_ff;
  rows_ = DeviceBuffer(sizeof(float) * T * D);  // the widest row: floats
  experts_ = DeviceBuffer(sizeof(int32_t) * P);
  weights_ = DeviceBuffer(sizeof(float) * P);
  masked_ = DeviceBuffer(sizeof(int32_t) * P);
  offsets_ = DeviceBuffer(sizeof(int32_t) * (config_.n_expert + 2));
  pair_token_ = DeviceBuffer(sizeof(int32_t) * P);
  slot_pair_ = DeviceBuffer(sizeof(int32_t) * P);
  gu_ = DeviceBuffer(sizeof(float) * P * 2 * ff);
  act_ = DeviceBuffer(sizeof(float) * P * ff);
  act_ws_bytes_ = std::max(GpuActivationBytes(P, D), GpuActivationBytes(P, ff));
  act_ws_ = DeviceBuffer(act_ws_bytes_);
  y_ = DeviceBuffer(sizeof(float) * P * D);
  partial_ = DeviceBuffer(sizeof(float) * T * D);
  parts_ = DeviceBuffer(sizeof(float) * size() * std::max<int64_t>(cap_mine_, 1) * D);
  return true;
}

absl::StatusOr<ExchangeReceived> DeviceExpertExchange::Dispatch(int moe_layer, const void* rows,
                                                                int64_t row_bytes,
                                                                const int32_t* experts,
                                                                const float* weights,
                                                                cudaStream_t stream) {
  if (moe_layer < 0 || moe_layer >= n_moe_layers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("device exchange: MoE layer ", moe_layer, " of ", n_moe_layers()));
  }
  if (row_bytes <= 0 || row_bytes > int64_t{4} * config_.n_embd) {
    return absl::InvalidArgumentError(absl::StrCat("device exchange: row of ", row_bytes,
                                                   " bytes (at most ", 4 * config_.n_embd, ")"));
  }
  if (cap_total_ < total_) return absl::FailedPreconditionError("device exchange: no BeginStep");
  const int k = config_.k, E = config_.n_expert;
  const GatherPart parts[3] = {
      {rows, rows_.get(), row_bytes},
      {experts, experts_.get(), int64_t{k} * int64_t{sizeof(int32_t)}},
      {weights, weights_.get(), int64_t{k} * int64_t{sizeof(float)}},
  };
  RETURN_IF_ERROR(device_->EnqueueGatherV(parts, tokens_, stream));
  MaskChoicesParams mp;
  mp.experts = experts_.as<int32_t>();
  mp.replica_offsets = replica_offsets_[moe_layer].as<int32_t>();
  mp.replica_ranks = replica_ranks_[moe_layer].as<int32_t>();
  mp.n_tokens = static_cast<int>(total_);
  mp.k = k;
  mp.n_expert = E;
  mp.rank = rank();
  mp.masked = masked_.as<int32_t>();
  RETURN_IF_ERROR(Cuda(LaunchMaskChoices(mp, stream), "mask choices"));
  // The choices not served here fall into bucket E, past the experts the GEMVs visit.
  GroupParams gp;
  gp.experts = masked_.as<int32_t>();
  gp.n_tokens = static_cast<int>(total_);
  gp.k = k;
  gp.n_expert = E + 1;
  gp.offsets = offsets_.as<int32_t>();
  gp.pair_token = pair_token_.as<int32_t>();
  gp.slot_pair = slot_pair_.as<int32_t>();
  RETURN_IF_ERROR(Cuda(LaunchGroupByExpert(gp, stream), "group by expert"));
  ExchangeReceived r;
  r.n_tokens = total_;
  r.rows = rows_.get();
  r.offsets = offsets_.as<int32_t>();
  r.pair_token = pair_token_.as<int32_t>();
  r.gu = gu_.as<float>();
  r.act = act_.as<float>();
  r.act_ws = act_ws_.get();
  r.act_ws_bytes = act_ws_bytes_;
  r.y = y_.as<float>();
  return r;
}

absl::Status DeviceExpertExchange::Combine(float* x, const float* shared, cudaStream_t stream) {
  const int64_t D = config_.n_embd, mine = tokens_[rank()];
  PartialCombineParams pc;
  pc.masked = masked_.as<int32_t>();
  pc.slot_pair = slot_pair_.as<int32_t>();
  pc.w = weights_.as<float>();
  pc.y = y_.as<float>();
  pc.partial = partial_.as<float>();
  pc.n_tokens = static_cast<int>(total_);
  pc.k = config_.k;
  pc.n = static_cast<int>(D);
  pc.n_expert = config_.n_expert;
  RETURN_IF_ERROR(Cuda(LaunchPartialCombine(pc, stream), "partial combine"));
  // Origin r's tokens' partials go back to r; this rank's come in from every rank, in rank order.
  const int n = size();
  std::vector<int64_t> sb(n), sd(n), rb(n), rd(n);
  const int64_t row = sizeof(float) * D;
  for (int p = 0; p < n; ++p) {
    sb[p] = tokens_[p] * row;
    sd[p] = prefix_[p] * row;
    rb[p] = mine * row;
    rd[p] = p * mine * row;
  }
  RETURN_IF_ERROR(device_->EnqueueAllToAllV(partial_.get(), sb, sd, parts_.get(), rb, rd, stream));
  RankSumParams rs;
  rs.x = x;
  rs.parts = parts_.as<float>();
  rs.shared = shared;
  rs.n_parts = n;
  rs.n_tokens = static_cast<int>(mine);
  rs.n = static_cast<int>(D);
  return Cuda(LaunchRankSum(rs, stream), "rank sum");
}

}  // namespace tritmoe::gpu
