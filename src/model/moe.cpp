#include "model/moe.h"

#include <algorithm>
#include <cmath>

#include "kernels/ops.h"
#include "parallel/self_communicator.h"

namespace bk {

Moe::Moe(const std::string& prefix, int64_t dim, const MoeConfig& cfg, float norm_eps, Communicator* ep)
    : prefix_(prefix),
      dim_(dim),
      cfg_(cfg),
      norm_(prefix + ".norm", dim, norm_eps),
      router_(prefix + ".router.weight", {cfg.routed_experts, dim}, true),
      bias_({cfg.routed_experts}),
      step_load_(size_t(cfg.routed_experts), 0.0) {
  if (!ep) self_ = std::make_unique<SelfCommunicator>();
  ep_ = ep ? ep : self_.get();
  owned_ = owned_experts(cfg.routed_experts, ep_->rank(), ep_->size());
  if (cfg.shared_experts > 0)
    shared_ = SwiGluMlp(prefix + ".shared", dim, int64_t(cfg.shared_experts) * cfg.moe_inter_dim);
  // Global expert ids in the names: a checkpoint does not depend on the ep layout.
  for (int64_t e = owned_.first; e < owned_.first + owned_.count; ++e) {
    experts_.emplace_back(prefix + ".experts." + std::to_string(e), dim, cfg.moe_inter_dim);
    for (Param* p : experts_.back().params()) p->expert = true;
  }
}

ParamList Moe::params() {
  ParamList p{&norm_.weight, &router_};
  if (cfg_.shared_experts > 0)
    for (Param* q : shared_.params()) p.push_back(q);
  for (SwiGluMlp& e : experts_)
    for (Param* q : e.params()) p.push_back(q);
  return p;
}

void Moe::init(uint64_t seed, double std, double out_std) {
  router_.init_normal(seed, std);
  if (cfg_.shared_experts > 0) shared_.init(seed, std, out_std);
  for (SwiGluMlp& e : experts_) e.init(seed, std, out_std);
}

void Moe::set_format(const ActivationFormat& f) {
  // The bias is a statistic-like f32 (f64) vector next to the scores, on their device.
  bias_ = bias_.to(f.stats(), f.device);
  Layer::set_format(f);
}

void Moe::forward(const MicroBatch& mb, Tensor x, Tensor y) {
  const int64_t N = mb.tokens_count(), E = cfg_.routed_experts, K = cfg_.top_k, F = cfg_.moe_inter_dim;
  Saved local;
  Saved& st = mb.saves() ? saved_.put(mb.id) : local;
  st.x = buffer({N, dim_});
  ops::copy(st.x, x);
  st.rstd = stats_buffer({N});
  st.n = buffer({N, dim_});
  norm_.forward(st.n, st.rstd, x);

  // Route (logits, scores and gates in f32 also when activations are bf16).
  Buffer logits = stats_buffer({N, E});
  ops::linear_forward(logits, st.n, router_.value);
  st.scores = stats_buffer({N, E});
  st.gates = stats_buffer({N, K});
  st.idx = index_buffer({N, K});
  ops::moe_router_forward(st.idx, st.gates, st.scores, logits, bias_, cfg_.n_groups, cfg_.topk_groups,
                          float(cfg_.route_scale));
  st.rows = index_buffer({N, K});
  st.offsets = index_buffer({E + 1});
  ops::moe_plan(st.rows, st.offsets, st.idx);
  // The expert loads size the exchange and the per-expert GEMMs: the host needs them (on the
  // GPU, the one synchronisation of the MoE forward).
  st.offsets_host = st.offsets.to_device(Device::cpu);

  // Rows grouped by expert go to the experts' ranks, each local expert runs on its contiguous
  // rows, the outputs come back in plan order and return to token order weighted by the gates.
  Buffer x_perm = buffer({N * K, dim_});
  ops::moe_permute(x_perm, st.n, st.rows);
  st.exchange = ExpertExchange(*ep_, E, st.offsets_host.ptr<int32_t>(), fmt_.device);
  const ExpertExchange& xc = st.exchange;
  const int64_t L = xc.local_rows();
  st.x_loc = buffer({L, dim_});
  xc.dispatch(st.x_loc, x_perm);
  st.gate_p = buffer({L, F});
  st.up_p = buffer({L, F});
  st.h_p = buffer({L, F});
  Buffer y_loc = buffer({L, dim_});
  for (int i = 0; i < int(experts_.size()); ++i) {
    auto rows = [&](const Buffer& b) { return expert_rows(b, xc, i); };
    if (xc.local_begin(i) == xc.local_end(i)) continue;
    experts_[i].forward(rows(st.x_loc), rows(st.gate_p), rows(st.up_p), rows(st.h_p), rows(y_loc));
  }
  st.y_perm = buffer({N * K, dim_});
  xc.combine(st.y_perm, y_loc);
  ops::moe_unpermute(y, st.y_perm, st.gates, st.rows);

  if (cfg_.shared_experts > 0) {
    const int64_t S = int64_t(cfg_.shared_experts) * F;
    st.s_gate = buffer({N, S});
    st.s_up = buffer({N, S});
    st.s_h = buffer({N, S});
    Buffer ys = buffer({N, dim_});
    shared_.forward(st.n, st.s_gate, st.s_up, st.s_h, ys);
    ops::add_inplace(y, ys);
  }

  if (mb.counts()) {  // a training micro-batch: count its loads for balancing and the metrics
    const int32_t* off = st.offsets_host.ptr<int32_t>();
    for (int e = 0; e < E; ++e) step_load_[e] += off[e + 1] - off[e];
    if (cfg_.balance_loss_weight > 0)
      step_balance_ += double(N) * ops::moe_balance_loss_forward(st.scores, st.idx, mb.B,
                                                                 float(cfg_.balance_loss_weight));
    step_tokens_ += N;
  }
}

void Moe::backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) {
  const int64_t N = mb.tokens_count(), E = cfg_.routed_experts, K = cfg_.top_k, F = cfg_.moe_inter_dim;
  Saved& st = saved_.at(mb.id);
  st.dy = buffer({N, dim_});
  ops::copy(st.dy, dy);
  st.dn = buffer({N, dim_});
  Buffer part = buffer({N, dim_});

  // Routed experts: back through the unpermute (to the experts' outputs and the gates), to the
  // experts' ranks, through each local expert, back to this rank, and through the permute.
  Buffer dy_perm = buffer({N * K, dim_});
  Buffer dgates = stats_buffer({N, K});
  ops::moe_unpermute_backward(dy_perm, dgates, dy, st.y_perm, st.gates, st.rows);
  const ExpertExchange& xc = st.exchange;
  const int64_t L = xc.local_rows();
  st.dy_loc = buffer({L, dim_});
  xc.dispatch(st.dy_loc, dy_perm);
  st.dgate_p = buffer({L, F});
  st.dup_p = buffer({L, F});
  Buffer dx_loc = buffer({L, dim_});
  Buffer dh_tmp = buffer({L, F}), dx_tmp = buffer({L, dim_});
  for (int i = 0; i < int(experts_.size()); ++i) {
    if (xc.local_begin(i) == xc.local_end(i)) continue;
    auto rows = [&](const Buffer& b) { return expert_rows(b, xc, i); };
    experts_[i].backward_input(rows(st.dy_loc), rows(st.gate_p), rows(st.up_p), rows(st.dgate_p), rows(st.dup_p),
                               rows(dx_loc), rows(dh_tmp), rows(dx_tmp));
  }
  Buffer dx_perm = buffer({N * K, dim_});
  xc.combine(dx_perm, dx_loc);
  ops::moe_permute_backward(st.dn, dx_perm, st.rows);

  // Router: gates (and the balance loss) -> logits -> its input.
  Buffer dscores;
  if (cfg_.balance_loss_weight > 0) {
    dscores = stats_buffer({N, E});
    dscores.zero();  // the balance loss's backward accumulates
    ops::moe_balance_loss_backward(dscores, st.scores, st.idx, mb.B, float(cfg_.balance_loss_weight),
                                   mb.loss_scale * float(N));
  }
  st.dlogits = buffer({N, E});
  ops::moe_router_backward(st.dlogits, dgates, dscores, st.scores, st.idx, float(cfg_.route_scale));
  ops::linear_backward_input(part, st.dlogits, router_.value);
  ops::add_inplace(st.dn, part);

  if (cfg_.shared_experts > 0) {
    const int64_t S = int64_t(cfg_.shared_experts) * F;
    st.ds_gate = buffer({N, S});
    st.ds_up = buffer({N, S});
    Buffer dh = buffer({N, S}), tmp = buffer({N, dim_});
    shared_.backward_input(dy, st.s_gate, st.s_up, st.ds_gate, st.ds_up, part, dh, tmp);
    ops::add_inplace(st.dn, part);
  }
  norm_.backward_input(dx, st.dn, st.x, st.rstd);
}

void Moe::backward_weight(const MicroBatch& mb) {
  Saved& st = saved_.at(mb.id);
  for (int i = 0; i < int(experts_.size()); ++i) {
    if (st.exchange.local_begin(i) == st.exchange.local_end(i)) continue;
    auto rows = [&](const Buffer& b) { return expert_rows(b, st.exchange, i); };
    experts_[i].backward_weight(rows(st.x_loc), rows(st.h_p), rows(st.dy_loc), rows(st.dgate_p), rows(st.dup_p));
  }
  ops::linear_backward_weight(router_.grad, st.dlogits, st.n);
  if (cfg_.shared_experts > 0) shared_.backward_weight(st.n, st.s_h, st.dy, st.ds_gate, st.ds_up);
  norm_.backward_weight(st.dn, st.x, st.rstd);
  saved_.drop(mb.id);
}

MoeStats Moe::end_step(double gamma, Communicator* data) {
  if (data && data->size() > 1) {
    // Global loads (and balance-loss sums): every replica applies the same bias update.
    Buffer sums({int64_t(step_load_.size()) + 2}, DType::f64);
    double* p = sums.ptr<double>();
    std::copy(step_load_.begin(), step_load_.end(), p);
    p[step_load_.size()] = step_balance_;
    p[step_load_.size() + 1] = double(step_tokens_);
    data->all_reduce_sum(sums);
    std::copy(p, p + step_load_.size(), step_load_.begin());
    step_balance_ = p[step_load_.size()];
    step_tokens_ = int64_t(p[step_load_.size() + 1]);
  }
  MoeStats s;
  s.name = prefix_;
  s.load = step_load_;
  const double E = double(step_load_.size());
  double mean = 0, var = 0;
  for (double l : step_load_) mean += l / E;
  for (double l : step_load_) var += (l - mean) * (l - mean) / E;
  s.load_max = *std::max_element(step_load_.begin(), step_load_.end());
  s.load_min = *std::min_element(step_load_.begin(), step_load_.end());
  s.load_cv = mean > 0 ? std::sqrt(var) / mean : 0;
  s.balance_loss = step_tokens_ > 0 ? step_balance_ / double(step_tokens_) : 0;

  // Loss-free balancing: overloaded experts become less attractive, underloaded more. On the
  // host, then back in place: views of the bias (Model::state) stay valid.
  Buffer host({bias_.numel()}, bias_.dtype());
  host.upload(bias_);
  auto update = [&](auto* b) {
    for (size_t i = 0; i < step_load_.size(); ++i) {
      if (step_load_[i] > mean) b[i] -= decltype(b[0] + 0)(gamma);
      else if (step_load_[i] < mean) b[i] += decltype(b[0] + 0)(gamma);
    }
    s.bias_min = double(*std::min_element(b, b + bias_.numel()));
    s.bias_max = double(*std::max_element(b, b + bias_.numel()));
  };
  if (host.dtype() == DType::f64) update(host.ptr<double>());
  else update(host.ptr<float>());
  bias_.upload(host);

  std::fill(step_load_.begin(), step_load_.end(), 0.0);
  step_balance_ = 0;
  step_tokens_ = 0;
  return s;
}

}  // namespace bk
