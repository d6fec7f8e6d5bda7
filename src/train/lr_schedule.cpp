#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace bk {

double learning_rate(const OptimizerConfig& opt, int64_t step, int64_t total_steps) {
  const LrSchedule& s = opt.schedule;
  if (step <= s.warmup_steps) return opt.lr * double(step) / double(s.warmup_steps);
  if (s.kind == "constant") return opt.lr;
  if (s.kind == "cosine") {
    const double span = double(std::max<int64_t>(1, total_steps - s.warmup_steps));
    const double progress = std::min(1.0, double(step - s.warmup_steps) / span);
    const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
    return opt.lr * (s.min_lr_ratio + (1.0 - s.min_lr_ratio) * cosine);
  }
  // step decay: the factor of the last decay point reached
  double factor = 1.0;
  for (size_t i = 0; i < s.decay_at.size(); ++i)
    if (double(step) >= s.decay_at[i] * double(total_steps)) factor = s.decay_factors[i];
  return opt.lr * factor;
}

}  // namespace bk
