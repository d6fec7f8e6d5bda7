// Collective timeouts: a job must never hang because one rank died, threw, or stalls. Every
// collective and every wait on a send/receive of a WatchedCommunicator is timed by one watchdog
// thread per process; a call that runs past the timeout ends the whole job through abort_job
// with a message naming the call, its communicator and how long it waited. (A rank that throws
// aborts the job itself; the watchdog catches the ranks left waiting for it when the abort
// cannot reach them, and the ones stuck behind a rank that hangs.)
#pragma once
#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace bk {

class WatchedCommunicator final : public Communicator {
 public:
  // name: the group's name in messages ("world", "data", "ep", ...); timeout_s > 0.
  WatchedCommunicator(std::unique_ptr<Communicator> inner, std::string name, double timeout_s);
  ~WatchedCommunicator() override;

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::unique_ptr<Request> isend(Tensor t, int peer, int tag) override;
  std::unique_ptr<Request> irecv(Tensor t, int peer, int tag) override;
  void all_reduce_sum(Tensor t) override;
  void reduce_scatter_sum(Tensor out, Tensor in) override;
  void all_gather(Tensor out, Tensor in) override;
  void all_to_all_v(Tensor out, const std::vector<int64_t>& recv_rows, Tensor in,
                    const std::vector<int64_t>& send_rows) override;
  void broadcast(Tensor t, int root) override;
  void barrier() override;
  void progress() override { inner_->progress(); }
  // The new communicator is watched too, named "<name>/<color>".
  std::unique_ptr<Communicator> split(int color, int key) const override;
  // Same as split, with a readable group name.
  std::unique_ptr<Communicator> split_named(int color, int key, const std::string& name) const override;

 private:
  std::unique_ptr<Communicator> inner_;
  std::string name_;
  double timeout_s_;
};

}  // namespace bk
