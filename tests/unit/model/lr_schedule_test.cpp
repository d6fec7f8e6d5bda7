#include <gtest/gtest.h>

#include <cmath>

#include "train/lr_schedule.h"
#include "train/optimizer.h"

namespace bk {
namespace {

OptimizerConfig opt(const std::string& kind) {
  OptimizerConfig o;
  o.lr = 1.0;
  o.schedule.kind = kind;
  o.schedule.warmup_steps = 10;
  o.schedule.min_lr_ratio = 0.1;
  return o;
}

TEST(LrSchedule, LinearWarmup) {
  for (const char* kind : {"cosine", "step", "constant"}) {
    EXPECT_DOUBLE_EQ(learning_rate(opt(kind), 1, 100), 0.1) << kind;
    EXPECT_DOUBLE_EQ(learning_rate(opt(kind), 5, 100), 0.5) << kind;
    EXPECT_DOUBLE_EQ(learning_rate(opt(kind), 10, 100), 1.0) << kind;
  }
}

TEST(LrSchedule, CosineEndsAtFloorAndIsMonotone) {
  auto o = opt("cosine");
  EXPECT_NEAR(learning_rate(o, 100, 100), 0.1, 1e-12);
  // halfway through the decay: floor + (1 - floor) / 2
  EXPECT_NEAR(learning_rate(o, 55, 100), 0.55, 1e-12);
  for (int s = 11; s < 100; ++s) EXPECT_GE(learning_rate(o, s, 100), learning_rate(o, s + 1, 100));
}

TEST(LrSchedule, StepDecayAsInThePaper) {
  auto o = opt("step");  // defaults: x0.316 from 80%, x0.1 from 90%
  EXPECT_DOUBLE_EQ(learning_rate(o, 79, 100), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(o, 80, 100), 0.316);
  EXPECT_DOUBLE_EQ(learning_rate(o, 89, 100), 0.316);
  EXPECT_DOUBLE_EQ(learning_rate(o, 90, 100), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(o, 100, 100), 0.1);
}

TEST(Clip, ScaleBringsNormToMax) {
  EXPECT_EQ(clip_scale(0.5, 1.0), 1.0);
  EXPECT_EQ(clip_scale(5.0, 0.0), 1.0);  // disabled
  EXPECT_NEAR(clip_scale(4.0, 1.0) * 4.0, 1.0, 1e-6);
}

}  // namespace
}  // namespace bk
