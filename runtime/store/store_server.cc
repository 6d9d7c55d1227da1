#include "runtime/store/store_server.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "proto/expert_store.grpc.pb.h"
#include "runtime/store/crc32c.h"

namespace tritmoe {

namespace pb = ::tritmoe::store::v1;

namespace {

constexpr uint64_t kMaxChunkBytes = uint64_t{3} << 20;
constexpr int kMaxRanges = 1 << 16;

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace

absl::Status StoreServerOptions::Validate() const {
  if (port < 0 || port > 65535) return absl::InvalidArgumentError("store: port must be 0..65535");
  if (chunk_bytes == 0 || chunk_bytes > kMaxChunkBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("store: chunk size must be 1..", kMaxChunkBytes, " bytes"));
  }
  if (fault_corrupt_every < 0) return absl::InvalidArgumentError("fault_corrupt_every < 0");
  return absl::OkStatus();
}

class StoreServer::Service final : public pb::ModelStore::Service {
 public:
  Service(ExpertStore* backend, const StoreServerOptions& options)
      : backend_(backend), options_(options) {}

  grpc::Status Describe(grpc::ServerContext*, const pb::DescribeRequest*,
                        pb::DescribeResponse* out) override {
    out->set_model(backend_->name());
    out->set_chunk_bytes(options_.chunk_bytes);
    out->set_verified_by_manifest(options_.verified_by_manifest);
    for (const StoreTensor& t : backend_->tensors()) {
      pb::TensorEntry* e = out->add_tensors();
      e->set_name(t.name);
      e->set_type(static_cast<uint32_t>(t.type));
      e->set_n_dims(static_cast<uint32_t>(t.n_dims));
      for (int64_t n : t.ne) e->add_ne(n);
      e->set_nbytes(t.nbytes);
    }
    return grpc::Status::OK;
  }

  grpc::Status Read(grpc::ServerContext* ctx, const pb::ReadRequest* req,
                    grpc::ServerWriter<pb::Chunk>* writer) override {
    if (req->ranges_size() > kMaxRanges) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("ranges: ", req->ranges_size(), " > ", kMaxRanges));
    }
    // Check every range before streaming any byte, so a bad request fails whole.
    for (const pb::Range& r : req->ranges()) {
      const StoreTensor* t = backend_->FindTensor(r.tensor());
      if (t == nullptr) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            absl::StrCat(backend_->name(), ": no tensor '", r.tensor(), "'"));
      }
      if (r.offset() > t->nbytes || r.size() > t->nbytes - r.offset()) {
        return grpc::Status(
            grpc::StatusCode::OUT_OF_RANGE,
            absl::StrCat(backend_->name(), ": tensor ", r.tensor(), " bytes [", r.offset(), ", ",
                         r.offset() + r.size(), ") past its end (", t->nbytes, " bytes)"));
      }
    }
    pb::Chunk chunk;
    int64_t sent = 0;
    for (int i = 0; i < req->ranges_size(); ++i) {
      const pb::Range& r = req->ranges(i);
      for (uint64_t done = 0; done < r.size();) {
        if (ctx->IsCancelled()) return grpc::Status::CANCELLED;
        if (options_.fault_abort_after_chunks >= 0 && sent >= options_.fault_abort_after_chunks) {
          return grpc::Status(grpc::StatusCode::UNAVAILABLE, "injected fault: stream aborted");
        }
        const uint64_t n = std::min(options_.chunk_bytes, r.size() - done);
        std::string* data = chunk.mutable_data();
        data->resize(n);
        uint8_t* dst = reinterpret_cast<uint8_t*>(data->data());
        absl::Status st = backend_->Read({{r.tensor(), r.offset() + done, n, dst}});
        if (!st.ok()) return ToGrpc(st);
        chunk.set_range(static_cast<uint32_t>(i));
        chunk.set_offset(r.offset() + done);
        chunk.set_crc32c(Crc32c(dst, n));
        if (Corrupt(r.tensor(), r.offset() + done)) dst[n / 2] ^= 0x20;
        if (!writer->Write(chunk)) return grpc::Status::CANCELLED;  // the client went away
        done += n;
        ++sent;
      }
    }
    return grpc::Status::OK;
  }

 private:
  // Whether to corrupt the chunk at (tensor, offset) on its way out (fault injection).
  bool Corrupt(const std::string& tensor, uint64_t offset) {
    if (options_.fault_corrupt_always) return true;
    if (options_.fault_corrupt_every <= 0) return false;
    std::lock_guard<std::mutex> lock(fault_mu_);
    if (++fault_count_ % options_.fault_corrupt_every != 0) return false;
    return fault_corrupted_.insert({tensor, offset}).second;
  }

  ExpertStore* backend_;
  StoreServerOptions options_;
  std::mutex fault_mu_;
  int64_t fault_count_ = 0;
  std::set<std::pair<std::string, uint64_t>> fault_corrupted_;
};

StoreServer::StoreServer() = default;

absl::StatusOr<std::unique_ptr<StoreServer>> StoreServer::Start(ExpertStore* backend,
                                                                const StoreServerOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  if (backend == nullptr) return absl::InvalidArgumentError("store server needs a backend");
  std::unique_ptr<StoreServer> s(new StoreServer());
  s->service_ = std::make_unique<Service>(backend, options);
  const std::string address = absl::StrCat(options.host, ":", options.port);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(s->service_.get());
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("store: cannot listen on ", address, " (port in use or not permitted?)"));
  }
  s->port_ = port;
  return s;
}

void StoreServer::Shutdown() {
  if (shut_down_.exchange(true)) return;
  // A short grace period, then in-flight streams are cancelled.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  server_->Wait();
}

StoreServer::~StoreServer() {
  if (server_ != nullptr) Shutdown();
}

}  // namespace tritmoe
