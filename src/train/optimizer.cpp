#include "train/optimizer.h"

#include <cmath>
#include <vector>

#include "kernels/ops.h"

namespace bk {

AdamW::AdamW(const OptimizerConfig& cfg, ParamList params) : cfg_(cfg), params_(std::move(params)) {
  for (Param* p : params_) {  // f32 moments next to the weights
    m_.emplace_back(p->value.shape(), DType::f32, p->value.device());
    v_.emplace_back(p->value.shape(), DType::f32, p->value.device());
  }
}

double AdamW::grad_norm() const {
  std::vector<Tensor> grads;
  for (Param* p : params_) grads.push_back(p->grad);
  double sum = 0;
  for (double s : ops::sum_squares_many(grads)) sum += s;  // in parameter order
  return std::sqrt(sum);
}

void AdamW::step(double lr, double clip_scale) {
  ++t_;
  AdamWStep s;
  s.lr = float(lr);
  s.beta1 = float(cfg_.beta1);
  s.beta2 = float(cfg_.beta2);
  s.eps = float(cfg_.eps);
  s.grad_scale = float(clip_scale);
  s.step = t_;
  std::vector<Tensor> w, g, m, v;
  std::vector<float> decay;
  for (size_t i = 0; i < params_.size(); ++i) {
    w.push_back(params_[i]->weights());
    g.push_back(params_[i]->grad);
    m.push_back(m_[i]);
    v.push_back(v_[i]);
    decay.push_back(params_[i]->decay ? float(cfg_.weight_decay) : 0.0f);
  }
  ops::adamw_update_many(w, g, m, v, decay, s);  // one launch on the GPU
  for (Param* p : params_) p->refresh();         // mixed precision: the bf16 copies of the masters
}

std::vector<std::pair<std::string, Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back(params_[i]->name + ".exp_avg", m_[i].tensor());
    out.emplace_back(params_[i]->name + ".exp_avg_sq", v_[i].tensor());
  }
  return out;
}

void AdamW::zero_grad() {
  for (Param* p : params_) p->grad.zero();
}

double clip_scale(double grad_norm, double max_norm) {
  if (max_norm <= 0 || !(grad_norm > max_norm)) return 1.0;
  return max_norm / (grad_norm + 1e-6);
}

}  // namespace bk
