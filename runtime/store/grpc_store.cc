#include "runtime/store/grpc_store.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "proto/expert_store.grpc.pb.h"
#include "runtime/store/crc32c.h"

namespace tritmoe {

namespace pb = ::tritmoe::store::v1;

namespace {

bool Retryable(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return true;
    default:
      return false;
  }
}

absl::Status FromGrpc(const grpc::Status& s, const std::string& spec) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(spec, ": ", s.error_message()));
}

std::chrono::system_clock::time_point Deadline(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoMilliseconds(d);
}

}  // namespace

absl::Status GrpcStoreOptions::Validate() const {
  if (max_attempts < 1) return absl::InvalidArgumentError("grpc store: max_attempts must be >= 1");
  if (initial_backoff <= absl::ZeroDuration() || max_backoff < initial_backoff ||
      call_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("grpc store: bad backoff or timeout");
  }
  return absl::OkStatus();
}

struct GrpcStore::Impl {
  GrpcStoreOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::ModelStore::Stub> stub;
  std::atomic<int64_t> retries{0};

  // Retry bookkeeping of one operation.
  struct Backoff {
    const GrpcStoreOptions& o;
    int attempts_without_progress = 0;
    absl::Duration next;
    absl::Time start = absl::Now();
    std::minstd_rand rng{std::random_device{}()};
    explicit Backoff(const GrpcStoreOptions& o) : o(o), next(o.initial_backoff) {}
    // False when the attempts are used up; else sleeps (unless the attempt made progress) and
    // returns true.
    bool Wait(bool progressed) {
      if (progressed) {  // the server is there: resume at once
        attempts_without_progress = 0;
        next = o.initial_backoff;
        return true;
      }
      if (++attempts_without_progress >= o.max_attempts) return false;
      // Full jitter in [next/2, next].
      const double f = 0.5 + 0.5 * std::uniform_real_distribution<double>(0, 1)(rng);
      absl::SleepFor(next * f);
      next = std::min(next * 2, o.max_backoff);
      return true;
    }
    std::string Summary() const {
      return absl::StrCat(attempts_without_progress, " attempts without progress over ",
                          absl::FormatDuration(absl::Now() - start));
    }
  };
};

GrpcStore::~GrpcStore() = default;

int64_t GrpcStore::retries() const { return impl_->retries.load(); }

absl::StatusOr<std::unique_ptr<GrpcStore>> GrpcStore::Connect(const std::string& spec,
                                                              const GrpcStoreOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  if (!absl::StartsWith(spec, "grpc://") || spec.size() <= 7) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", spec, "' is not a store address (grpc://host:port)"));
  }
  std::unique_ptr<GrpcStore> s(new GrpcStore());
  s->spec_ = spec;
  s->impl_ = std::make_unique<Impl>();
  Impl& impl = *s->impl_;
  impl.options = options;
  grpc::ChannelArguments args;
  // Reconnect soon after a server restarts: gRPC's default waits up to 120 s between tries.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);  // we resume ourselves, with progress tracking
  impl.channel =
      grpc::CreateCustomChannel(spec.substr(7), grpc::InsecureChannelCredentials(), args);
  impl.stub = pb::ModelStore::NewStub(impl.channel);

  pb::DescribeResponse desc;
  Impl::Backoff backoff(options);
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(options.call_timeout));
    grpc::Status st = impl.stub->Describe(&ctx, pb::DescribeRequest(), &desc);
    if (st.ok()) break;
    if (!Retryable(st.error_code())) return FromGrpc(st, spec);
    if (!backoff.Wait(false)) {
      return absl::UnavailableError(absl::StrCat(spec, ": store unreachable after ",
                                                 backoff.Summary(), ": ", st.error_message()));
    }
    ++impl.retries;
  }
  std::vector<StoreTensor> table;
  for (const pb::TensorEntry& e : desc.tensors()) {
    if (e.ne_size() != 4 || e.n_dims() < 1 || e.n_dims() > 4) {
      return absl::DataLossError(
          absl::StrCat(spec, ": malformed tensor table entry '", e.name(), "'"));
    }
    StoreTensor t;
    t.name = e.name();
    t.type = static_cast<GgmlType>(e.type());
    t.n_dims = static_cast<int>(e.n_dims());
    for (int d = 0; d < 4; ++d) t.ne[d] = e.ne(d);
    t.nbytes = e.nbytes();
    table.push_back(std::move(t));
  }
  s->served_model_ = desc.model();
  s->verified_by_manifest_ = desc.verified_by_manifest();
  s->SetTensors(std::move(table));
  return s;
}

absl::Status GrpcStore::Read(std::span<const ReadRequest> requests) {
  for (const ReadRequest& r : requests) RETURN_IF_ERROR(CheckRequest(r));
  Impl& impl = *impl_;
  std::vector<uint64_t> done(requests.size(), 0);
  Impl::Backoff backoff(impl.options);
  // The chunk (request, offset) that last arrived corrupt: twice in a row is an error.
  std::pair<size_t, uint64_t> last_corrupt = {SIZE_MAX, 0};
  for (;;) {
    pb::ReadRequest req;
    std::vector<size_t> which;  // request index of each range sent
    for (size_t i = 0; i < requests.size(); ++i) {
      if (done[i] == requests[i].size) continue;
      pb::Range* r = req.add_ranges();
      r->set_tensor(std::string(requests[i].tensor));
      r->set_offset(requests[i].offset + done[i]);
      r->set_size(requests[i].size - done[i]);
      which.push_back(i);
    }
    if (which.empty()) return absl::OkStatus();

    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(impl.options.call_timeout));
    std::unique_ptr<grpc::ClientReader<pb::Chunk>> reader = impl.stub->Read(&ctx, req);
    pb::Chunk chunk;
    bool progressed = false;
    absl::Status local;  // a problem found here (bad chunk), which ends the attempt
    while (reader->Read(&chunk)) {
      if (chunk.range() >= which.size()) {
        local = absl::DataLossError(
            absl::StrCat(name(), ": chunk for range ", chunk.range(), " of ", which.size()));
        break;
      }
      const size_t i = which[chunk.range()];
      const ReadRequest& r = requests[i];
      const std::string& data = chunk.data();
      if (chunk.offset() != r.offset + done[i] || data.size() > r.size - done[i] || data.empty()) {
        local = absl::DataLossError(absl::StrCat(
            name(), ": tensor ", std::string(r.tensor), ": chunk at offset ", chunk.offset(),
            " of ", data.size(), " bytes, expected offset ", r.offset + done[i]));
        break;
      }
      const uint32_t crc = Crc32c(data.data(), data.size());
      if (crc != chunk.crc32c()) {
        const std::pair<size_t, uint64_t> here = {i, chunk.offset()};
        local = absl::DataLossError(
            absl::StrCat(name(), ": tensor ", std::string(r.tensor), " bytes [", chunk.offset(),
                         ", ", chunk.offset() + data.size(), "): corrupt chunk (CRC-32C ", crc,
                         ", sent ", chunk.crc32c(), ")", here == last_corrupt ? ", twice" : ""));
        if (here == last_corrupt) {
          ctx.TryCancel();
          reader->Finish();
          return local;
        }
        last_corrupt = here;
        break;
      }
      std::memcpy(r.dst + done[i], data.data(), data.size());
      done[i] += data.size();
      progressed = true;
    }
    if (!local.ok()) ctx.TryCancel();
    grpc::Status st = reader->Finish();
    if (std::all_of(which.begin(), which.end(),
                    [&](size_t i) { return done[i] == requests[i].size; })) {
      return absl::OkStatus();
    }
    if (local.ok()) {
      if (st.ok()) {
        local = absl::DataLossError(absl::StrCat(name(), ": stream ended early"));
      } else if (!Retryable(st.error_code())) {
        return FromGrpc(st, name());
      } else {
        local = FromGrpc(st, name());
      }
    }
    if (!backoff.Wait(progressed)) {
      return absl::UnavailableError(absl::StrCat(name(), ": read failed after ", backoff.Summary(),
                                                 "; last error: ", local.message()));
    }
    ++impl.retries;
  }
}

}  // namespace tritmoe
