// SelfCommunicator: the Communicator of a job with one process. Collectives are copies or
// nothing, so the trainer runs the same code with and without mpirun (and without MPI_Init).
#pragma once
#include "parallel/communicator.h"

namespace bk {

class SelfCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::unique_ptr<Request> isend(Tensor t, int peer, int tag) override;
  std::unique_ptr<Request> irecv(Tensor t, int peer, int tag) override;
  void all_reduce_sum(Tensor) override {}
  void reduce_scatter_sum(Tensor out, Tensor in) override;
  void all_gather(Tensor out, Tensor in) override;
  void all_to_all_v(Tensor out, const std::vector<int64_t>& recv_rows, Tensor in,
                    const std::vector<int64_t>& send_rows) override;
  void broadcast(Tensor, int root) override;
  void barrier() override {}
  std::unique_ptr<Communicator> split(int color, int key) const override;
};

}  // namespace bk
