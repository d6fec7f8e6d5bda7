// Norm: an RMSNorm with its weight, used inside sublayers and the head. Not a Layer itself: the
// sublayer that owns it saves its input and rstd with the rest of its state.
#pragma once
#include "kernels/ops.h"
#include "model/param.h"

namespace bk {

struct Norm {
  Param weight;
  float eps = 1e-6f;

  Norm() = default;
  Norm(const std::string& name, int64_t dim, float eps_) : weight(name + ".weight", {dim}, false), eps(eps_) {
    weight.fill(1.0f);
  }
  void forward(Tensor y, Tensor rstd, Tensor x) { ops::rmsnorm_forward(y, rstd, x, weight.value, eps); }
  void backward_input(Tensor dx, Tensor dy, Tensor x, Tensor rstd) {
    ops::rmsnorm_backward_input(dx, dy, x, weight.value, rstd);
  }
  void backward_weight(Tensor dy, Tensor x, Tensor rstd) {
    ops::rmsnorm_backward_weight(weight.grad, dy, x, rstd);
  }
};

}  // namespace bk
