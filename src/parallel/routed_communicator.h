// RoutedCommunicator: one Communicator over two transports with the same ranks, chosen per call
// by where the tensors live: host tensors go to `host` (MPI: loss sums, stop flags, MoE loads,
// grad-norm partials, checkpoint counts, expert row counts), device tensors to `device` (NCCL:
// gradients, expert rows, pipeline activations). The trainer on several GPUs builds its process
// grid on one, so every user of the grid (data-parallel optimizer, expert exchange) runs
// unchanged with GPU tensors (docs/cuda.md).
//
// Order: each transport sees the calls of its own tensors in program order, the same on every
// rank, so each pairs up by itself. NCCL calls return once queued on the comm stream; a rank
// that blocks in an MPI call has queued its earlier NCCL work, so a peer waiting on that work
// (a download after it) is never waiting on a rank that cannot proceed.
#pragma once
#include <memory>

#include "parallel/communicator.h"

namespace bk {

class RoutedCommunicator final : public Communicator {
 public:
  // Borrows both (they outlive it); they must have the same rank and size.
  RoutedCommunicator(Communicator& host, Communicator& device);
  // Owns both (what split() returns).
  RoutedCommunicator(std::unique_ptr<Communicator> host, std::unique_ptr<Communicator> device);

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::unique_ptr<Request> isend(Tensor t, int peer, int tag) override;
  std::unique_ptr<Request> irecv(Tensor t, int peer, int tag) override;
  void all_reduce_sum(Tensor t) override;
  void reduce_scatter_sum(Tensor out, Tensor in) override;
  void all_gather(Tensor out, Tensor in) override;
  void all_to_all_v(Tensor out, const std::vector<int64_t>& recv_rows, Tensor in,
                    const std::vector<int64_t>& send_rows) override;
  void broadcast(Tensor t, int root) override;
  void barrier() override { host_->barrier(); }
  void progress() override { host_->progress(); }
  // Splits both transports (both are collective over this communicator's ranks).
  std::unique_ptr<Communicator> split(int color, int key) const override;
  std::unique_ptr<Communicator> split_named(int color, int key, const std::string& name) const override;

 private:
  Communicator& route(const char* op, const Tensor& a, const Tensor* b = nullptr) const;
  std::unique_ptr<Communicator> owned_host_, owned_device_;
  Communicator* host_;
  Communicator* device_;
};

}  // namespace bk
