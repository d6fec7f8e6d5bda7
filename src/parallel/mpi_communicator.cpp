#include "parallel/mpi_communicator.h"

#include <atomic>
#include <climits>
#include <cstdio>
#include <cstring>

namespace bk {
namespace {

std::atomic<bool> g_aborting{false};

void check_cpu(const Tensor& t, const char* what) {
  BK_CHECK(t.device == Device::cpu, "{}: the MPI communicator takes CPU tensors", what);
  BK_CHECK(t.data != nullptr || t.numel() == 0, "{}: tensor has no data", what);
}

MPI_Datatype mpi_type(DType d) {
  switch (d) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i32: return MPI_INT32_T;
    case DType::i64: return MPI_INT64_T;
    case DType::bf16: return MPI_UINT16_T;  // moved as raw bits; never summed
  }
  BK_FAIL("unknown dtype");
}

int to_int(int64_t n, const char* what) {
  BK_CHECK(n >= 0 && n <= INT_MAX, "{}: element count {} does not fit an MPI count", what, n);
  return int(n);
}

// acc[i] += x[i] for n elements of dtype d: the one place sums happen, so the order is fixed.
template <typename T> void add_into(void* acc, const void* x, int64_t n) {
  T* a = static_cast<T*>(acc);
  const T* b = static_cast<const T*>(x);
  for (int64_t i = 0; i < n; ++i) a[i] += b[i];
}

void add_into(DType d, void* acc, const void* x, int64_t n) {
  switch (d) {
    case DType::f32: return add_into<float>(acc, x, n);
    case DType::f64: return add_into<double>(acc, x, n);
    case DType::i32: return add_into<int32_t>(acc, x, n);
    case DType::i64: return add_into<int64_t>(acc, x, n);
    case DType::bf16: break;
  }
  BK_FAIL("sum reductions over {} are not supported (reduce in f32)", dtype_name(d));
}

// out = ((parts[0] + parts[1]) + parts[2]) + ..., parts laid out contiguously, n elements each.
void sum_in_rank_order(DType d, void* out, const char* parts, int nparts, int64_t n) {
  size_t bytes = size_t(n) * dtype_size(d);
  if (bytes) std::memcpy(out, parts, bytes);
  for (int r = 1; r < nparts; ++r) add_into(d, out, parts + size_t(r) * bytes, n);
}

class MpiRequest final : public Request {
 public:
  explicit MpiRequest(MPI_Request r) : req_(r) {}
  ~MpiRequest() override {
    // Never leave MPI writing into memory the caller may free: finish the transfer.
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (req_ != MPI_REQUEST_NULL && !finalized) MPI_Wait(&req_, MPI_STATUS_IGNORE);
  }
  void wait() override { BK_MPI_CHECK(MPI_Wait(&req_, MPI_STATUS_IGNORE)); }
  bool test() override {
    int done = 0;
    BK_MPI_CHECK(MPI_Test(&req_, &done, MPI_STATUS_IGNORE));
    return done != 0;
  }

 private:
  MPI_Request req_;
};

}  // namespace

std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) return fmt::format("MPI error {}", code);
  return std::string(buf, size_t(len));
}

// ---- runtime ------------------------------------------------------------------------------

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int initialized = 0;
  BK_MPI_CHECK(MPI_Initialized(&initialized));
  BK_CHECK(!initialized, "MPI is already initialised (one MpiRuntime per process)");
  BK_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided_));
  BK_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
}

MpiRuntime::~MpiRuntime() {
  if (g_aborting.load()) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

std::unique_ptr<Communicator> MpiRuntime::world() const {
  MPI_Comm dup;
  BK_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
  return std::make_unique<MpiCommunicator>(dup);
}

void abort_job(const std::string& message) {
  g_aborting = true;
  int initialized = 0, finalized = 0, rank = -1;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::fprintf(stderr, "rank %d: %s\n", rank, message.c_str());
  std::fflush(stderr);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

// ---- communicator -------------------------------------------------------------------------

MpiCommunicator::MpiCommunicator(MPI_Comm comm) : comm_(comm) {
  BK_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  BK_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  BK_MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL && comm_ != MPI_COMM_WORLD) MPI_Comm_free(&comm_);
}

std::unique_ptr<Request> MpiCommunicator::isend(Tensor t, int peer, int tag) {
  check_cpu(t, "isend");
  BK_CHECK(peer >= 0 && peer < size_, "isend to rank {} of {}", peer, size_);
  MPI_Request r;
  BK_MPI_CHECK(MPI_Isend(t.data, to_int(t.numel(), "isend"), mpi_type(t.dtype), peer, tag, comm_, &r));
  return std::make_unique<MpiRequest>(r);
}

std::unique_ptr<Request> MpiCommunicator::irecv(Tensor t, int peer, int tag) {
  check_cpu(t, "irecv");
  BK_CHECK(peer >= 0 && peer < size_, "irecv from rank {} of {}", peer, size_);
  MPI_Request r;
  BK_MPI_CHECK(MPI_Irecv(t.data, to_int(t.numel(), "irecv"), mpi_type(t.dtype), peer, tag, comm_, &r));
  return std::make_unique<MpiRequest>(r);
}

// Reduce-scatter by MPI_Alltoall (rank r receives every rank's r-th chunk, in rank order) and a
// local rank-ordered sum. Sends/receives (P-1)/P of `in`, like a ring reduce-scatter.
void MpiCommunicator::reduce_scatter_sum(Tensor out, Tensor in) {
  check_cpu(out, "reduce_scatter_sum");
  check_cpu(in, "reduce_scatter_sum");
  check_reduce_scatter_args(out, in, size_);
  int64_t n = out.numel();
  add_into(out.dtype, nullptr, nullptr, 0);  // rejects dtypes that cannot be summed
  std::vector<char> parts(in.nbytes());
  MPI_Datatype t = mpi_type(in.dtype);
  int cnt = to_int(n, "reduce_scatter_sum");
  BK_MPI_CHECK(MPI_Alltoall(in.data, cnt, t, parts.data(), cnt, t, comm_));
  sum_in_rank_order(out.dtype, out.data, parts.data(), size_, n);
}

// Reduce-scatter over near-equal chunks (sizes differ by at most one element), then all-gather
// of the summed chunks: 2 (P-1)/P N elements sent per rank, the cost of a ring all-reduce, plus
// a temporary of N elements. Each chunk is summed by exactly one rank and then copied, so every
// rank holds the same bits.
void MpiCommunicator::all_reduce_sum(Tensor t) {
  check_cpu(t, "all_reduce_sum");
  add_into(t.dtype, nullptr, nullptr, 0);
  if (size_ == 1) return;
  int64_t n = t.numel();
  to_int(n, "all_reduce_sum");
  std::vector<int> counts(size_), displs(size_);
  for (int r = 0, off = 0; r < size_; ++r) {
    counts[r] = int(n / size_ + (r < n % size_ ? 1 : 0));
    displs[r] = off;
    off += counts[r];
  }
  int mine = counts[rank_];
  std::vector<int> rcounts(size_, mine), rdispls(size_);
  for (int r = 0; r < size_; ++r) rdispls[r] = r * mine;
  size_t es = dtype_size(t.dtype);
  std::vector<char> parts(size_t(mine) * size_ * es);
  std::vector<char> chunk(size_t(mine) * es);
  MPI_Datatype dt = mpi_type(t.dtype);
  BK_MPI_CHECK(MPI_Alltoallv(t.data, counts.data(), displs.data(), dt, parts.data(), rcounts.data(),
                             rdispls.data(), dt, comm_));
  sum_in_rank_order(t.dtype, chunk.data(), parts.data(), size_, mine);
  BK_MPI_CHECK(MPI_Allgatherv(chunk.data(), mine, dt, t.data, counts.data(), displs.data(), dt, comm_));
}

void MpiCommunicator::all_gather(Tensor out, Tensor in) {
  check_cpu(out, "all_gather");
  check_cpu(in, "all_gather");
  check_all_gather_args(out, in, size_);
  MPI_Datatype t = mpi_type(in.dtype);
  int cnt = to_int(in.numel(), "all_gather");
  BK_MPI_CHECK(MPI_Allgather(in.data, cnt, t, out.data, cnt, t, comm_));
}

void MpiCommunicator::all_to_all_v(Tensor out, const std::vector<int64_t>& recv_rows, Tensor in,
                                   const std::vector<int64_t>& send_rows) {
  check_cpu(out, "all_to_all_v");
  check_cpu(in, "all_to_all_v");
  const int64_t row = check_all_to_all_v_args(out, recv_rows, in, send_rows, size_);
  std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
  int64_t soff = 0, roff = 0;
  for (int r = 0; r < size_; ++r) {
    sc[r] = to_int(send_rows[r] * row, "all_to_all_v");
    sd[r] = to_int(soff, "all_to_all_v");
    rc[r] = to_int(recv_rows[r] * row, "all_to_all_v");
    rd[r] = to_int(roff, "all_to_all_v");
    soff += send_rows[r] * row;
    roff += recv_rows[r] * row;
  }
  MPI_Datatype t = mpi_type(in.dtype);
  BK_MPI_CHECK(MPI_Alltoallv(in.data, sc.data(), sd.data(), t, out.data, rc.data(), rd.data(), t, comm_));
}

void MpiCommunicator::broadcast(Tensor t, int root) {
  check_cpu(t, "broadcast");
  BK_CHECK(root >= 0 && root < size_, "broadcast from rank {} of {}", root, size_);
  BK_MPI_CHECK(MPI_Bcast(t.data, to_int(t.numel(), "broadcast"), mpi_type(t.dtype), root, comm_));
}

void MpiCommunicator::barrier() { BK_MPI_CHECK(MPI_Barrier(comm_)); }

void MpiCommunicator::progress() {
  static const bool multiple = [] {
    int level = MPI_THREAD_SINGLE;
    MPI_Query_thread(&level);
    return level >= MPI_THREAD_MULTIPLE;
  }();
  if (!multiple) return;
  int flag = 0;
  MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm_, &flag, MPI_STATUS_IGNORE);
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key) const {
  BK_CHECK(color >= 0, "split: color must be non-negative, got {}", color);
  MPI_Comm c;
  BK_MPI_CHECK(MPI_Comm_split(comm_, color, key, &c));
  return std::make_unique<MpiCommunicator>(c);
}

}  // namespace bk
