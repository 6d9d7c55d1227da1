#include "comm/mpi_communicator.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "comm/mpi_check.h"

namespace tritmoe {
namespace {

// Live MpiCommHandles; MPI_Finalize with any alive would make their destructors illegal.
std::atomic<int> g_live_comms{0};
std::atomic<bool> g_session_created{false};

// MPI rejects null buffers in some builds even for zero counts; point at this instead.
char g_empty_buffer[1];

constexpr int64_t kMaxMpiCount = INT_MAX;
// Chunk size (elements or bytes) for calls that can be split: well under INT_MAX.
constexpr int64_t kChunk = int64_t{1} << 30;

// A contiguous datatype of `unit` bytes, freed on destruction.
class MpiDatatype {
 public:
  MpiDatatype() = default;
  ~MpiDatatype() {
    if (type_ != MPI_DATATYPE_NULL) TM_CHECK_MPI(MPI_Type_free(&type_));
  }
  MpiDatatype(const MpiDatatype&) = delete;
  MpiDatatype& operator=(const MpiDatatype&) = delete;

  // MPI_BYTE when unit == 1.
  absl::Status Init(int64_t unit) {
    if (unit == 1) return absl::OkStatus();
    TM_RETURN_IF_MPI_ERROR(MPI_Type_contiguous(static_cast<int>(unit), MPI_BYTE, &type_));
    TM_RETURN_IF_MPI_ERROR(MPI_Type_commit(&type_));
    return absl::OkStatus();
  }
  MPI_Datatype get() const { return type_ == MPI_DATATYPE_NULL ? MPI_BYTE : type_; }

 private:
  MPI_Datatype type_ = MPI_DATATYPE_NULL;
};

// The byte unit in which `counts` and `displs` are expressed to MPI: 1 when every value fits an
// int, else the gcd of all values (each side of an exchange may pick its own unit: MPI matches
// type signatures, and k-byte blocks of MPI_BYTE match k * n bytes). Converts into `out_*`.
absl::Status ToMpiCounts(const char* what, std::span<const int64_t> counts,
                         std::span<const int64_t> displs, int64_t* unit, std::vector<int>* out_c,
                         std::vector<int>* out_d) {
  int64_t max_value = 0;
  int64_t g = 0;
  for (size_t p = 0; p < counts.size(); ++p) {
    max_value = std::max({max_value, counts[p], displs[p]});
    g = std::gcd(g, std::gcd(counts[p], displs[p]));
  }
  *unit = 1;
  if (max_value > kMaxMpiCount) {
    *unit = g;
    if (g > kMaxMpiCount || max_value / g > kMaxMpiCount) {
      return absl::OutOfRangeError(absl::StrCat(
          "AllToAllV: ", std::string(what), " sizes up to ", max_value,
          " bytes have no common unit that MPI's int counts can express (gcd ", g, ")"));
    }
  }
  out_c->resize(counts.size());
  out_d->resize(displs.size());
  for (size_t p = 0; p < counts.size(); ++p) {
    (*out_c)[p] = static_cast<int>(counts[p] / *unit);
    (*out_d)[p] = static_cast<int>(displs[p] / *unit);
  }
  return absl::OkStatus();
}

MPI_Datatype ToMpi(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return MPI_FLOAT;
    case DataType::kFloat64:
      return MPI_DOUBLE;
    case DataType::kInt64:
      return MPI_INT64_T;
  }
  return MPI_DATATYPE_NULL;
}

const void* NonNull(const void* p) { return p != nullptr ? p : g_empty_buffer; }
void* NonNull(void* p) { return p != nullptr ? p : g_empty_buffer; }

}  // namespace

// ---- MpiCommHandle ----

MpiCommHandle& MpiCommHandle::operator=(MpiCommHandle&& other) noexcept {
  if (this != &other) {
    Reset();
    comm_ = other.release();
  }
  return *this;
}

void MpiCommHandle::Reset() {
  if (comm_ == MPI_COMM_NULL) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  TM_CHECK(!finalized) << "an MPI communicator outlived MPI_Finalize: destroy every "
                          "MpiCommunicator before the MpiSession";
  TM_CHECK_MPI(MPI_Comm_free(&comm_));
  comm_ = MPI_COMM_NULL;
  g_live_comms.fetch_sub(1);
}

// ---- MpiCommunicator ----

absl::StatusOr<std::unique_ptr<MpiCommunicator>> MpiCommunicator::Create(MPI_Comm parent) {
  MPI_Comm dup = MPI_COMM_NULL;
  TM_RETURN_IF_MPI_ERROR(MPI_Comm_dup(parent, &dup));
  g_live_comms.fetch_add(1);
  MpiCommHandle comm(dup);
  TM_RETURN_IF_MPI_ERROR(MPI_Comm_set_errhandler(comm.get(), MPI_ERRORS_RETURN));
  int rank = 0, size = 0;
  TM_RETURN_IF_MPI_ERROR(MPI_Comm_rank(comm.get(), &rank));
  TM_RETURN_IF_MPI_ERROR(MPI_Comm_size(comm.get(), &size));

  MPI_Comm node_comm = MPI_COMM_NULL;
  TM_RETURN_IF_MPI_ERROR(
      MPI_Comm_split_type(comm.get(), MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node_comm));
  g_live_comms.fetch_add(1);
  MpiCommHandle node(node_comm);
  TM_RETURN_IF_MPI_ERROR(MPI_Comm_set_errhandler(node.get(), MPI_ERRORS_RETURN));
  int local_rank = 0, local_size = 0;
  TM_RETURN_IF_MPI_ERROR(MPI_Comm_rank(node.get(), &local_rank));
  TM_RETURN_IF_MPI_ERROR(MPI_Comm_size(node.get(), &local_size));
  return std::unique_ptr<MpiCommunicator>(
      new MpiCommunicator(std::move(comm), std::move(node), rank, size, local_rank, local_size));
}

MpiCommunicator::MpiCommunicator(MpiCommHandle comm, MpiCommHandle node, int rank, int size,
                                 int local_rank, int local_size)
    : comm_(std::move(comm)),
      node_(std::move(node)),
      rank_(rank),
      size_(size),
      local_rank_(local_rank),
      local_size_(local_size) {}

absl::Status MpiCommunicator::DoAllToAllV(const void* send, std::span<const int64_t> send_counts,
                                          std::span<const int64_t> send_displs, void* recv,
                                          std::span<const int64_t> recv_counts,
                                          std::span<const int64_t> recv_displs) {
  int64_t send_unit = 1, recv_unit = 1;
  absl::Status s =
      ToMpiCounts("send", send_counts, send_displs, &send_unit, &send_counts_, &send_displs_);
  if (!s.ok()) return s;
  s = ToMpiCounts("recv", recv_counts, recv_displs, &recv_unit, &recv_counts_, &recv_displs_);
  if (!s.ok()) return s;
  MpiDatatype send_type, recv_type;
  s = send_type.Init(send_unit);
  if (!s.ok()) return s;
  s = recv_type.Init(recv_unit);
  if (!s.ok()) return s;
  TM_RETURN_IF_MPI_ERROR(MPI_Alltoallv(NonNull(send), send_counts_.data(), send_displs_.data(),
                                       send_type.get(), NonNull(recv), recv_counts_.data(),
                                       recv_displs_.data(), recv_type.get(), comm_.get()));
  return absl::OkStatus();
}

absl::Status MpiCommunicator::DoAllReduce(void* data, int64_t count, DataType type, ReduceOp op) {
  const MPI_Op mpi_op = op == ReduceOp::kSum ? MPI_SUM : MPI_MAX;
  char* bytes = static_cast<char*>(NonNull(data));
  // Elementwise, so splitting into chunks gives the same result; keeps MPI's int count happy.
  int64_t done = 0;
  do {
    const int64_t n = std::min(count - done, kChunk);
    TM_RETURN_IF_MPI_ERROR(MPI_Allreduce(MPI_IN_PLACE, bytes + done * DataTypeSize(type),
                                         static_cast<int>(n), ToMpi(type), mpi_op, comm_.get()));
    done += n;
  } while (done < count);
  return absl::OkStatus();
}

absl::Status MpiCommunicator::DoAllGather(const void* send, int64_t bytes_per_rank, void* recv) {
  if (bytes_per_rank > kMaxMpiCount) {
    return absl::OutOfRangeError(
        absl::StrCat("AllGather: ", bytes_per_rank, " bytes per rank exceeds MPI's int count"));
  }
  TM_RETURN_IF_MPI_ERROR(MPI_Allgather(NonNull(send), static_cast<int>(bytes_per_rank), MPI_BYTE,
                                       NonNull(recv), static_cast<int>(bytes_per_rank), MPI_BYTE,
                                       comm_.get()));
  return absl::OkStatus();
}

absl::Status MpiCommunicator::DoBroadcast(void* data, int64_t bytes, int root) {
  char* p = static_cast<char*>(NonNull(data));
  int64_t done = 0;
  do {
    const int64_t n = std::min(bytes - done, kChunk);
    TM_RETURN_IF_MPI_ERROR(MPI_Bcast(p + done, static_cast<int>(n), MPI_BYTE, root, comm_.get()));
    done += n;
  } while (done < bytes);
  return absl::OkStatus();
}

absl::Status MpiCommunicator::DoBarrier() {
  TM_RETURN_IF_MPI_ERROR(MPI_Barrier(comm_.get()));
  return absl::OkStatus();
}

// ---- MpiSession ----

absl::StatusOr<std::unique_ptr<MpiSession>> MpiSession::Init() {
  if (g_session_created.exchange(true)) {
    return absl::FailedPreconditionError(
        "MpiSession::Init called twice: MPI can be initialized only once per process");
  }
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) {
    return absl::FailedPreconditionError("MPI was initialized outside MpiSession");
  }
  int provided = 0;
  // The default handler on MPI_COMM_WORLD is fatal until we replace it, so a failure here aborts.
  TM_CHECK_MPI(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
  int rank = 0;
  TM_CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  SetProcessIdentity(rank);
  std::unique_ptr<MpiSession> session(new MpiSession());
  // From here on the destructor finalizes MPI, on every return path.
  if (provided < MPI_THREAD_FUNNELED) {
    return absl::FailedPreconditionError(absl::StrCat("the MPI library provides thread level ",
                                                      provided, ", below MPI_THREAD_FUNNELED"));
  }
  TM_RETURN_IF_MPI_ERROR(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  auto world = MpiCommunicator::Create(MPI_COMM_WORLD);
  if (!world.ok()) return world.status();
  session->world_ = *std::move(world);
  return session;
}

MpiSession::~MpiSession() {
  world_.reset();
  TM_CHECK(g_live_comms.load() == 0)
      << g_live_comms.load() << " MPI communicator(s) still alive at MPI_Finalize";
  TM_CHECK_MPI(MPI_Finalize());
}

void MpiSession::Abort(const absl::Status& status, int exit_code) {
  const ProcessIdentity& id = GetProcessIdentity();
  std::fprintf(stderr, "[rank %d on %s] fatal: %s; aborting the job\n", id.rank,
               id.host.empty() ? "?" : id.host.c_str(), status.ToString().c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::abort();  // MPI_Abort does not return; this is for the compiler and broken MPIs.
}

bool StartedByMpiLauncher() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK",
                          "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  return false;
}

}  // namespace tritmoe
