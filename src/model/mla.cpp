#include "model/mla.h"

#include <cmath>

#include "kernels/ops.h"

namespace bk {

Mla::Mla(const std::string& prefix, int64_t dim, int64_t n_heads, const MlaConfig& cfg, float rope_theta,
         float norm_eps)
    : prefix_(prefix),
      dim_(dim),
      H_(n_heads),
      q_rank_(cfg.q_lora_rank),
      kv_rank_(cfg.kv_lora_rank),
      nope_(cfg.qk_nope_dim),
      rope_(cfg.qk_rope_dim),
      vdim_(cfg.v_head_dim),
      theta_(rope_theta),
      norm_(prefix + ".norm", dim, norm_eps),
      w_dkv_(prefix + ".w_dkv.weight", {cfg.kv_lora_rank + cfg.qk_rope_dim, dim}, true),
      w_ukv_(prefix + ".w_ukv.weight", {n_heads * (cfg.qk_nope_dim + cfg.v_head_dim), cfg.kv_lora_rank}, true),
      w_o_(prefix + ".wo.weight", {dim, n_heads * cfg.v_head_dim}, true) {
  BK_CHECK(rope_ % 2 == 0, "{}: qk_rope_dim must be even, got {}", prefix, rope_);
  kv_norm_ = Norm(prefix + ".kv_norm", kv_rank_, norm_eps);
  if (q_rank_ > 0) {
    w_dq_ = Param(prefix + ".w_dq.weight", {q_rank_, dim}, true);
    q_norm_ = Norm(prefix + ".q_norm", q_rank_, norm_eps);
    w_uq_ = Param(prefix + ".w_uq.weight", {n_heads * qk(), q_rank_}, true);
  } else {
    w_q_ = Param(prefix + ".wq.weight", {n_heads * qk(), dim}, true);
  }
}

ParamList Mla::params() {
  ParamList p{&norm_.weight};
  if (q_rank_ > 0) {
    p.insert(p.end(), {&w_dq_, &q_norm_.weight, &w_uq_});
  } else {
    p.push_back(&w_q_);
  }
  p.insert(p.end(), {&w_dkv_, &kv_norm_.weight, &w_ukv_, &w_o_});
  return p;
}

void Mla::init(uint64_t seed, double std, double out_std) {
  for (Param* p : {&w_q_, &w_dq_, &w_uq_, &w_dkv_, &w_ukv_})
    if (!p->value.empty()) p->init_normal(seed, std);
  w_o_.init_normal(seed, out_std);
}

void Mla::forward(const MicroBatch& mb, Tensor x, Tensor y) {
  const int64_t N = mb.tokens_count(), NH = N * H_;
  const Shape q_heads{mb.B, mb.T, H_, qk()};
  Saved local;
  Saved& st = mb.saves() ? saved_.put(mb.id) : local;
  st.x = buffer({N, dim_});
  ops::copy(st.x, x);
  st.rstd = stats_buffer({N});
  st.n = buffer({N, dim_});
  norm_.forward(st.n, st.rstd, x);

  // Queries [N*H, nope + rope], the rotary part rotated in place.
  Buffer q_raw = buffer({N, H_ * qk()});
  if (q_rank_ > 0) {
    st.cq = buffer({N, q_rank_});
    st.rstd_q = stats_buffer({N});
    st.cqn = buffer({N, q_rank_});
    ops::linear_forward(st.cq, st.n, w_dq_.value);
    q_norm_.forward(st.cqn, st.rstd_q, st.cq);
    ops::linear_forward(q_raw, st.cqn, w_uq_.value);
  } else {
    ops::linear_forward(q_raw, st.n, w_q_.value);
  }
  Buffer pe = buffer({NH, rope_});
  st.q = buffer(q_heads);
  const Tensor q2 = st.q.tensor().view({NH, qk()});
  ops::copy(st.q, q_raw.tensor().view(q_heads));
  ops::copy_columns(pe, 0, q2, nope_, rope_, false);
  const Tensor pe4 = pe.tensor().view({mb.B, mb.T, H_, rope_});
  ops::rope_forward(pe4, pe4, theta_);
  ops::copy_columns(q2, nope_, pe, 0, rope_, false);

  // Keys and values from the latent; the one rotary key per token goes to every head.
  Buffer ckv = buffer({N, kv_rank_ + rope_});
  ops::linear_forward(ckv, st.n, w_dkv_.value);
  st.c = buffer({N, kv_rank_});
  ops::copy_columns(st.c, 0, ckv, 0, kv_rank_, false);
  Buffer k_pe = buffer({N, rope_});
  ops::copy_columns(k_pe, 0, ckv, kv_rank_, rope_, false);
  const Tensor k_pe4 = k_pe.tensor().view({mb.B, mb.T, 1, rope_});
  ops::rope_forward(k_pe4, k_pe4, theta_);
  st.rstd_c = stats_buffer({N});
  st.cn = buffer({N, kv_rank_});
  kv_norm_.forward(st.cn, st.rstd_c, st.c);
  Buffer kv = buffer({NH, nope_ + vdim_});
  ops::linear_forward(kv.tensor().view({N, H_ * (nope_ + vdim_)}), st.cn, w_ukv_.value);
  st.k = buffer(q_heads);
  st.v = buffer({mb.B, mb.T, H_, vdim_});
  const Tensor k2 = st.k.tensor().view({NH, qk()});
  ops::copy_columns(k2, 0, kv, 0, nope_, false);
  ops::copy_columns(st.v.tensor().view({NH, vdim_}), 0, kv, nope_, vdim_, false);
  const Tensor k_rows = st.k.tensor().view({N, H_ * qk()});
  for (int64_t h = 0; h < H_; ++h) ops::copy_columns(k_rows, h * qk() + nope_, k_pe, 0, rope_, false);

  st.o = buffer({mb.B, mb.T, H_, vdim_});
  st.lse = stats_buffer({mb.B, H_, mb.T});
  ops::attention_forward(st.o, st.lse, st.q, st.k, st.v, float(1.0 / std::sqrt(double(qk()))));
  ops::linear_forward(y, st.o.tensor().view({N, H_ * vdim_}), w_o_.value);
}

void Mla::backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) {
  const int64_t N = mb.tokens_count(), NH = N * H_;
  const Shape q_heads{mb.B, mb.T, H_, qk()};
  Saved& st = saved_.at(mb.id);
  st.dy = buffer({N, dim_});
  ops::copy(st.dy, dy);

  Buffer d_o = buffer({mb.B, mb.T, H_, vdim_});
  ops::linear_backward_input(d_o.tensor().view({N, H_ * vdim_}), dy, w_o_.value);
  Buffer dQ = buffer(q_heads), dK = buffer(q_heads), dV = buffer({mb.B, mb.T, H_, vdim_});
  ops::attention_backward(dQ, dK, dV, d_o, st.o, st.lse, st.q, st.k, st.v, float(1.0 / std::sqrt(double(qk()))));

  // Keys/values: per-head [k_nope, v] gradients, and the shared rotary key summed over heads.
  st.dkv = buffer({NH, nope_ + vdim_});
  ops::copy_columns(st.dkv, 0, dK.tensor().view({NH, qk()}), 0, nope_, false);
  ops::copy_columns(st.dkv, nope_, dV.tensor().view({NH, vdim_}), 0, vdim_, false);
  Buffer dk_pe = buffer({N, rope_});
  const Tensor dk_rows = dK.tensor().view({N, H_ * qk()});
  for (int64_t h = 0; h < H_; ++h) ops::copy_columns(dk_pe, 0, dk_rows, h * qk() + nope_, rope_, h > 0);
  const Tensor dk_pe4 = dk_pe.tensor().view({mb.B, mb.T, 1, rope_});
  ops::rope_backward(dk_pe4, dk_pe4, theta_);
  st.dcn = buffer({N, kv_rank_});
  ops::linear_backward_input(st.dcn, st.dkv.tensor().view({N, H_ * (nope_ + vdim_)}), w_ukv_.value);
  Buffer dc = buffer({N, kv_rank_});
  kv_norm_.backward_input(dc, st.dcn, st.c, st.rstd_c);
  st.dckv = buffer({N, kv_rank_ + rope_});
  ops::copy_columns(st.dckv, 0, dc, 0, kv_rank_, false);
  ops::copy_columns(st.dckv, kv_rank_, dk_pe, 0, rope_, false);

  // Queries: undo the rotation of the rotary part.
  st.dq = buffer({N, H_ * qk()});
  const Tensor dq2 = st.dq.tensor().view({NH, qk()});
  ops::copy(st.dq, dQ.tensor().view({N, H_ * qk()}));
  Buffer dpe = buffer({NH, rope_});
  ops::copy_columns(dpe, 0, dq2, nope_, rope_, false);
  const Tensor dpe4 = dpe.tensor().view({mb.B, mb.T, H_, rope_});
  ops::rope_backward(dpe4, dpe4, theta_);
  ops::copy_columns(dq2, nope_, dpe, 0, rope_, false);

  // dn = dckv W_dkv + (dq W_q | dcq W_dq)
  st.dn = buffer({N, dim_});
  Buffer part = buffer({N, dim_});
  ops::linear_backward_input(st.dn, st.dckv, w_dkv_.value);
  if (q_rank_ > 0) {
    st.dcqn = buffer({N, q_rank_});
    st.dcq = buffer({N, q_rank_});
    ops::linear_backward_input(st.dcqn, st.dq, w_uq_.value);
    q_norm_.backward_input(st.dcq, st.dcqn, st.cq, st.rstd_q);
    ops::linear_backward_input(part, st.dcq, w_dq_.value);
  } else {
    ops::linear_backward_input(part, st.dq, w_q_.value);
  }
  ops::add_inplace(st.dn, part);
  norm_.backward_input(dx, st.dn, st.x, st.rstd);
}

void Mla::backward_weight(const MicroBatch& mb) {
  const int64_t N = mb.tokens_count();
  Saved& st = saved_.at(mb.id);
  ops::linear_backward_weight(w_o_.grad, st.dy, st.o.tensor().view({N, H_ * vdim_}));
  ops::linear_backward_weight(w_ukv_.grad, st.dkv.tensor().view({N, H_ * (nope_ + vdim_)}), st.cn);
  kv_norm_.backward_weight(st.dcn, st.c, st.rstd_c);
  ops::linear_backward_weight(w_dkv_.grad, st.dckv, st.n);
  if (q_rank_ > 0) {
    ops::linear_backward_weight(w_uq_.grad, st.dq, st.cqn);
    q_norm_.backward_weight(st.dcqn, st.cq, st.rstd_q);
    ops::linear_backward_weight(w_dq_.grad, st.dcq, st.n);
  } else {
    ops::linear_backward_weight(w_q_.grad, st.dq, st.n);
  }
  norm_.backward_weight(st.dn, st.x, st.rstd);
  saved_.drop(mb.id);
}

}  // namespace bk
