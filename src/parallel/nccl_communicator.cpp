#include "parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/buffer.h"
#include "core/cuda/check.h"
#include "core/cuda/device.h"
#include "kernels/cuda/comm_reduce.h"
#include "kernels/cuda/scratch.h"

namespace bk {

namespace {

cudaStream_t cs(Stream s) { return static_cast<cudaStream_t>(s.handle); }

void check_device_tensor(const Tensor& t, const char* what) {
  BK_CHECK(t.device == Device::cuda, "{}: the NCCL communicator takes CUDA tensors", what);
  BK_CHECK(t.data != nullptr || t.numel() == 0, "{}: tensor has no data", what);
}

void check_summable(DType d, const char* what) {
  BK_CHECK(d == DType::f32 || d == DType::f64 || d == DType::i32 || d == DType::i64 ||
               d == DType::bf16,
           "{}: sums over {} are not supported", what, dtype_name(d));
}

ncclDataType_t nccl_type(DType d) {
  switch (d) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::bf16: return ncclBfloat16;
  }
  BK_FAIL("unknown dtype");
}

char* bytes_at(const Tensor& t, int64_t elements) {
  return static_cast<char*>(t.data) + size_t(elements) * dtype_size(t.dtype);
}

double timeout_from_env(double fallback) {
  const char* env = std::getenv("BIRKHOFF_NCCL_TIMEOUT_S");
  if (!env || !*env) return fallback;
  char* end = nullptr;
  const double v = std::strtod(env, &end);
  BK_CHECK(end && *end == '\0' && v > 0, "BIRKHOFF_NCCL_TIMEOUT_S={} is not a positive number", env);
  return v;
}

}  // namespace

// ---- state shared by the communicator and its requests ----------------------------------------

struct NcclCommunicator::Impl {
  ncclComm_t comm = nullptr;
  Stream compute, comm_stream;
  Options opt;
  int rank = 0, size = 1;
  bool aborted = false;
  Event ready;     // recorded on compute at each isend/irecv: the data they read is written
  Event in, out;   // compute -> comm before an operation, comm -> compute after it

  struct Pending {
    bool send;
    void* data;
    size_t bytes;
    int peer;
  };
  std::vector<Pending> pending;
  std::shared_ptr<Event> pending_done;  // completion of the group the pending ops will form

  [[noreturn]] void fail(const char* call, ncclResult_t r, const char* file, int line) {
    const char* last = comm ? ncclGetLastError(comm) : "";
    std::string msg = fmt::format("NCCL call failed: {} -> {} {}", call, ncclGetErrorString(r),
                                  last ? last : "");
    abort();
    throw Error(msg + " (communicator aborted)", file, line);
  }

  void abort() noexcept {
    if (aborted || !comm) return;
    aborted = true;
    if (ncclCommAbort(comm) != ncclSuccess)
      std::fprintf(stderr, "NcclCommunicator: ncclCommAbort failed\n");
  }

  void check_alive(const char* what) const {
    BK_CHECK(!aborted, "{}: the NCCL communicator was aborted after an earlier error", what);
  }

  // The comm stream waits for the compute stream's work so far (it produced the inputs).
  void begin(const char* what) {
    check_alive(what);
    flush();
    in.record(compute);
    in.wait(comm_stream);
  }
  // The compute stream's later work waits for the operation.
  void end() {
    out.record(comm_stream);
    out.wait(compute);
  }

  void flush();
  void synchronize(const char* what);
};

#define BK_NCCL(impl, expr)                                             \
  do {                                                                  \
    const ncclResult_t bk_nccl_r_ = (expr);                             \
    if (bk_nccl_r_ != ncclSuccess)                                      \
      (impl)->fail(#expr, bk_nccl_r_, __FILE__, __LINE__);              \
  } while (0)

// Issues the queued sends and receives as one group, so pairs that exchange data in both
// directions progress together.
void NcclCommunicator::Impl::flush() {
  if (pending.empty()) return;
  check_alive("isend/irecv");
  ready.wait(comm_stream);
  BK_NCCL(this, ncclGroupStart());
  for (const Pending& p : pending) {
    if (p.send) BK_NCCL(this, ncclSend(p.data, p.bytes, ncclInt8, p.peer, comm, cs(comm_stream)));
    else BK_NCCL(this, ncclRecv(p.data, p.bytes, ncclInt8, p.peer, comm, cs(comm_stream)));
  }
  BK_NCCL(this, ncclGroupEnd());
  pending.clear();
  pending_done->record(comm_stream);
  pending_done.reset();
}

void NcclCommunicator::Impl::synchronize(const char* what) {
  check_alive(what);
  flush();
  Event done;
  done.record(comm_stream);
  const auto start = std::chrono::steady_clock::now();
  while (!done.done()) {  // done() throws on an asynchronous CUDA error
    ncclResult_t async = ncclSuccess;
    BK_NCCL(this, ncclCommGetAsyncError(comm, &async));
    if (async != ncclSuccess && async != ncclInProgress) fail(what, async, __FILE__, __LINE__);
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (waited > opt.timeout_s) {
      abort();
      BK_FAIL("{}: NCCL operation did not finish within {} s on rank {} of {} (a peer has "
              "probably failed or diverged); communicator aborted",
              what, opt.timeout_s, rank, size);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

namespace {

// A send or receive: complete when its group's event has fired.
class NcclRequest final : public Request {
 public:
  NcclRequest(NcclCommunicator::Impl* impl, std::shared_ptr<Event> done)
      : impl_(impl), done_(std::move(done)) {}
  ~NcclRequest() override {
    try {
      if (!waited_) wait();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "NcclRequest: %s\n", e.what());
    }
  }
  // Stream-ordered: the compute stream's later work sees the transfer complete.
  void wait() override {
    if (impl_->pending_done == done_) impl_->flush();
    done_->wait(impl_->compute);
    waited_ = true;
  }
  bool test() override {
    if (impl_->pending_done == done_) impl_->flush();
    return done_->done();
  }

 private:
  NcclCommunicator::Impl* impl_;
  std::shared_ptr<Event> done_;
  bool waited_ = false;
};

}  // namespace

// ---- construction ------------------------------------------------------------------------------

NcclCommunicator::NcclCommunicator(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)), rank_(impl_->rank), size_(impl_->size) {}

std::unique_ptr<NcclCommunicator> NcclCommunicator::create(Communicator& bootstrap, Stream compute,
                                                           Stream comm, Options options) {
  auto impl = std::make_unique<Impl>();
  impl->compute = resolve_stream(compute);
  impl->comm_stream = resolve_stream(comm);
  impl->opt = options;
  impl->opt.timeout_s = timeout_from_env(options.timeout_s);
  impl->rank = bootstrap.rank();
  impl->size = bootstrap.size();

  // Rank 0 makes the id; the bootstrap communicator (CPU tensors) carries it to everyone.
  ncclUniqueId id{};
  static_assert(sizeof(ncclUniqueId) % sizeof(int32_t) == 0);
  Buffer id_buf({int64_t(sizeof(ncclUniqueId) / sizeof(int32_t))}, DType::i32);
  if (impl->rank == 0) {
    BK_NCCL(impl.get(), ncclGetUniqueId(&id));
    std::memcpy(id_buf.tensor().data, &id, sizeof(id));
  }
  bootstrap.broadcast(id_buf, 0);
  std::memcpy(&id, id_buf.tensor().data, sizeof(id));
  BK_NCCL(impl.get(), ncclCommInitRank(&impl->comm, impl->size, id, impl->rank));
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(std::move(impl)));
}

NcclCommunicator::~NcclCommunicator() {
  // An aborted communicator's resources are already gone (ncclCommAbort frees them).
  if (!impl_ || !impl_->comm || impl_->aborted) return;
  try {
    impl_->flush();
    // Finalize waits for every queued operation; then the communicator is freed.
    if (ncclCommFinalize(impl_->comm) != ncclSuccess) {
      impl_->abort();
      return;
    }
    if (ncclCommDestroy(impl_->comm) != ncclSuccess)
      std::fprintf(stderr, "NcclCommunicator: ncclCommDestroy failed\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "NcclCommunicator: %s\n", e.what());
    impl_->abort();
  }
}

void NcclCommunicator::synchronize() { impl_->synchronize("synchronize"); }
void NcclCommunicator::abort() noexcept { impl_->abort(); }

// ---- point to point ----------------------------------------------------------------------------

std::unique_ptr<Request> NcclCommunicator::isend(Tensor t, int peer, int /*tag*/) {
  check_device_tensor(t, "isend");
  BK_CHECK(peer >= 0 && peer < size_ && peer != rank_, "isend to rank {} from rank {} of {}", peer,
           rank_, size_);
  impl_->check_alive("isend");
  if (!impl_->pending_done) impl_->pending_done = std::make_shared<Event>();
  impl_->ready.record(impl_->compute);
  impl_->pending.push_back({true, t.data, t.nbytes(), peer});
  return std::make_unique<NcclRequest>(impl_.get(), impl_->pending_done);
}

std::unique_ptr<Request> NcclCommunicator::irecv(Tensor t, int peer, int /*tag*/) {
  check_device_tensor(t, "irecv");
  BK_CHECK(peer >= 0 && peer < size_ && peer != rank_, "irecv from rank {} at rank {} of {}", peer,
           rank_, size_);
  impl_->check_alive("irecv");
  if (!impl_->pending_done) impl_->pending_done = std::make_shared<Event>();
  impl_->ready.record(impl_->compute);  // the buffer may still be read by queued compute work
  impl_->pending.push_back({false, t.data, t.nbytes(), peer});
  return std::make_unique<NcclRequest>(impl_.get(), impl_->pending_done);
}

// ---- collectives -------------------------------------------------------------------------------

// Rank-ordered reduce-scatter core: parts[r] (n elements) <- chunk r of every rank's `src`
// (the chunk for rank r starts at element offsets[r] of src and has counts[r] elements; this
// rank receives `n` = counts[rank] from each), then out = parts summed in rank order.
static void exchange_and_sum(NcclCommunicator::Impl* im, const Tensor& src,
                             const std::vector<int64_t>& offsets, const std::vector<int64_t>& counts,
                             void* out) {
  const int64_t n = counts[size_t(im->rank)];
  const size_t es = dtype_size(src.dtype);
  cuda::Scratch parts(size_t(n) * size_t(im->size) * es, im->comm_stream);
  char* pp = parts.as<char>();
  BK_CUDA_CHECK(cudaMemcpyAsync(pp + size_t(im->rank) * size_t(n) * es, bytes_at(src, offsets[size_t(im->rank)]),
                                size_t(n) * es, cudaMemcpyDeviceToDevice, cs(im->comm_stream)));
  BK_NCCL(im, ncclGroupStart());
  for (int r = 0; r < im->size; ++r) {
    if (r == im->rank) continue;
    if (counts[size_t(r)] > 0)
      BK_NCCL(im, ncclSend(bytes_at(src, offsets[size_t(r)]), size_t(counts[size_t(r)]) * es,
                           ncclInt8, r, im->comm, cs(im->comm_stream)));
    if (n > 0)
      BK_NCCL(im, ncclRecv(pp + size_t(r) * size_t(n) * es, size_t(n) * es, ncclInt8, r, im->comm,
                           cs(im->comm_stream)));
  }
  BK_NCCL(im, ncclGroupEnd());
  cuda::sum_in_rank_order(out, pp, im->size, n, src.dtype, im->comm_stream);
}

void NcclCommunicator::all_reduce_sum(Tensor t) {
  check_device_tensor(t, "all_reduce_sum");
  check_summable(t.dtype, "all_reduce_sum");
  if (size_ == 1 || t.numel() == 0) return;
  Impl* im = impl_.get();
  im->begin("all_reduce_sum");
  if (!im->opt.rank_ordered_sums) {
    BK_NCCL(im, ncclAllReduce(t.data, t.data, size_t(t.numel()), nccl_type(t.dtype), ncclSum,
                              im->comm, cs(im->comm_stream)));
    return im->end();
  }
  // Near-equal chunks (sizes differ by at most one element), as in the MPI communicator.
  const int64_t n = t.numel();
  std::vector<int64_t> counts(static_cast<size_t>(size_)), offsets(static_cast<size_t>(size_));
  int64_t off = 0;
  for (int r = 0; r < size_; ++r) {
    counts[size_t(r)] = n / size_ + (r < n % size_ ? 1 : 0);
    offsets[size_t(r)] = off;
    off += counts[size_t(r)];
  }
  // This rank's chunk of the sum, written in place (its own chunk was copied out first).
  exchange_and_sum(im, t, offsets, counts, bytes_at(t, offsets[size_t(rank_)]));
  const size_t es = dtype_size(t.dtype);
  const int64_t mine = counts[size_t(rank_)];
  BK_NCCL(im, ncclGroupStart());
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    if (mine > 0)
      BK_NCCL(im, ncclSend(bytes_at(t, offsets[size_t(rank_)]), size_t(mine) * es, ncclInt8, r,
                           im->comm, cs(im->comm_stream)));
    if (counts[size_t(r)] > 0)
      BK_NCCL(im, ncclRecv(bytes_at(t, offsets[size_t(r)]), size_t(counts[size_t(r)]) * es,
                           ncclInt8, r, im->comm, cs(im->comm_stream)));
  }
  BK_NCCL(im, ncclGroupEnd());
  im->end();
}

void NcclCommunicator::reduce_scatter_sum(Tensor out, Tensor in) {
  check_device_tensor(out, "reduce_scatter_sum");
  check_device_tensor(in, "reduce_scatter_sum");
  check_reduce_scatter_args(out, in, size_);
  check_summable(out.dtype, "reduce_scatter_sum");
  if (out.numel() == 0) return;
  Impl* im = impl_.get();
  im->begin("reduce_scatter_sum");
  const int64_t n = out.numel();
  if (!im->opt.rank_ordered_sums) {
    BK_NCCL(im, ncclReduceScatter(in.data, out.data, size_t(n), nccl_type(out.dtype), ncclSum,
                                  im->comm, cs(im->comm_stream)));
    return im->end();
  }
  std::vector<int64_t> counts(static_cast<size_t>(size_), n), offsets(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) offsets[size_t(r)] = int64_t(r) * n;
  exchange_and_sum(im, in, offsets, counts, out.data);
  im->end();
}

void NcclCommunicator::all_gather(Tensor out, Tensor in) {
  check_device_tensor(out, "all_gather");
  check_device_tensor(in, "all_gather");
  check_all_gather_args(out, in, size_);
  if (in.numel() == 0) return;
  Impl* im = impl_.get();
  im->begin("all_gather");
  BK_NCCL(im, ncclAllGather(in.data, out.data, in.nbytes(), ncclInt8, im->comm, cs(im->comm_stream)));
  im->end();
}

void NcclCommunicator::all_to_all_v(Tensor out, const std::vector<int64_t>& recv_rows, Tensor in,
                                    const std::vector<int64_t>& send_rows) {
  check_device_tensor(out, "all_to_all_v");
  check_device_tensor(in, "all_to_all_v");
  const size_t row_bytes =
      size_t(check_all_to_all_v_args(out, recv_rows, in, send_rows, size_)) * dtype_size(in.dtype);
  Impl* im = impl_.get();
  im->begin("all_to_all_v");
  char* src = static_cast<char*>(in.data);
  char* dst = static_cast<char*>(out.data);
  size_t soff = 0, roff = 0;
  std::vector<size_t> sofs(static_cast<size_t>(size_)), rofs(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) {
    sofs[size_t(r)] = soff;
    rofs[size_t(r)] = roff;
    soff += size_t(send_rows[size_t(r)]) * row_bytes;
    roff += size_t(recv_rows[size_t(r)]) * row_bytes;
  }
  const size_t self_bytes = size_t(send_rows[size_t(rank_)]) * row_bytes;
  BK_CHECK(send_rows[size_t(rank_)] == recv_rows[size_t(rank_)],
           "all_to_all_v: rank {} sends itself {} rows but expects {}", rank_,
           send_rows[size_t(rank_)], recv_rows[size_t(rank_)]);
  if (self_bytes > 0)
    BK_CUDA_CHECK(cudaMemcpyAsync(dst + rofs[size_t(rank_)], src + sofs[size_t(rank_)], self_bytes,
                                  cudaMemcpyDeviceToDevice, cs(im->comm_stream)));
  BK_NCCL(im, ncclGroupStart());
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    const size_t sb = size_t(send_rows[size_t(r)]) * row_bytes, rb = size_t(recv_rows[size_t(r)]) * row_bytes;
    if (sb > 0) BK_NCCL(im, ncclSend(src + sofs[size_t(r)], sb, ncclInt8, r, im->comm, cs(im->comm_stream)));
    if (rb > 0) BK_NCCL(im, ncclRecv(dst + rofs[size_t(r)], rb, ncclInt8, r, im->comm, cs(im->comm_stream)));
  }
  BK_NCCL(im, ncclGroupEnd());
  im->end();
}

void NcclCommunicator::broadcast(Tensor t, int root) {
  check_device_tensor(t, "broadcast");
  BK_CHECK(root >= 0 && root < size_, "broadcast from rank {} of {}", root, size_);
  if (t.numel() == 0 || size_ == 1) return;
  Impl* im = impl_.get();
  im->begin("broadcast");
  BK_NCCL(im, ncclBroadcast(t.data, t.data, t.nbytes(), ncclInt8, root, im->comm, cs(im->comm_stream)));
  im->end();
}

void NcclCommunicator::barrier() {
  Impl* im = impl_.get();
  im->begin("barrier");
  cuda::Scratch one(sizeof(int32_t), im->comm_stream);
  BK_CUDA_CHECK(cudaMemsetAsync(one.get(), 0, sizeof(int32_t), cs(im->comm_stream)));
  BK_NCCL(im, ncclAllReduce(one.get(), one.get(), 1, ncclInt32, ncclSum, im->comm, cs(im->comm_stream)));
  im->end();
  im->synchronize("barrier");
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key) const {
  BK_CHECK(color >= 0, "split: color must be non-negative, got {}", color);
  Impl* im = impl_.get();
  im->check_alive("split");
  im->flush();
  auto child = std::make_unique<Impl>();
  child->compute = im->compute;
  child->comm_stream = im->comm_stream;
  child->opt = im->opt;
  BK_NCCL(im, ncclCommSplit(im->comm, color, key, &child->comm, nullptr));
  BK_NCCL(child.get(), ncclCommUserRank(child->comm, &child->rank));
  BK_NCCL(child.get(), ncclCommCount(child->comm, &child->size));
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(std::move(child)));
}

}  // namespace bk
