#include "train/step_guard.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "model/param.h"

namespace bk {

StepGuard::StepGuard(const TrainingConfig& t)
    : spike_factor_(t.loss_spike_factor),
      skip_nonfinite_(t.skip_nonfinite_updates),
      max_consecutive_(t.max_consecutive_skips),
      debug_nan_step_(t.debug_nan_at_step) {}

void StepGuard::maybe_poison_gradients(int64_t step, const std::vector<Param*>& params) const {
  if (debug_nan_step_ <= 0 || step != debug_nan_step_) return;
  for (Param* p : params) {
    if (p->grad.numel() == 0) continue;
    // The first element, through a host copy (a debug hook: the GPU's gradients too).
    Buffer host = p->grad.to_device(Device::cpu);
    if (host.dtype() == DType::f32) host.ptr<float>()[0] = std::numeric_limits<float>::quiet_NaN();
    else if (host.dtype() == DType::f64) host.ptr<double>()[0] = std::numeric_limits<double>::quiet_NaN();
    p->grad.upload(host);
  }
  spdlog::warn("step {}: training.debug_nan_at_step: gradients set to NaN", step);
}

double StepGuard::running_mean() const {
  double sum = 0;
  for (double x : history_) sum += x;
  return history_.empty() ? 0.0 : sum / double(history_.size());
}

bool StepGuard::admit(int64_t step, double loss, double grad_norm) {
  last_spike_ = false;
  if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
    const std::string what = fmt::format("step {}: {} is {}", step, std::isfinite(loss) ? "gradient norm" : "training loss",
                                          std::isfinite(loss) ? grad_norm : loss);
    BK_CHECK(skip_nonfinite_, "{}; lower optimizer.lr or raise warmup (or set training.skip_nonfinite_updates: "
             "true to skip such updates)", what);
    ++skipped_;
    ++consecutive_;
    BK_CHECK(consecutive_ <= max_consecutive_,
             "{}: {} updates in a row had non-finite loss or gradients (training.max_consecutive_skips = {}); "
             "lower optimizer.lr or raise warmup", what, consecutive_, max_consecutive_);
    spdlog::warn("{}: update skipped (no optimizer step; {} skipped so far)", what, skipped_);
    return false;
  }
  consecutive_ = 0;
  if (spike_factor_ > 0 && int64_t(history_.size()) >= kSpikeMinHistory) {
    const double mean = running_mean();
    if (loss > spike_factor_ * mean) {
      last_spike_ = true;
      spdlog::warn("step {}: loss spike: {:.4f} is {:.2f}x the mean {:.4f} of the previous {} steps "
                   "(training.loss_spike_factor = {})", step, loss, loss / mean, mean, history_.size(), spike_factor_);
    }
  }
  history_.push_back(loss);
  if (int64_t(history_.size()) > kSpikeWindow) history_.pop_front();
  return true;
}

}  // namespace bk
