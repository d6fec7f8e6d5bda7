#include "model/attention.h"

#include <cmath>

namespace bk {

Attention::Attention(const std::string& prefix, AttentionShape shape)
    : prefix_(prefix),
      s_(shape),
      norm_(prefix + ".norm", shape.dim, shape.norm_eps),
      wq_(prefix + ".wq.weight", {shape.dim, shape.dim}, true),
      wk_(prefix + ".wk.weight", {shape.dim, shape.dim}, true),
      wv_(prefix + ".wv.weight", {shape.dim, shape.dim}, true),
      wo_(prefix + ".wo.weight", {shape.dim, shape.dim}, true) {
  BK_CHECK(shape.dim % shape.n_heads == 0, "{}: dim {} not divisible by n_heads {}", prefix, shape.dim,
           shape.n_heads);
}

void Attention::init(uint64_t seed, double std, double out_std) {
  wq_.init_normal(seed, std);
  wk_.init_normal(seed, std);
  wv_.init_normal(seed, std);
  wo_.init_normal(seed, out_std);
}

void Attention::forward(const MicroBatch& mb, Tensor x, Tensor y) {
  const int64_t N = mb.tokens_count(), C = s_.dim, H = s_.n_heads, D = s_.head_dim();
  const Shape heads{mb.B, mb.T, H, D};
  Saved local;
  Saved& st = mb.saves() ? saved_.put(mb.id) : local;
  st.x = buffer({N, C});
  ops::copy(st.x, x);
  st.rstd = stats_buffer({N});
  st.n = buffer({N, C});
  norm_.forward(st.n, st.rstd, x);

  Buffer pre = buffer({N, C});  // projection before RoPE
  st.q = buffer(heads);
  st.k = buffer(heads);
  st.v = buffer(heads);
  ops::linear_forward(pre, st.n, wq_.value);
  ops::rope_forward(st.q, pre.tensor().view(heads), s_.rope_theta);
  ops::linear_forward(pre, st.n, wk_.value);
  ops::rope_forward(st.k, pre.tensor().view(heads), s_.rope_theta);
  ops::linear_forward(st.v.tensor().view({N, C}), st.n, wv_.value);

  st.att = buffer(heads);
  st.lse = stats_buffer({mb.B, H, mb.T});
  ops::attention_forward(st.att, st.lse, st.q, st.k, st.v, float(1.0 / std::sqrt(double(D))));
  ops::linear_forward(y, st.att.tensor().view({N, C}), wo_.value);
}

void Attention::backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) {
  const int64_t N = mb.tokens_count(), C = s_.dim, H = s_.n_heads, D = s_.head_dim();
  const Shape heads{mb.B, mb.T, H, D};
  Saved& st = saved_.at(mb.id);
  st.dy = buffer({N, C});
  ops::copy(st.dy, dy);

  Buffer datt = buffer(heads);
  ops::linear_backward_input(datt.tensor().view({N, C}), dy, wo_.value);
  Buffer dq_rot = buffer(heads);
  Buffer dk_rot = buffer(heads);
  st.dv = buffer(heads);
  ops::attention_backward(dq_rot, dk_rot, st.dv, datt, st.att, st.lse, st.q, st.k, st.v,
                          float(1.0 / std::sqrt(double(D))));
  st.dq = buffer({N, C});
  st.dk = buffer({N, C});
  ops::rope_backward(st.dq.tensor().view(heads), dq_rot, s_.rope_theta);
  ops::rope_backward(st.dk.tensor().view(heads), dk_rot, s_.rope_theta);

  // dn = dq Wq + dk Wk + dv Wv
  st.dn = buffer({N, C});
  Buffer part = buffer({N, C});
  ops::linear_backward_input(st.dn, st.dq, wq_.value);
  ops::linear_backward_input(part, st.dk, wk_.value);
  ops::add_inplace(st.dn, part);
  ops::linear_backward_input(part, st.dv.tensor().view({N, C}), wv_.value);
  ops::add_inplace(st.dn, part);
  norm_.backward_input(dx, st.dn, st.x, st.rstd);
}

void Attention::backward_weight(const MicroBatch& mb) {
  const int64_t N = mb.tokens_count(), C = s_.dim;
  Saved& st = saved_.at(mb.id);
  ops::linear_backward_weight(wo_.grad, st.dy, st.att.tensor().view({N, C}));
  ops::linear_backward_weight(wq_.grad, st.dq, st.n);
  ops::linear_backward_weight(wk_.grad, st.dk, st.n);
  ops::linear_backward_weight(wv_.grad, st.dv.tensor().view({N, C}), st.n);
  norm_.backward_weight(st.dn, st.x, st.rstd);
  saved_.drop(mb.id);
}

}  // namespace bk
