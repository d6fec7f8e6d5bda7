// Model-level invariants that need no oracle: gradient accumulation over micro-batches equals
// one large batch, micro-batches in flight with deferred weight gradients give the same
// gradients as running them one by one, causality, and deterministic initialisation.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "core/rng.h"
#include "model/layer_stack.h"
#include "model/model.h"
#include "model_testing.h"

namespace bk {
namespace {

ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 61;
  c.dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.ffn_dim = 48;
  c.seq_len = 12;
  return c;
}

using testing::grads;
using testing::make_mb;
using testing::random_tokens;
using testing::Tokens;
using testing::rel_err;

TEST(Model, GradientAccumulationEqualsOneBatch) {
  const ModelConfig c = tiny_config();
  const int B = 4, T = c.seq_len;
  Tokens t = random_tokens(B, T, c.vocab_size, 1);
  const float scale = 1.0f / float(B * T);

  Model whole(c, 42);
  double loss_whole = whole.forward(make_mb(0, t, 0, B, T, scale));
  whole.backward(make_mb(0, t, 0, B, T, scale));

  Model parts(c, 42);
  double loss_parts = 0;
  for (int i = 0; i < 2; ++i) {
    MicroBatch mb = make_mb(i, t, i * B / 2, B / 2, T, scale);
    loss_parts += parts.forward(mb);
    parts.backward(mb);
  }
  EXPECT_NEAR(loss_whole, loss_parts, 1e-5 * std::abs(loss_whole));
  auto gw = grads(whole), gp = grads(parts);
  ASSERT_EQ(gw.size(), gp.size());
  for (size_t i = 0; i < gw.size(); ++i)
    EXPECT_LT(rel_err(gp[i], gw[i]), 1e-5) << whole.params()[i]->name;  // fp32 sums in another order
}

TEST(Model, MicroBatchesInFlightWithDeferredWeightGradients) {
  const ModelConfig c = tiny_config();
  const int B = 2, T = c.seq_len;
  Tokens t = random_tokens(2 * B, T, c.vocab_size, 2);
  const float scale = 1.0f / float(2 * B * T);

  Model serial(c, 5);
  for (int i = 0; i < 2; ++i) {
    MicroBatch mb = make_mb(i, t, i * B, B, T, scale);
    serial.forward(mb);
    serial.backward(mb);
  }

  // Both forwards first, input gradients in reverse order, weight gradients last: the saved
  // state of each micro-batch must stay separate.
  Model pipelined(c, 5);
  MicroBatch mb0 = make_mb(0, t, 0, B, T, scale), mb1 = make_mb(1, t, B, B, T, scale);
  pipelined.forward(mb0);
  pipelined.forward(mb1);
  const auto& layers = pipelined.layers();
  const int64_t N = int64_t(B) * T;
  for (const MicroBatch* mb : {&mb1, &mb0}) backward_input_layers(layers, *mb, Buffer({N, 1}), 1);
  for (const MicroBatch* mb : {&mb0, &mb1}) backward_weight_layers(layers, *mb);

  // Each gradient is 0 + g0 + g1 in both runs: bitwise equal.
  auto gs = grads(serial), gp = grads(pipelined);
  for (size_t i = 0; i < gs.size(); ++i) EXPECT_EQ(gs[i], gp[i]) << serial.params()[i]->name;
}

TEST(Model, Causal) {
  const ModelConfig c = tiny_config();
  const int T = c.seq_len;
  Tokens t = random_tokens(1, T, c.vocab_size, 3);
  Model m(c, 9);
  auto losses_of = [&](const Tokens& tk) {
    // Per-position loss: run with all targets but one ignored.
    std::vector<double> out;
    for (int pos = 0; pos < T; ++pos) {
      Tokens one = tk;
      for (int i = 0; i < T; ++i)
        if (i != pos) one.tgt[i] = -1;
      MicroBatch mb{0, 1, T, one.in.data(), one.tgt.data(), 1.0f, false};
      out.push_back(m.forward(mb));
    }
    return out;
  };
  auto before = losses_of(t);
  const int changed = 7;
  t.in[changed] = (t.in[changed] + 1) % c.vocab_size;
  auto after = losses_of(t);
  for (int pos = 0; pos < changed; ++pos) EXPECT_EQ(before[pos], after[pos]) << "position " << pos;
  double diff = 0;
  for (int pos = changed; pos < T; ++pos) diff += std::abs(before[pos] - after[pos]);
  EXPECT_GT(diff, 0.0) << "changing a token changed no later loss";
}

TEST(Model, InitialisationIsDeterministicAndNamesAreUnique) {
  const ModelConfig c = tiny_config();
  Model a(c, 11), b(c, 11), other(c, 12);
  std::set<std::string> names;
  auto pa = a.params(), pb = b.params(), po = other.params();
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(names.insert(pa[i]->name).second) << "duplicate name " << pa[i]->name;
    const float* x = pa[i]->value.ptr<float>();
    const float* y = pb[i]->value.ptr<float>();
    EXPECT_TRUE(std::equal(x, x + pa[i]->value.numel(), y)) << pa[i]->name;
  }
  // A different seed changes every random matrix (norm weights are ones either way).
  for (size_t i = 0; i < pa.size(); ++i) {
    if (pa[i]->value.shape().ndim != 2) continue;
    EXPECT_NE(pa[i]->value.ptr<float>()[0], po[i]->value.ptr<float>()[0]) << pa[i]->name;
  }
  // Independent streams: two same-shape matrices of one layer are not copies of each other.
  EXPECT_NE(pa[2]->value.ptr<float>()[0], pa[3]->value.ptr<float>()[0]);
}

TEST(Model, LossAtInitialisationIsNearUniform) {
  // With std 0.02 weights the logits are near zero: loss ~ log(V), a check from first principles.
  const ModelConfig c = tiny_config();
  Tokens t = random_tokens(2, c.seq_len, c.vocab_size, 4);
  Model m(c, 13);
  MicroBatch mb{0, 2, c.seq_len, t.in.data(), t.tgt.data(), 1.0f, false};
  const double mean = m.forward(mb) / (2.0 * c.seq_len);
  EXPECT_NEAR(mean, std::log(double(c.vocab_size)), 0.05);
}

}  // namespace
}  // namespace bk
