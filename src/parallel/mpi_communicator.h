// The MPI implementation of Communicator (CPU tensors), the MPI runtime guard, and abort_job.
// Every MPI call is checked: communicators use MPI_ERRORS_RETURN and BK_MPI_CHECK turns a
// failing return code into bk::Error carrying MPI's error string and file:line.
#pragma once
#include <mpi.h>

#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace bk {

std::string mpi_error_string(int code);

}  // namespace bk

#define BK_MPI_CHECK(call)                                                                 \
  do {                                                                                     \
    int bk_mpi_rc_ = (call);                                                               \
    if (bk_mpi_rc_ != MPI_SUCCESS)                                                         \
      throw ::bk::Error(fmt::format("{} failed: {}", #call, ::bk::mpi_error_string(bk_mpi_rc_)), \
                        __FILE__, __LINE__);                                               \
  } while (0)

namespace bk {

// MPI_Init_thread (MPI_THREAD_MULTIPLE requested) in the constructor, MPI_Finalize in the
// destructor unless abort_job ran. One per process, created first in main.
class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int thread_level_provided() const { return provided_; }
  bool thread_multiple() const { return provided_ >= MPI_THREAD_MULTIPLE; }
  // A communicator over all processes (a duplicate of MPI_COMM_WORLD).
  std::unique_ptr<Communicator> world() const;

 private:
  int provided_ = MPI_THREAD_SINGLE;
};

// Prints "rank R: message" to stderr and calls MPI_Abort(MPI_COMM_WORLD, 1), so that one failing
// rank ends the whole job instead of leaving the others blocked in a collective.
[[noreturn]] void abort_job(const std::string& message);

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of comm (freed on destruction); sets MPI_ERRORS_RETURN on it.
  explicit MpiCommunicator(MPI_Comm comm);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MPI_Comm comm() const { return comm_; }

  std::unique_ptr<Request> isend(Tensor t, int peer, int tag) override;
  std::unique_ptr<Request> irecv(Tensor t, int peer, int tag) override;
  void all_reduce_sum(Tensor t) override;
  void reduce_scatter_sum(Tensor out, Tensor in) override;
  void all_gather(Tensor out, Tensor in) override;
  void all_to_all_v(Tensor out, const std::vector<int64_t>& recv_rows, Tensor in,
                    const std::vector<int64_t>& send_rows) override;
  void broadcast(Tensor t, int root) override;
  void barrier() override;
  // MPI_Iprobe drives the progress engine without touching any request (only when MPI runs with
  // MPI_THREAD_MULTIPLE, since it is meant for another thread).
  void progress() override;
  std::unique_ptr<Communicator> split(int color, int key) const override;

 private:
  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace bk
