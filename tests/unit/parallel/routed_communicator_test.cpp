// RoutedCommunicator sends each call to the transport of its tensors' device: host tensors to
// the host transport (MPI), GPU tensors to the device transport (NCCL). Checked with two
// recording transports; the GPU tensors are never dereferenced (no GPU is needed).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "parallel/routed_communicator.h"

namespace bk {
namespace {

struct Log {
  std::vector<std::string> calls;
};

// A transport that records what reaches it.
class Recorder final : public Communicator {
 public:
  Recorder(Log* log, std::string tag, int rank = 1, int size = 4) : log_(log), tag_(std::move(tag)), rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::unique_ptr<Request> isend(Tensor, int peer, int) override {
    note("isend to " + std::to_string(peer));
    return nullptr;
  }
  std::unique_ptr<Request> irecv(Tensor, int peer, int) override {
    note("irecv from " + std::to_string(peer));
    return nullptr;
  }
  void all_reduce_sum(Tensor) override { note("all_reduce_sum"); }
  void reduce_scatter_sum(Tensor, Tensor) override { note("reduce_scatter_sum"); }
  void all_gather(Tensor, Tensor) override { note("all_gather"); }
  void all_to_all_v(Tensor, const std::vector<int64_t>&, Tensor, const std::vector<int64_t>&) override {
    note("all_to_all_v");
  }
  void broadcast(Tensor, int root) override { note("broadcast from " + std::to_string(root)); }
  void barrier() override { note("barrier"); }
  void progress() override { note("progress"); }
  std::unique_ptr<Communicator> split(int color, int key) const override {
    note("split " + std::to_string(color) + "/" + std::to_string(key));
    return std::make_unique<Recorder>(log_, tag_ + ".child", 0, 2);
  }
  std::unique_ptr<Communicator> split_named(int color, int key, const std::string& name) const override {
    note("split_named " + std::to_string(color) + "/" + std::to_string(key) + " " + name);
    return std::make_unique<Recorder>(log_, tag_ + "." + name, 0, 2);
  }

 private:
  void note(const std::string& what) const { log_->calls.push_back(tag_ + ": " + what); }
  Log* log_;
  std::string tag_;
  int rank_, size_;
};

float host_storage[8];
Tensor host_tensor() { return Tensor{host_storage, DType::f32, {8}, Device::cpu}; }
// Never dereferenced: only its device matters here.
Tensor gpu_tensor() { return Tensor{reinterpret_cast<void*>(uintptr_t(0x1000)), DType::f32, {8}, Device::cuda}; }

TEST(RoutedCommunicator, SendsEachCallToItsTensorsTransport) {
  Log log;
  Recorder host(&log, "mpi"), device(&log, "nccl");
  RoutedCommunicator c(host, device);
  EXPECT_EQ(c.rank(), 1);
  EXPECT_EQ(c.size(), 4);
  c.all_reduce_sum(host_tensor());
  c.all_reduce_sum(gpu_tensor());
  c.reduce_scatter_sum(gpu_tensor(), gpu_tensor());
  c.all_gather(host_tensor(), host_tensor());
  c.all_to_all_v(gpu_tensor(), {2, 2, 2, 2}, gpu_tensor(), {2, 2, 2, 2});
  c.all_to_all_v(host_tensor(), {2, 2, 2, 2}, host_tensor(), {2, 2, 2, 2});
  c.broadcast(gpu_tensor(), 2);
  c.isend(gpu_tensor(), 3, 0);
  c.irecv(host_tensor(), 0, 0);
  c.barrier();
  c.progress();
  const std::vector<std::string> want = {
      "mpi: all_reduce_sum", "nccl: all_reduce_sum", "nccl: reduce_scatter_sum", "mpi: all_gather",
      "nccl: all_to_all_v",  "mpi: all_to_all_v",    "nccl: broadcast from 2",   "nccl: isend to 3",
      "mpi: irecv from 0",   "mpi: barrier",         "mpi: progress"};
  EXPECT_EQ(log.calls, want);
}

TEST(RoutedCommunicator, RefusesTensorsOnTwoDevices) {
  Log log;
  Recorder host(&log, "mpi"), device(&log, "nccl");
  RoutedCommunicator c(host, device);
  try {
    c.all_gather(gpu_tensor(), host_tensor());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("all_gather"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(log.calls.empty());
}

TEST(RoutedCommunicator, SplitsBothTransportsAndNamesTheHostGroup) {
  Log log;
  Recorder host(&log, "mpi"), device(&log, "nccl");
  RoutedCommunicator c(host, device);
  auto dp = c.split_named(1, 3, "dp");
  auto plain = c.split(0, 1);
  const std::vector<std::string> want = {"mpi: split_named 1/3 dp", "nccl: split 1/3", "mpi: split 0/1",
                                         "nccl: split 0/1"};
  EXPECT_EQ(log.calls, want);
  log.calls.clear();
  dp->all_reduce_sum(gpu_tensor());
  dp->all_reduce_sum(host_tensor());
  const std::vector<std::string> child = {"nccl.child: all_reduce_sum", "mpi.dp: all_reduce_sum"};
  EXPECT_EQ(log.calls, child);
}

TEST(RoutedCommunicator, RefusesTransportsWithDifferentRanks) {
  Log log;
  Recorder host(&log, "mpi", 1, 4), device(&log, "nccl", 2, 4);
  EXPECT_THROW(RoutedCommunicator(host, device), Error);
}

}  // namespace
}  // namespace bk
