#include "model/swiglu_mlp.h"

#include "kernels/ops.h"

namespace bk {

void SwiGluMlp::init(uint64_t seed, double std, double out_std) {
  w1.init_normal(seed, std);
  w3.init_normal(seed, std);
  w2.init_normal(seed, out_std);
}

void SwiGluMlp::forward(Tensor x, Tensor gate, Tensor up, Tensor h, Tensor y) const {
  ops::linear_forward(gate, x, w1.value);
  ops::linear_forward(up, x, w3.value);
  ops::swiglu_forward(h, gate, up);
  ops::linear_forward(y, h, w2.value);
}

void SwiGluMlp::backward_input(Tensor dy, Tensor gate, Tensor up, Tensor dgate, Tensor dup, Tensor dx,
                               Tensor dh_tmp, Tensor dx_tmp) const {
  ops::linear_backward_input(dh_tmp, dy, w2.value);
  ops::swiglu_backward(dgate, dup, dh_tmp, gate, up);
  ops::linear_backward_input(dx, dgate, w1.value);
  ops::linear_backward_input(dx_tmp, dup, w3.value);
  ops::add_inplace(dx, dx_tmp);
}

void SwiGluMlp::backward_weight(Tensor x, Tensor h, Tensor dy, Tensor dgate, Tensor dup) {
  ops::linear_backward_weight(w2.grad, dy, h);
  ops::linear_backward_weight(w1.grad, dgate, x);
  ops::linear_backward_weight(w3.grad, dup, x);
}

}  // namespace bk
