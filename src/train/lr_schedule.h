// Learning-rate schedules: linear warmup, then cosine decay to a floor, step decay (the mHC
// paper's: x0.316 at 80% and x0.1 at 90% of the steps), or constant.
#pragma once
#include <cstdint>

#include "config/config.h"

namespace bk {

// lr for optimizer step `step` (1-based) of `total_steps`.
double learning_rate(const OptimizerConfig& opt, int64_t step, int64_t total_steps);

}  // namespace bk
