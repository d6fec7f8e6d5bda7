// AdamW over a parameter list: fp32 moments per parameter on the parameter's device, updating
// the full-precision weights (Param::weights(): the f32 master under mixed precision, whose bf16
// working copy is refreshed after the update), decoupled weight decay (skipped for
// parameters marked decay = false: norms, biases, static connector coefficients), and global
// grad-norm clipping folded into the update as a gradient scale.
#pragma once
#include <vector>

#include "config/config.h"
#include "core/buffer.h"
#include "model/param.h"

namespace bk {

class AdamW {
 public:
  AdamW(const OptimizerConfig& cfg, ParamList params);

  // sqrt of the sum of squared gradients over all parameters, in parameter order.
  double grad_norm() const;
  // One update with learning rate lr; gradients are scaled by clip_scale first.
  void step(double lr, double clip_scale);
  void zero_grad();
  int64_t steps_taken() const { return t_; }

  // The moments under checkpoint names "<param>.exp_avg" and "<param>.exp_avg_sq" (views), and
  // the step count, for saving and restoring.
  std::vector<std::pair<std::string, Tensor>> state_tensors() const;
  void set_steps_taken(int64_t t) { t_ = t; }

 private:
  OptimizerConfig cfg_;
  ParamList params_;
  std::vector<Buffer> m_, v_;
  int64_t t_ = 0;
};

// The gradient scale that clips a norm to max_norm (1 when max_norm <= 0 or below it).
double clip_scale(double grad_norm, double max_norm);

}  // namespace bk
