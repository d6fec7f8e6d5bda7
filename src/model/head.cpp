#include "model/head.h"

#include "kernels/ops.h"

namespace bk {

void Head::forward(const MicroBatch& mb, Tensor x, Tensor y) {
  const int64_t N = mb.tokens_count(), C = x.size(1), V = hw_->w.value.shape()[0];
  Saved local;
  Saved& st = mb.saves() ? saved_.put(mb.id) : local;
  st.x = buffer({N, C});
  ops::copy(st.x, x);
  st.rstd = stats_buffer({N});
  st.n = buffer({N, C});
  hw_->norm.forward(st.n, st.rstd, x);
  st.logits = buffer({N, V});
  ops::linear_forward(st.logits, st.n, hw_->w.value);
  st.targets = upload_indices(mb.targets, N);
  ops::cross_entropy_forward(y.view({N}), st.logits, st.targets);
}

void Head::backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) {
  Saved& st = saved_.at(mb.id);
  st.dlogits = buffer(st.logits.shape());
  ops::cross_entropy_backward(st.dlogits, st.logits, st.targets, mb.loss_scale);
  st.dn = buffer(st.n.shape());
  ops::linear_backward_input(st.dn, st.dlogits, hw_->w.value);
  hw_->norm.backward_input(dx, st.dn, st.x, st.rstd);
}

void Head::backward_weight(const MicroBatch& mb) {
  Saved& st = saved_.at(mb.id);
  ops::linear_backward_weight(hw_->w.grad, st.dlogits, st.n);
  hw_->norm.backward_weight(st.dn, st.x, st.rstd);
  saved_.drop(mb.id);
}

}  // namespace bk
