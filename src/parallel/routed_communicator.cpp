#include "parallel/routed_communicator.h"

#include "core/error.h"

namespace bk {

RoutedCommunicator::RoutedCommunicator(Communicator& host, Communicator& device) : host_(&host), device_(&device) {
  BK_CHECK(host.rank() == device.rank() && host.size() == device.size(),
           "RoutedCommunicator: the host transport is rank {} of {} but the device transport rank {} of {}",
           host.rank(), host.size(), device.rank(), device.size());
}

RoutedCommunicator::RoutedCommunicator(std::unique_ptr<Communicator> host, std::unique_ptr<Communicator> device)
    : RoutedCommunicator(*host, *device) {
  owned_host_ = std::move(host);
  owned_device_ = std::move(device);
}

Communicator& RoutedCommunicator::route(const char* op, const Tensor& a, const Tensor* b) const {
  BK_CHECK(!b || b->device == a.device, "{}: one tensor is on the {} and the other on the {}; both must be on one",
           op, a.device == Device::cpu ? "CPU" : "GPU", a.device == Device::cpu ? "GPU" : "CPU");
  return a.device == Device::cpu ? *host_ : *device_;
}

std::unique_ptr<Request> RoutedCommunicator::isend(Tensor t, int peer, int tag) {
  return route("isend", t).isend(t, peer, tag);
}
std::unique_ptr<Request> RoutedCommunicator::irecv(Tensor t, int peer, int tag) {
  return route("irecv", t).irecv(t, peer, tag);
}
void RoutedCommunicator::all_reduce_sum(Tensor t) { route("all_reduce_sum", t).all_reduce_sum(t); }
void RoutedCommunicator::reduce_scatter_sum(Tensor out, Tensor in) {
  route("reduce_scatter_sum", out, &in).reduce_scatter_sum(out, in);
}
void RoutedCommunicator::all_gather(Tensor out, Tensor in) { route("all_gather", out, &in).all_gather(out, in); }
void RoutedCommunicator::all_to_all_v(Tensor out, const std::vector<int64_t>& recv_rows, Tensor in,
                                      const std::vector<int64_t>& send_rows) {
  route("all_to_all_v", out, &in).all_to_all_v(out, recv_rows, in, send_rows);
}
void RoutedCommunicator::broadcast(Tensor t, int root) { route("broadcast", t).broadcast(t, root); }

std::unique_ptr<Communicator> RoutedCommunicator::split(int color, int key) const {
  auto host = host_->split(color, key);
  auto device = device_->split(color, key);
  return std::make_unique<RoutedCommunicator>(std::move(host), std::move(device));
}

std::unique_ptr<Communicator> RoutedCommunicator::split_named(int color, int key, const std::string& name) const {
  auto host = host_->split_named(color, key, name);
  auto device = device_->split(color, key);
  return std::make_unique<RoutedCommunicator>(std::move(host), std::move(device));
}

}  // namespace bk
