#include "parallel/self_communicator.h"

#include <cstring>

#include "core/error.h"

namespace bk {
namespace {

void copy_bytes(Tensor out, Tensor in, const char* what) {
  BK_CHECK(out.dtype == in.dtype && out.numel() == in.numel(), "{}: out {} {} and in {} {} differ", what,
           dtype_name(out.dtype), out.shape.str(), dtype_name(in.dtype), in.shape.str());
  if (in.nbytes() && out.data != in.data) std::memcpy(out.data, in.data, in.nbytes());
}

}  // namespace

std::unique_ptr<Request> SelfCommunicator::isend(Tensor, int peer, int) {
  BK_FAIL("isend to rank {}: a one-process job has no peers", peer);
}
std::unique_ptr<Request> SelfCommunicator::irecv(Tensor, int peer, int) {
  BK_FAIL("irecv from rank {}: a one-process job has no peers", peer);
}
void SelfCommunicator::reduce_scatter_sum(Tensor out, Tensor in) { copy_bytes(out, in, "reduce_scatter_sum"); }
void SelfCommunicator::all_gather(Tensor out, Tensor in) { copy_bytes(out, in, "all_gather"); }
void SelfCommunicator::all_to_all_v(Tensor out, const std::vector<int64_t>& recv_rows, Tensor in,
                                    const std::vector<int64_t>& send_rows) {
  BK_CHECK(recv_rows.size() == 1 && send_rows.size() == 1 && recv_rows[0] == send_rows[0],
           "all_to_all_v on one process: send and receive one equal row count");
  copy_bytes(out, in, "all_to_all_v");
}
void SelfCommunicator::broadcast(Tensor, int root) {
  BK_CHECK(root == 0, "broadcast from rank {} of 1", root);
}
std::unique_ptr<Communicator> SelfCommunicator::split(int color, int) const {
  BK_CHECK(color >= 0, "split: color must be non-negative, got {}", color);
  return std::make_unique<SelfCommunicator>();
}

}  // namespace bk
