#include "model/hyper_connection.h"

#include <cmath>

#include "kernels/ops.h"

namespace bk {

namespace {
// A copy in the tensor's own dtype on `device`: in stream order on the same device, a
// synchronous transfer to the host (a probe's coefficients).
Buffer copy_of(Tensor t, Device device) {
  Buffer b = Buffer::uninitialized(t.shape, t.dtype, device);
  if (device == t.device) ops::copy(b, t);
  else b.upload(t);
  return b;
}
}  // namespace

HyperConnection::HyperConnection(std::string name, std::unique_ptr<Layer> f, const ResidualConfig& cfg,
                                 int64_t dim, int sublayer_index, float norm_eps)
    : name_(std::move(name)),
      f_(std::move(f)),
      mhc_(cfg.mode == "mhc"),
      n_(cfg.streams),
      dim_(dim),
      sinkhorn_iters_(cfg.sinkhorn_iters),
      sublayer_index_(sublayer_index),
      eps_(norm_eps),
      cfg_(cfg) {
  BK_CHECK(cfg.mode == "hc" || cfg.mode == "mhc", "{}: HyperConnection needs mode hc or mhc, got {}", name_, cfg.mode);
  BK_CHECK(n_ >= 2, "{}: {} needs at least 2 streams, got {}", name_, cfg.mode, n_);
  // Static coefficients, scales and biases take no weight decay; the projections do.
  if (mhc_) {
    const int64_t m = n_ * n_ + 2 * n_;
    proj_ = Param(name_ + ".phi", {m, n_ * dim_}, true);
    scale_ = Param(name_ + ".alpha", {3}, false);
    bias_ = Param(name_ + ".bias", {m}, false);
  } else {
    proj_ = Param(name_ + ".w", {n_ + 2, dim_}, true);
    scale_ = Param(name_ + ".scale", {3}, false);
    static_pre_ = Param(name_ + ".static_pre", {n_}, false);
    static_post_ = Param(name_ + ".static_post", {n_}, false);
    static_res_ = Param(name_ + ".static_res", {n_, n_}, false);
  }
  for (Param* p : {&proj_, &scale_, &bias_, &static_pre_, &static_post_, &static_res_}) p->full_precision = true;
}

ParamList HyperConnection::params() {
  ParamList p = mhc_ ? ParamList{&proj_, &scale_, &bias_}
                     : ParamList{&proj_, &scale_, &static_pre_, &static_post_, &static_res_};
  for (Param* q : f_->params()) p.push_back(q);
  return p;
}

// Initialisation (docs/mhc.md): with identical streams and a zero projection, every connector
// computes x + F(x) per stream, exactly the baseline.
void HyperConnection::init(uint64_t seed) {
  if (cfg_.phi_init_std > 0) proj_.init_normal(seed, cfg_.phi_init_std);  // own stream: its name
  scale_.fill(float(cfg_.alpha_init));
  if (mhc_) {
    float* b = bias_.value.ptr<float>();
    for (int64_t i = 0; i < n_; ++i) b[i] = float(-std::log(double(n_ - 1)));  // sigmoid = 1/n
    for (int64_t i = 0; i < n_; ++i) b[n_ + i] = 0.0f;                        // 2 sigmoid = 1
    const double d = cfg_.res_init_diag;
    const float diag = float(std::log(d * double(n_ - 1) / (1.0 - d)));
    for (int64_t i = 0; i < n_; ++i)
      for (int64_t j = 0; j < n_; ++j) b[2 * n_ + i * n_ + j] = i == j ? diag : 0.0f;
  } else {
    static_pre_.fill(0.0f);
    static_pre_.value.ptr<float>()[sublayer_index_ % n_] = 1.0f;
    static_post_.fill(1.0f);
    static_res_.fill(0.0f);
    for (int64_t i = 0; i < n_; ++i) static_res_.value.ptr<float>()[i * n_ + i] = 1.0f;
  }
}

void HyperConnection::coefficients(Saved& st, int64_t N) {
  st.h_pre = stats_buffer({N, n_});
  st.h_post = stats_buffer({N, n_});
  st.h_res = stats_buffer({N, n_, n_});
  if (mhc_) {
    st.res_logits = stats_buffer({N, n_, n_});
    st.rinv = stats_buffer({N});
    st.z = stats_buffer({N, n_ * n_ + 2 * n_});
    ops::mhc_coeffs_forward(st.h_pre, st.h_post, st.res_logits, st.rinv, st.z, st.x, proj_.value,
                            scale_.value, bias_.value, eps_);
    ops::sinkhorn_forward(st.h_res, st.res_logits, sinkhorn_iters_);
  } else {
    st.rinv = stats_buffer({N, n_});
    st.z = stats_buffer({N, n_, n_ + 2});
    ops::hc_coeffs_forward(st.h_pre, st.h_post, st.h_res, st.rinv, st.z, st.x, proj_.value, scale_.value,
                           static_pre_.value, static_post_.value, static_res_.value, eps_);
  }
}

void HyperConnection::forward(const MicroBatch& mb, Tensor x, Tensor y) {
  const int64_t N = mb.tokens_count();
  Saved local;
  Saved& st = mb.saves() ? saved_.put(mb.id) : local;
  st.x = copy_of(x.view({N, n_, dim_}), fmt_.device);
  coefficients(st, N);

  Buffer u = buffer({N, dim_});
  ops::stream_pre_forward(u, st.x, st.h_pre);
  st.f = buffer({N, dim_});
  f_->forward(mb, u, st.f);
  ops::stream_post_res_forward(y.view({N, n_, dim_}), st.x, st.f, st.h_res, st.h_post);

  if (mb.probe) {
    probe_.n = n_;
    probe_.h_pre = copy_of(st.h_pre, Device::cpu);
    probe_.h_post = copy_of(st.h_post, Device::cpu);
    probe_.h_res = copy_of(st.h_res, Device::cpu);
  }
  if (light_ && mb.saves()) {  // keep F's output only; rebuild() restores the rest
    Buffer f = std::move(st.f);
    st = Saved{};
    st.f = std::move(f);
  }
}

// The same operations on the same input as forward, so the rebuilt state has the same bits.
void HyperConnection::rebuild(const MicroBatch& mb, Tensor x, Tensor y) {
  BK_CHECK(light_, "{}: rebuild() without a light forward", name_);
  const int64_t N = mb.tokens_count();
  Saved& st = saved_.at(mb.id);
  st.x = copy_of(x.view({N, n_, dim_}), fmt_.device);
  coefficients(st, N);
  ops::stream_post_res_forward(y.view({N, n_, dim_}), st.x, st.f, st.h_res, st.h_post);
}

void HyperConnection::backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) {
  const int64_t N = mb.tokens_count();
  Saved& st = saved_.at(mb.id);
  const Tensor dX = dx.view({N, n_, dim_});

  // Through the merged post/res apply: dX gets H_res^T dY here; the rest is added below.
  Buffer df = buffer({N, dim_});
  st.dh_res = stats_buffer({N, n_, n_});
  st.dh_post = stats_buffer({N, n_});
  ops::stream_post_res_backward(dX, df, st.dh_res, st.dh_post, dy.view({N, n_, dim_}), st.x, st.f,
                                st.h_res, st.h_post);
  // Through F and the pre apply.
  Buffer du = buffer({N, dim_});
  f_->backward_input(mb, df, du);
  Buffer dx_part = buffer({N, n_, dim_});
  st.dh_pre = stats_buffer({N, n_});
  ops::stream_pre_backward(dx_part, st.dh_pre, du, st.x, st.h_pre);
  ops::add_inplace(dX, dx_part);
  // Through the coefficients, which depend on X too.
  if (mhc_) {
    Buffer dres_logits = stats_buffer({N, n_, n_});
    ops::sinkhorn_backward(dres_logits, st.dh_res, st.res_logits, sinkhorn_iters_);
    st.dlogits = stats_buffer({N, n_ * n_ + 2 * n_});
    ops::mhc_coeffs_backward_input(dx_part, st.dlogits, st.dh_pre, st.dh_post, dres_logits, st.h_pre,
                                   st.h_post, st.x, proj_.value, scale_.value, st.rinv, st.z);
  } else {
    st.dlogits = stats_buffer({N, n_, n_ + 2});
    ops::hc_coeffs_backward_input(dx_part, st.dlogits, st.dh_pre, st.dh_post, st.dh_res, st.x, proj_.value,
                                  scale_.value, st.rinv, st.z);
  }
  ops::add_inplace(dX, dx_part);
}

void HyperConnection::backward_weight(const MicroBatch& mb) {
  Saved& st = saved_.at(mb.id);
  if (mhc_) {
    ops::mhc_coeffs_backward_weight(proj_.grad, scale_.grad, bias_.grad, st.dlogits, st.x, scale_.value,
                                    st.rinv, st.z);
  } else {
    ops::hc_coeffs_backward_weight(proj_.grad, scale_.grad, static_pre_.grad, static_post_.grad,
                                   static_res_.grad, st.dlogits, st.dh_pre, st.dh_post, st.dh_res, st.x,
                                   st.rinv, st.z);
  }
  f_->backward_weight(mb);
  saved_.drop(mb.id);
}

}  // namespace bk
