// Selective recomputation (training.recompute): the rebuilt state must be the original's, so
// loss and every gradient are bit-identical to recompute: none, for each connector, dense and
// MLA + MoE, every block size; and the saved state between forward and backward shrinks.
#include <gtest/gtest.h>

#include "model/model.h"
#include "model/model_plan.h"
#include "model_testing.h"

namespace bk {
namespace {

using testing::grads;
using testing::make_mb;
using testing::random_tokens;
using testing::Tokens;

ModelConfig config(const std::string& residual, bool moe) {
  ModelConfig c = testing::small_config(residual, moe);
  c.residual.phi_init_std = 0.05;  // non-trivial coefficients, so a wrong rebuild shows
  return c;
}

struct Result {
  double loss = 0;
  std::vector<std::vector<float>> g;
  std::vector<MoeStats> moe;
};

// Two micro-batches in flight (both forwards, then both backwards), as a pipeline holds them.
Result step(const ModelConfig& c, const std::string& mode, int block) {
  Model m(c, 99);
  m.set_recompute(mode, block);
  const int B = 2, T = c.seq_len;
  const Tokens t = random_tokens(2 * B, T, c.vocab_size, 5);
  const MicroBatch mb0 = make_mb(0, t, 0, B, T, 0.01f), mb1 = make_mb(1, t, B, B, T, 0.01f);
  Result r;
  r.loss = m.forward(mb0) + m.forward(mb1);
  m.backward(mb1);
  m.backward(mb0);
  r.g = grads(m);
  r.moe = m.end_step(0.01);
  return r;
}

void expect_identical(const Result& a, const Result& b, const std::string& what) {
  EXPECT_EQ(a.loss, b.loss) << what;
  ASSERT_EQ(a.g.size(), b.g.size());
  for (size_t i = 0; i < a.g.size(); ++i) EXPECT_TRUE(a.g[i] == b.g[i]) << what << ": gradient " << i << " differs";
  ASSERT_EQ(a.moe.size(), b.moe.size());
  for (size_t i = 0; i < a.moe.size(); ++i)  // the re-run forward must not count loads twice
    EXPECT_EQ(a.moe[i].load, b.moe[i].load) << what << ": MoE loads of layer " << i;
}

TEST(Recompute, GradientsBitIdentical) {
  for (const std::string residual : {"mhc", "hc", "baseline"})
    for (bool moe : {false, true}) {
      const ModelConfig c = config(residual, moe);
      const Result ref = step(c, "none", 0);
      for (const std::string mode : {"mhc", "full"}) {
        if (mode == "mhc" && residual == "baseline") continue;
        for (int block : {0, 1, 2, 4}) {
          const std::string what = residual + (moe ? "+moe" : "") + " recompute " + mode + " block " +
                                   std::to_string(block);
          expect_identical(step(c, mode, block), ref, what);
        }
      }
    }
}

// The comparison above can fail: a rebuild from another input (here: a model with other
// coefficients) changes the gradients.
TEST(Recompute, ComparisonDetectsADifferentModel) {
  ModelConfig c = config("mhc", false);
  const Result ref = step(c, "none", 0);
  c.residual.phi_init_std = 0.06;
  const Result other = step(c, "mhc", 1);
  EXPECT_NE(other.g, ref.g);
}

TEST(Recompute, RejectsBadSettings) {
  Model baseline(config("baseline", false), 1);
  EXPECT_THROW(baseline.set_recompute("mhc", 0), Error);
  Model m(config("mhc", false), 1);
  EXPECT_THROW(m.set_recompute("mhc", 7), Error);  // 6 sublayers
  EXPECT_THROW(m.set_recompute("some", 0), Error);
  m.set_recompute("full", 6);
  EXPECT_EQ(m.recompute().blocks.size(), 1u);
  m.set_recompute("mhc", 4);  // 4 + 2
  EXPECT_EQ(m.recompute().blocks.size(), 2u);
}

}  // namespace
}  // namespace bk

namespace bk {
namespace {

// Bytes held between the forwards and the backwards of two micro-batches, and the peak.
struct Held {
  int64_t after_forward = 0, peak = 0;
};
Held held_bytes(const ModelConfig& c, const std::string& mode, int block) {
  Model m(c, 99);
  m.set_recompute(mode, block);
  const int B = 2, T = c.seq_len;
  const Tokens t = random_tokens(2 * B, T, c.vocab_size, 5);
  const MicroBatch mb0 = make_mb(0, t, 0, B, T, 0.01f), mb1 = make_mb(1, t, B, B, T, 0.01f);
  const int64_t base = host_tensor_bytes().live;
  reset_host_tensor_peak();
  m.forward(mb0);
  m.forward(mb1);
  Held h;
  h.after_forward = host_tensor_bytes().live - base;
  m.backward(mb1);
  m.backward(mb0);
  h.peak = host_tensor_bytes().peak - base;
  return h;
}

TEST(Recompute, HoldsLessState) {
  for (bool moe : {false, true}) {
    const ModelConfig c = config("mhc", moe);
    const Held none = held_bytes(c, "none", 0), mhc = held_bytes(c, "mhc", 1), full = held_bytes(c, "full", 1);
    std::printf("%s: held after 2 forwards: none %ld, mhc %ld, full %ld bytes; peak %ld, %ld, %ld\n",
                moe ? "mhc+moe" : "mhc", long(none.after_forward), long(mhc.after_forward), long(full.after_forward),
                long(none.peak), long(mhc.peak), long(full.peak));
    EXPECT_LT(mhc.after_forward, none.after_forward);
    EXPECT_LT(full.after_forward, mhc.after_forward);
    EXPECT_LT(full.peak, none.peak);
  }
}

}  // namespace
}  // namespace bk

namespace bk {
namespace {

// The activation accounting of `birkhoff plan` (model_plan.h) against the bytes the layers
// really hold between forward and backward (host_tensor_bytes): the same within 2% for every
// mode and block size (the rest is each buffer's rounding to 64 bytes), so the plan's memory
// figures, and what recomputation saves, are the code's.
TEST(Recompute, AccountingMatchesHeldBytes) {
  for (bool moe : {false, true}) {
    ModelConfig c = config("mhc", moe);
    c.seq_len = 32;
    const int B = 2;
    const ModelCounts counts = count_model(c);
    for (const auto& [mode, block] : std::vector<std::pair<std::string, int>>{
             {"none", 0}, {"mhc", 1}, {"mhc", 2}, {"mhc", 0}, {"full", 1}, {"full", 0}}) {
      Layout L;
      L.act_bytes = 4;
      L.micro_batch_size = B;
      L.recompute = mode;
      L.recompute_block = block;
      const double predicted = plan_stages(counts, c, L)[0].saved_bytes_per_microbatch;
      Model m(c, 3);
      m.set_recompute(mode, block);
      const Tokens t = random_tokens(B, c.seq_len, c.vocab_size, 9);
      MicroBatch warm = make_mb(1, t, 0, B, c.seq_len, 0.01f);
      warm.keep = false;  // fills the layers' caches (the collapse weights), which are not activations
      m.forward(warm);
      const int64_t base = host_tensor_bytes().live;
      m.forward(make_mb(0, t, 0, B, c.seq_len, 0.01f));
      const double held = double(host_tensor_bytes().live - base);
      EXPECT_NEAR(held / predicted, 1.0, 0.02) << (moe ? "moe " : "dense ") << mode << " block " << block
                                                << ": held " << held << " bytes, plan " << predicted;
    }
  }
}

}  // namespace
}  // namespace bk
