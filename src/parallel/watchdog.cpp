#include "parallel/watchdog.h"

#include <chrono>
#include <condition_variable>
#include <fmt/format.h>
#include <map>
#include <mutex>
#include <thread>

#include "parallel/mpi_communicator.h"

namespace bk {
namespace {

using Clock = std::chrono::steady_clock;

// The calls in flight in this process (several threads may communicate at once) and the one
// thread that checks their deadlines.
class Watchdog {
 public:
  static Watchdog& get() {
    static Watchdog w;
    return w;
  }
  uint64_t begin(std::string what, double timeout_s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
    const uint64_t id = next_++;
    active_[id] = Entry{std::move(what), Clock::now(), timeout_s};
    return id;
  }
  void end(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    active_.erase(id);
  }
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  struct Entry {
    std::string what;
    Clock::time_point start;
    double timeout_s;
  };
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::milliseconds(200));
      const auto now = Clock::now();
      for (const auto& [id, e] : active_) {
        const double waited = std::chrono::duration<double>(now - e.start).count();
        if (waited > e.timeout_s)
          abort_job(fmt::format("{} did not complete within parallel.timeout_s = {:g} s: another rank has failed, "
                                "stalled or is running a different step (see the other ranks' errors and logs); "
                                "aborting the job", e.what, e.timeout_s));
      }
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Entry> active_;
  uint64_t next_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

// Times one call: registered on construction, cleared on destruction (also when it throws).
class Timed {
 public:
  Timed(const std::string& comm, const char* op, double timeout_s)
      : id_(Watchdog::get().begin(fmt::format("{} on communicator '{}'", op, comm), timeout_s)) {}
  ~Timed() { Watchdog::get().end(id_); }

 private:
  uint64_t id_;
};

class WatchedRequest final : public Request {
 public:
  WatchedRequest(std::unique_ptr<Request> r, std::string what, double timeout_s)
      : r_(std::move(r)), what_(std::move(what)), timeout_s_(timeout_s) {}
  ~WatchedRequest() override {
    if (!r_) return;
    Timed t(what_, "completion of a point-to-point transfer", timeout_s_);
    r_.reset();  // the inner request waits for the transfer
  }
  void wait() override {
    Timed t(what_, "wait", timeout_s_);
    r_->wait();
  }
  bool test() override { return r_->test(); }

 private:
  std::unique_ptr<Request> r_;
  std::string what_;
  double timeout_s_;
};

}  // namespace

WatchedCommunicator::WatchedCommunicator(std::unique_ptr<Communicator> inner, std::string name, double timeout_s)
    : inner_(std::move(inner)), name_(std::move(name)), timeout_s_(timeout_s) {
  BK_CHECK(timeout_s > 0, "parallel.timeout_s must be positive, got {}", timeout_s);
}
WatchedCommunicator::~WatchedCommunicator() = default;

std::unique_ptr<Request> WatchedCommunicator::isend(Tensor t, int peer, int tag) {
  return std::make_unique<WatchedRequest>(inner_->isend(t, peer, tag),
                                          fmt::format("{} (send to rank {}, tag {})", name_, peer, tag), timeout_s_);
}
std::unique_ptr<Request> WatchedCommunicator::irecv(Tensor t, int peer, int tag) {
  return std::make_unique<WatchedRequest>(inner_->irecv(t, peer, tag),
                                          fmt::format("{} (receive from rank {}, tag {})", name_, peer, tag),
                                          timeout_s_);
}
void WatchedCommunicator::all_reduce_sum(Tensor t) {
  Timed w(name_, "all_reduce_sum", timeout_s_);
  inner_->all_reduce_sum(t);
}
void WatchedCommunicator::reduce_scatter_sum(Tensor out, Tensor in) {
  Timed w(name_, "reduce_scatter_sum", timeout_s_);
  inner_->reduce_scatter_sum(out, in);
}
void WatchedCommunicator::all_gather(Tensor out, Tensor in) {
  Timed w(name_, "all_gather", timeout_s_);
  inner_->all_gather(out, in);
}
void WatchedCommunicator::all_to_all_v(Tensor out, const std::vector<int64_t>& recv_rows, Tensor in,
                                       const std::vector<int64_t>& send_rows) {
  Timed w(name_, "all_to_all_v", timeout_s_);
  inner_->all_to_all_v(out, recv_rows, in, send_rows);
}
void WatchedCommunicator::broadcast(Tensor t, int root) {
  Timed w(name_, "broadcast", timeout_s_);
  inner_->broadcast(t, root);
}
void WatchedCommunicator::barrier() {
  Timed w(name_, "barrier", timeout_s_);
  inner_->barrier();
}
std::unique_ptr<Communicator> WatchedCommunicator::split(int color, int key) const {
  return split_named(color, key, fmt::format("{}/{}", name_, color));
}
std::unique_ptr<Communicator> WatchedCommunicator::split_named(int color, int key, const std::string& name) const {
  std::unique_ptr<Communicator> c;
  {
    Timed w(name_, "split", timeout_s_);
    c = inner_->split(color, key);
  }
  return std::make_unique<WatchedCommunicator>(std::move(c), name, timeout_s_);
}

}  // namespace bk
