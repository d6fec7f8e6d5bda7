#include "model/ffn.h"

namespace bk {

Ffn::Ffn(const std::string& prefix, int64_t dim, int64_t hidden, float norm_eps)
    : prefix_(prefix),
      dim_(dim),
      hidden_(hidden),
      norm_(prefix + ".norm", dim, norm_eps),
      w1_(prefix + ".w1.weight", {hidden, dim}, true),
      w3_(prefix + ".w3.weight", {hidden, dim}, true),
      w2_(prefix + ".w2.weight", {dim, hidden}, true) {}

void Ffn::init(uint64_t seed, double std, double out_std) {
  w1_.init_normal(seed, std);
  w3_.init_normal(seed, std);
  w2_.init_normal(seed, out_std);
}

void Ffn::forward(const MicroBatch& mb, Tensor x, Tensor y) {
  const int64_t N = mb.tokens_count();
  Saved local;
  Saved& st = mb.keep ? saved_.put(mb.id) : local;
  st.x = Buffer({N, dim_});
  ops::copy(st.x, x);
  st.rstd = Buffer({N});
  st.n = Buffer({N, dim_});
  norm_.forward(st.n, st.rstd, x);
  st.gate = Buffer({N, hidden_});
  st.up = Buffer({N, hidden_});
  st.h = Buffer({N, hidden_});
  ops::linear_forward(st.gate, st.n, w1_.value);
  ops::linear_forward(st.up, st.n, w3_.value);
  ops::swiglu_forward(st.h, st.gate, st.up);
  ops::linear_forward(y, st.h, w2_.value);
}

void Ffn::backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) {
  const int64_t N = mb.tokens_count();
  Saved& st = saved_.at(mb.id);
  st.dy = Buffer({N, dim_});
  ops::copy(st.dy, dy);
  Buffer dh({N, hidden_});
  ops::linear_backward_input(dh, dy, w2_.value);
  st.dgate = Buffer({N, hidden_});
  st.dup = Buffer({N, hidden_});
  ops::swiglu_backward(st.dgate, st.dup, dh, st.gate, st.up);
  st.dn = Buffer({N, dim_});
  Buffer part({N, dim_});
  ops::linear_backward_input(st.dn, st.dgate, w1_.value);
  ops::linear_backward_input(part, st.dup, w3_.value);
  ops::add_inplace(st.dn, part);
  norm_.backward_input(dx, st.dn, st.x, st.rstd);
}

void Ffn::backward_weight(const MicroBatch& mb) {
  Saved& st = saved_.at(mb.id);
  ops::linear_backward_weight(w2_.grad, st.dy, st.h);
  ops::linear_backward_weight(w1_.grad, st.dgate, st.n);
  ops::linear_backward_weight(w3_.grad, st.dup, st.n);
  norm_.backward_weight(st.dn, st.x, st.rstd);
  saved_.drop(mb.id);
}

}  // namespace bk
