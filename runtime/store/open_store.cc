// OpenExpertStore: a path or grpc://host:port to a store.
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/store/expert_store.h"
#include "runtime/store/file_store.h"
#ifdef TRITMOE_HAVE_GRPC
#include "runtime/store/grpc_store.h"
#endif

namespace tritmoe {

absl::StatusOr<std::unique_ptr<ExpertStore>> OpenExpertStore(const std::string& spec) {
  if (absl::StartsWith(spec, "grpc://")) {
#ifdef TRITMOE_HAVE_GRPC
    ASSIGN_OR_RETURN(std::unique_ptr<GrpcStore> s, GrpcStore::Connect(spec));
    return std::unique_ptr<ExpertStore>(std::move(s));
#else
    return absl::UnimplementedError(
        absl::StrCat(spec, ": this build has no gRPC (install libgrpc++-dev and rebuild)"));
#endif
  }
  ASSIGN_OR_RETURN(std::unique_ptr<FileStore> s, FileStore::Open(spec));
  return std::unique_ptr<ExpertStore>(std::move(s));
}

}  // namespace tritmoe
