#include "parallel/self_communicator.h"

#include "core/error.h"
#include "kernels/ops.h"

namespace bk {
namespace {

// One rank's collective is a copy, on the tensors' device (ops::copy: host or GPU stream order).
void copy_bytes(Tensor out, Tensor in) {
  if (in.nbytes() && out.data != in.data) ops::copy(out.view({out.numel()}), in.view({in.numel()}));
}

}  // namespace

std::unique_ptr<Request> SelfCommunicator::isend(Tensor, int peer, int) {
  BK_FAIL("isend to rank {}: a one-process job has no peers", peer);
}
std::unique_ptr<Request> SelfCommunicator::irecv(Tensor, int peer, int) {
  BK_FAIL("irecv from rank {}: a one-process job has no peers", peer);
}
void SelfCommunicator::reduce_scatter_sum(Tensor out, Tensor in) {
  check_reduce_scatter_args(out, in, 1);
  copy_bytes(out, in);
}
void SelfCommunicator::all_gather(Tensor out, Tensor in) {
  check_all_gather_args(out, in, 1);
  copy_bytes(out, in);
}
void SelfCommunicator::all_to_all_v(Tensor out, const std::vector<int64_t>& recv_rows, Tensor in,
                                    const std::vector<int64_t>& send_rows) {
  check_all_to_all_v_args(out, recv_rows, in, send_rows, 1);
  copy_bytes(out, in);
}
void SelfCommunicator::broadcast(Tensor, int root) {
  BK_CHECK(root == 0, "broadcast from rank {} of 1", root);
}
std::unique_ptr<Communicator> SelfCommunicator::split(int color, int) const {
  BK_CHECK(color >= 0, "split: color must be non-negative, got {}", color);
  return std::make_unique<SelfCommunicator>();
}

}  // namespace bk
