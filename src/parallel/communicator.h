// Communicator: the one interface the trainer uses for inter-process communication
// (DESIGN.md §4). Implementations: MPI (CPU tensors, mpi_communicator.h); NCCL later.
//
// Determinism contract: all_reduce_sum and reduce_scatter_sum add the ranks' contributions in
// rank order, ((r0 + r1) + r2) + ..., in the tensor's own dtype, so the result has the same bits
// on every rank and in every run, whatever the library's reduction algorithm would have done.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace bk {

// A posted non-blocking send or receive. The tensor's memory must stay valid until wait()
// returns or test() has returned true. Destroying an unfinished request waits for it.
class Request {
 public:
  virtual ~Request() = default;
  virtual void wait() = 0;
  virtual bool test() = 0;  // true once complete (then wait() returns at once)
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  virtual std::unique_ptr<Request> isend(Tensor t, int peer, int tag) = 0;
  virtual std::unique_ptr<Request> irecv(Tensor t, int peer, int tag) = 0;

  // In place: t becomes the sum over ranks in rank order, identical bits on every rank.
  virtual void all_reduce_sum(Tensor t) = 0;
  // out [chunk...] on rank r = rank-ordered sum of the r-th chunk of every rank's in [size*chunk...].
  virtual void reduce_scatter_sum(Tensor out, Tensor in) = 0;
  // out [size*chunk...] = every rank's in [chunk...], in rank order.
  virtual void all_gather(Tensor out, Tensor in) = 0;
  // Rows of `in` (first dim) go to ranks in order: send_rows[0] rows to rank 0, the next
  // send_rows[1] to rank 1, ...; out receives recv_rows[r] rows from rank r, in rank order.
  virtual void all_to_all_v(Tensor out, const std::vector<int64_t>& recv_rows, Tensor in,
                            const std::vector<int64_t>& send_rows) = 0;
  virtual void broadcast(Tensor t, int root) = 0;
  virtual void barrier() = 0;
  // Lets posted transfers advance without waiting on any of them; safe to call from another
  // thread while this one communicates (the pipeline's progress thread). Default: nothing to do.
  virtual void progress() {}
  // Collective over this communicator: ranks with the same color form a new communicator,
  // ordered by key (ties by rank here).
  virtual std::unique_ptr<Communicator> split(int color, int key) const = 0;
  // The same, with a group name for messages (a watched communicator's timeouts name it).
  virtual std::unique_ptr<Communicator> split_named(int color, int key, const std::string& name) const {
    (void)name;
    return split(color, key);
  }
};

// Argument checks every implementation shares (bk::Error with the collective's name).
void check_reduce_scatter_args(Tensor out, Tensor in, int size);
void check_all_gather_args(Tensor out, Tensor in, int size);
// Also that the row counts add up to the tensors' rows; returns the elements per row.
int64_t check_all_to_all_v_args(Tensor out, const std::vector<int64_t>& recv_rows, Tensor in,
                                const std::vector<int64_t>& send_rows, int size);

}  // namespace bk
