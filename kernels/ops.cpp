// bk::ops: route each op to the backend of its tensors. The model calls only these, so it
// never branches on the device. `first` is the tensor whose device decides (the backends
// check that the other operands live there too).
#include "kernels/ops.h"

namespace bk::ops {

#ifdef BIRKHOFF_WITH_CUDA
#define BK_ROUTE(op, first, ...)                                      \
  if ((first).device == Device::cuda) return cuda::op(__VA_ARGS__); \
  return cpu::op(__VA_ARGS__)
#else
namespace {
void require_cpu(const Tensor& t, const char* op) {
  BK_CHECK(t.device == Device::cpu, "{}: no CUDA implementation is built into this binary", op);
}
}  // namespace

#define BK_ROUTE(op, first, ...) \
  require_cpu(first, #op);       \
  return cpu::op(__VA_ARGS__)
#endif

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
std::vector<double> sum_squares_many(const std::vector<Tensor>& x, Stream s) {
  if (x.empty()) return {};
  BK_ROUTE(sum_squares_many, x.front(), x, s);
}
void adamw_update_many(const std::vector<Tensor>& w, const std::vector<Tensor>& g, const std::vector<Tensor>& m,
                       const std::vector<Tensor>& v, const std::vector<float>& weight_decay, const AdamWStep& p,
                       Stream s) {
  if (w.empty()) return;
  BK_ROUTE(adamw_update_many, w.front(), w, g, m, v, weight_decay, p, s);
}
void adamw_update(Tensor w, Tensor g, Tensor m, Tensor v, const AdamWStep& p, Stream s) {
  BK_ROUTE(adamw_update, w, w, g, m, v, p, s);
}

// ---- residual connectors -----------------------------------------------------------------
void mhc_coeffs_forward(Tensor h_pre, Tensor h_post, Tensor res_logits, Tensor rinv, Tensor z,
                        Tensor x, Tensor phi, Tensor alpha, Tensor bias, float eps, Stream s) {
  BK_ROUTE(mhc_coeffs_forward, x, h_pre, h_post, res_logits, rinv, z, x, phi, alpha, bias, eps, s);
}
void mhc_coeffs_backward_input(Tensor dx, Tensor dlogits, Tensor dh_pre, Tensor dh_post,
                               Tensor dres_logits, Tensor h_pre, Tensor h_post, Tensor x,
                               Tensor phi, Tensor alpha, Tensor rinv, Tensor z, Stream s) {
  BK_ROUTE(mhc_coeffs_backward_input, x, dx, dlogits, dh_pre, dh_post, dres_logits, h_pre, h_post,
           x, phi, alpha, rinv, z, s);
}
void mhc_coeffs_backward_weight(Tensor dphi, Tensor dalpha, Tensor dbias, Tensor dlogits,
                                Tensor x, Tensor alpha, Tensor rinv, Tensor z, Stream s) {
  BK_ROUTE(mhc_coeffs_backward_weight, x, dphi, dalpha, dbias, dlogits, x, alpha, rinv, z, s);
}
void sinkhorn_forward(Tensor p, Tensor logits, int iters, Stream s) {
  BK_ROUTE(sinkhorn_forward, logits, p, logits, iters, s);
}
void sinkhorn_backward(Tensor dlogits, Tensor dp, Tensor logits, int iters, Stream s) {
  BK_ROUTE(sinkhorn_backward, logits, dlogits, dp, logits, iters, s);
}
void hc_coeffs_forward(Tensor h_pre, Tensor h_post, Tensor h_res, Tensor rinv, Tensor u, Tensor x,
                       Tensor w, Tensor scale, Tensor static_pre, Tensor static_post,
                       Tensor static_res, float eps, Stream s) {
  BK_ROUTE(hc_coeffs_forward, x, h_pre, h_post, h_res, rinv, u, x, w, scale, static_pre,
           static_post, static_res, eps, s);
}
void hc_coeffs_backward_input(Tensor dx, Tensor dlogits, Tensor dh_pre, Tensor dh_post,
                              Tensor dh_res, Tensor x, Tensor w, Tensor scale, Tensor rinv,
                              Tensor u, Stream s) {
  BK_ROUTE(hc_coeffs_backward_input, x, dx, dlogits, dh_pre, dh_post, dh_res, x, w, scale, rinv,
           u, s);
}
void hc_coeffs_backward_weight(Tensor dw, Tensor dscale, Tensor dstatic_pre, Tensor dstatic_post,
                               Tensor dstatic_res, Tensor dlogits, Tensor dh_pre, Tensor dh_post,
                               Tensor dh_res, Tensor x, Tensor rinv, Tensor u, Stream s) {
  BK_ROUTE(hc_coeffs_backward_weight, x, dw, dscale, dstatic_pre, dstatic_post, dstatic_res,
           dlogits, dh_pre, dh_post, dh_res, x, rinv, u, s);
}
void stream_pre_forward(Tensor y, Tensor x, Tensor h_pre, Stream s) {
  BK_ROUTE(stream_pre_forward, x, y, x, h_pre, s);
}
void stream_pre_backward(Tensor dx, Tensor dh_pre, Tensor dy, Tensor x, Tensor h_pre, Stream s) {
  BK_ROUTE(stream_pre_backward, x, dx, dh_pre, dy, x, h_pre, s);
}
void stream_post_res_forward(Tensor out, Tensor x, Tensor f, Tensor h_res, Tensor h_post,
                             Stream s) {
  BK_ROUTE(stream_post_res_forward, x, out, x, f, h_res, h_post, s);
}
void stream_post_res_backward(Tensor dx, Tensor df, Tensor dh_res, Tensor dh_post, Tensor dout,
                              Tensor x, Tensor f, Tensor h_res, Tensor h_post, Stream s) {
  BK_ROUTE(stream_post_res_backward, x, dx, df, dh_res, dh_post, dout, x, f, h_res, h_post, s);
}
void stream_expand_forward(Tensor y, Tensor x, Stream s) {
  BK_ROUTE(stream_expand_forward, x, y, x, s);
}
void stream_expand_backward(Tensor dx, Tensor dy, Stream s) {
  BK_ROUTE(stream_expand_backward, dy, dx, dy, s);
}


// ---- column blocks, MoE routing and dispatch -------------------------------------------------
void copy_columns(Tensor dst, int64_t dst_col, Tensor src, int64_t src_col, int64_t width,
                  bool accumulate, Stream s) {
  BK_ROUTE(copy_columns, dst, dst, dst_col, src, src_col, width, accumulate, s);
}
void moe_router_forward(Tensor idx, Tensor gates, Tensor scores, Tensor logits, Tensor bias,
                        int n_groups, int topk_groups, float route_scale, Stream s) {
  BK_ROUTE(moe_router_forward, logits, idx, gates, scores, logits, bias, n_groups, topk_groups,
           route_scale, s);
}
void moe_router_backward(Tensor dlogits, Tensor dgates, Tensor dscores_extra, Tensor scores,
                         Tensor idx, float route_scale, Stream s) {
  BK_ROUTE(moe_router_backward, scores, dlogits, dgates, dscores_extra, scores, idx, route_scale,
           s);
}
void moe_plan(Tensor rows, Tensor offsets, Tensor idx, Stream s) {
  BK_ROUTE(moe_plan, idx, rows, offsets, idx, s);
}
void moe_permute(Tensor x_perm, Tensor x, Tensor rows, Stream s) {
  BK_ROUTE(moe_permute, x, x_perm, x, rows, s);
}
void moe_permute_backward(Tensor dx, Tensor dx_perm, Tensor rows, Stream s) {
  BK_ROUTE(moe_permute_backward, dx_perm, dx, dx_perm, rows, s);
}
void moe_unpermute(Tensor y, Tensor y_perm, Tensor gates, Tensor rows, Stream s) {
  BK_ROUTE(moe_unpermute, y_perm, y, y_perm, gates, rows, s);
}
void moe_unpermute_backward(Tensor dy_perm, Tensor dgates, Tensor dy, Tensor y_perm, Tensor gates,
                            Tensor rows, Stream s) {
  BK_ROUTE(moe_unpermute_backward, dy, dy_perm, dgates, dy, y_perm, gates, rows, s);
}
double moe_balance_loss_forward(Tensor scores, Tensor idx, int B, float alpha, Stream s) {
  BK_ROUTE(moe_balance_loss_forward, scores, scores, idx, B, alpha, s);
}
void moe_balance_loss_backward(Tensor dscores, Tensor scores, Tensor idx, int B, float alpha,
                               float grad_scale, Stream s) {
  BK_ROUTE(moe_balance_loss_backward, scores, dscores, scores, idx, B, alpha, grad_scale, s);
}

}  // namespace bk::ops
