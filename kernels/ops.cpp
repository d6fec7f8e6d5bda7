// bk::ops: route each op to the backend of its tensors. The model calls only these, so it
// never branches on the device. The CUDA branches arrive with the CUDA backend.
#include "kernels/ops.h"

namespace bk::ops {
namespace {
void require_cpu(const Tensor& t, const char* op) {
  BK_CHECK(t.device == Device::cpu, "{}: no CUDA implementation is built into this binary", op);
}
}  // namespace

#define BK_ROUTE(op, first, ...) \
  require_cpu(first, #op);       \
  return cpu::op(__VA_ARGS__)

void embedding_forward(Tensor out, Tensor tokens, Tensor table, Stream s) {
  BK_ROUTE(embedding_forward, out, out, tokens, table, s);
}
void embedding_backward_weight(Tensor dtable, Tensor tokens, Tensor dout, Stream s) {
  BK_ROUTE(embedding_backward_weight, dtable, dtable, tokens, dout, s);
}
void rmsnorm_forward(Tensor y, Tensor rstd, Tensor x, Tensor w, float eps, Stream s) {
  BK_ROUTE(rmsnorm_forward, y, y, rstd, x, w, eps, s);
}
void rmsnorm_backward_input(Tensor dx, Tensor dy, Tensor x, Tensor w, Tensor rstd, Stream s) {
  BK_ROUTE(rmsnorm_backward_input, dx, dx, dy, x, w, rstd, s);
}
void rmsnorm_backward_weight(Tensor dw, Tensor dy, Tensor x, Tensor rstd, Stream s) {
  BK_ROUTE(rmsnorm_backward_weight, dw, dw, dy, x, rstd, s);
}
void linear_forward(Tensor y, Tensor x, Tensor w, Stream s) {
  BK_ROUTE(linear_forward, y, y, x, w, s);
}
void linear_backward_input(Tensor dx, Tensor dy, Tensor w, Stream s) {
  BK_ROUTE(linear_backward_input, dx, dx, dy, w, s);
}
void linear_backward_weight(Tensor dw, Tensor dy, Tensor x, Stream s) {
  BK_ROUTE(linear_backward_weight, dw, dw, dy, x, s);
}
void rope_forward(Tensor y, Tensor x, float theta, Stream s) {
  BK_ROUTE(rope_forward, y, y, x, theta, s);
}
void rope_backward(Tensor dx, Tensor dy, float theta, Stream s) {
  BK_ROUTE(rope_backward, dx, dx, dy, theta, s);
}
void attention_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, float scale, Stream s) {
  BK_ROUTE(attention_forward, out, out, lse, q, k, v, scale, s);
}
void attention_backward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse,
                        Tensor q, Tensor k, Tensor v, float scale, Stream s) {
  BK_ROUTE(attention_backward, dq, dq, dk, dv, dout, out, lse, q, k, v, scale, s);
}
void swiglu_forward(Tensor out, Tensor gate, Tensor up, Stream s) {
  BK_ROUTE(swiglu_forward, out, out, gate, up, s);
}
void swiglu_backward(Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up, Stream s) {
  BK_ROUTE(swiglu_backward, dgate, dgate, dup, dout, gate, up, s);
}
void cross_entropy_forward(Tensor losses, Tensor logits, Tensor targets, Stream s) {
  BK_ROUTE(cross_entropy_forward, losses, losses, logits, targets, s);
}
void cross_entropy_backward(Tensor dlogits, Tensor logits, Tensor targets, float grad_scale,
                            Stream s) {
  BK_ROUTE(cross_entropy_backward, dlogits, dlogits, logits, targets, grad_scale, s);
}
void add_inplace(Tensor y, Tensor x, Stream s) { BK_ROUTE(add_inplace, y, y, x, s); }
void copy(Tensor dst, Tensor src, Stream s) { BK_ROUTE(copy, dst, dst, src, s); }
double sum_squares(Tensor x, Stream s) { BK_ROUTE(sum_squares, x, x, s); }
void adamw_update(Tensor w, Tensor g, Tensor m, Tensor v, const AdamWStep& p, Stream s) {
  BK_ROUTE(adamw_update, w, w, g, m, v, p, s);
}

}  // namespace bk::ops
