// The NCCL implementation of Communicator (CUDA tensors), DESIGN.md §4. Built only with CUDA
// and NCCL (BIRKHOFF_WITH_NCCL).
//
// Bootstrap: rank 0 of an existing communicator (the MPI world, or any split of it) creates
// the ncclUniqueId and broadcasts it over that communicator; every rank then joins with
// ncclCommInitRank. split() uses ncclCommSplit (no new bootstrap).
//
// Streams: every operation runs on the communication stream. Before it, the comm stream
// waits for the work queued so far on the compute stream (which produced the inputs); after
// a collective, the compute stream waits for the comm stream. So collectives return once
// queued, and their results are ready for anything queued afterwards on the compute stream
// (kernels, Buffer::download): stream order, not host order. barrier() and synchronize()
// block the host.
//
// Determinism: all_reduce_sum and reduce_scatter_sum keep the interface's contract (sums in
// rank order, identical bits on every rank): an all-to-all of chunks over grouped
// send/recv, a rank-ordered sum on the device, then (all-reduce) an all-gather. This moves
// the same bytes as NCCL's ring algorithms. Options::rank_ordered_sums = false uses
// ncclAllReduce / ncclReduceScatter instead (faster on large rings, deterministic run to run
// for a fixed topology, but not rank-ordered).
//
// Point to point: NCCL has no tags; messages between two ranks match in posting order (the
// tag is ignored). isend/irecv are queued and issued together, in one ncclGroupStart/End,
// when any request is waited on or tested or before the next collective, so the MPI pattern
// "post all sends and receives, then wait" cannot deadlock. Request::wait() is stream-ordered
// like the collectives; Request::test() reports completion without blocking.
//
// Failures: an NCCL error, an asynchronous NCCL error found while the host waits, or a wait
// longer than Options::timeout_s aborts the communicator (ncclCommAbort, which also stops its
// kernels) and throws bk::Error; the trainer then ends the job (abort_job).
#pragma once
#include <memory>
#include <vector>

#include "core/stream.h"
#include "parallel/communicator.h"

namespace bk {

class NcclCommunicator final : public Communicator {
 public:
  struct Options {
    bool rank_ordered_sums = true;
    double timeout_s = 600;  // host waits (barrier, synchronize); env BIRKHOFF_NCCL_TIMEOUT_S
  };

  // Collective over `bootstrap`: one NCCL rank per bootstrap rank, same rank numbers. Uses
  // the CUDA device current in the calling thread (DeviceContext selects it).
  static std::unique_ptr<NcclCommunicator> create(Communicator& bootstrap, Stream compute,
                                                  Stream comm, Options options);
  static std::unique_ptr<NcclCommunicator> create(Communicator& bootstrap, Stream compute,
                                                  Stream comm) {
    return create(bootstrap, compute, comm, Options{});
  }
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  std::unique_ptr<Request> isend(Tensor t, int peer, int tag) override;
  std::unique_ptr<Request> irecv(Tensor t, int peer, int tag) override;
  void all_reduce_sum(Tensor t) override;
  void reduce_scatter_sum(Tensor out, Tensor in) override;
  void all_gather(Tensor out, Tensor in) override;
  void all_to_all_v(Tensor out, const std::vector<int64_t>& recv_rows, Tensor in,
                    const std::vector<int64_t>& send_rows) override;
  void broadcast(Tensor t, int root) override;
  void barrier() override;
  std::unique_ptr<Communicator> split(int color, int key) const override;

  // Blocks the host until everything queued on the comm stream has finished (timeout and
  // asynchronous errors as above).
  void synchronize();
  // Aborts the communicator (idempotent): pending and future operations fail.
  void abort() noexcept;

  struct Impl;  // NCCL types stay out of this header

 private:
  explicit NcclCommunicator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1;
};

}  // namespace bk
