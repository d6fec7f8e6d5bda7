// StepGuard: what the trainer does with a step whose numbers look wrong (docs/metrics.md).
//
// - Non-finite loss or gradient norm (NaN/inf): with training.skip_nonfinite_updates the update
//   is skipped (no optimizer step, no MoE bias update; the step's data is consumed and the step
//   counts), a warning names the step, and skipped_updates counts it; more than
//   training.max_consecutive_skips skips in a row, or any with skipping off, stop the run with
//   an error.
// - Loss spike: a finite loss above training.loss_spike_factor x the mean of the previous (up to
//   kSpikeWindow) finite losses, once kSpikeMinHistory of them exist, logs a warning (the update
//   is applied). 0 disables the check.
// - training.debug_nan_at_step: makes that step's gradients NaN, to exercise the above.
#pragma once
#include <cstdint>
#include <deque>
#include <vector>

#include "config/config.h"

namespace bk {

struct Param;

class StepGuard {
 public:
  static constexpr int kSpikeWindow = 50;
  static constexpr int kSpikeMinHistory = 10;

  explicit StepGuard(const TrainingConfig& t);

  // After the backward of `step`: when step == training.debug_nan_at_step, writes NaN into the
  // first gradient element of every parameter (CPU gradients only).
  void maybe_poison_gradients(int64_t step, const std::vector<Param*>& params) const;

  // Whether the update of `step` is applied (see above); throws bk::Error when the run must stop.
  bool admit(int64_t step, double loss, double grad_norm);

  // A spike warning was logged for this step (the last admit()).
  bool last_was_spike() const { return last_spike_; }
  // Mean of the loss history the next spike check compares with (0 when empty).
  double running_mean() const;
  int64_t skipped() const { return skipped_; }
  // Restored from a checkpoint's state.json: skips before the resume count too.
  void set_skipped(int64_t n) { skipped_ = n; }

 private:
  double spike_factor_;
  bool skip_nonfinite_;
  int64_t max_consecutive_;
  int64_t debug_nan_step_;
  std::deque<double> history_;
  int64_t skipped_ = 0, consecutive_ = 0;
  bool last_spike_ = false;
};

}  // namespace bk
