// SwiGluMlp: y = W2 (silu(W1 x) * W3 x) without a norm: the dense FFN's body, and every routed
// and shared expert of the MoE. The caller owns the intermediates (gate, up, h), so the MoE can
// keep all experts' rows in one permuted buffer.
#pragma once
#include "model/param.h"

namespace bk {

struct SwiGluMlp {
  Param w1, w3, w2;  // gate [F, C], up [F, C], down [C, F]

  SwiGluMlp() = default;
  SwiGluMlp(const std::string& prefix, int64_t dim, int64_t hidden)
      : w1(prefix + ".w1.weight", {hidden, dim}, true),
        w3(prefix + ".w3.weight", {hidden, dim}, true),
        w2(prefix + ".w2.weight", {dim, hidden}, true) {}
  void init(uint64_t seed, double std, double out_std);
  ParamList params() { return {&w1, &w3, &w2}; }

  // gate = x W1^T, up = x W3^T, h = silu(gate) * up, y = h W2^T.
  void forward(Tensor x, Tensor gate, Tensor up, Tensor h, Tensor y) const;
  // dh = dy W2 -> (dgate, dup) -> dx = dgate W1 + dup W3. dh_tmp [rows, F] and dx_tmp [rows, C]
  // are scratch of the caller's dtype.
  void backward_input(Tensor dy, Tensor gate, Tensor up, Tensor dgate, Tensor dup, Tensor dx,
                      Tensor dh_tmp, Tensor dx_tmp) const;
  // dW2 += dy^T h, dW1 += dgate^T x, dW3 += dup^T x.
  void backward_weight(Tensor x, Tensor h, Tensor dy, Tensor dgate, Tensor dup);
};

}  // namespace bk
