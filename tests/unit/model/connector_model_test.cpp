// hc and mhc models at initialisation compute what the baseline computes: the same loss and the
// same gradients for every shared weight (docs/mhc.md, "Initialisation"). And connector
// diagnostics on a hand-built probe.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "core/rng.h"
#include "model/connector_stats.h"
#include "model/model.h"
#include "model_testing.h"

namespace bk {
namespace {

ModelConfig config(const std::string& mode) { return testing::small_config(mode); }

struct Result {
  double loss;
  std::map<std::string, std::vector<float>> grads, values;
};

Result run(const ModelConfig& c) {
  const int B = 3, T = c.seq_len;
  Rng rng(77, 1);
  std::vector<int32_t> in(B * T), tgt(B * T);
  for (int i = 0; i < B * T; ++i) {
    in[i] = int32_t(rng.next_u64() % c.vocab_size);
    tgt[i] = int32_t(rng.next_u64() % c.vocab_size);
  }
  Model m(c, 2024);
  MicroBatch mb{0, B, T, in.data(), tgt.data(), 1.0f / float(B * T), true};
  Result r;
  r.loss = m.forward(mb) / (B * T);
  m.backward(mb);
  for (Param* p : m.params()) {
    const float* g = p->grad.ptr<float>();
    const float* v = p->value.ptr<float>();
    r.grads[p->name].assign(g, g + p->grad.numel());
    r.values[p->name].assign(v, v + p->value.numel());
  }
  return r;
}

using testing::rel_err;

class ConnectorInit : public ::testing::TestWithParam<std::string> {};

TEST_P(ConnectorInit, StartsAsTheBaseline) {
  const Result base = run(config("baseline"));
  const Result other = run(config(GetParam()));
  // fp32: sigmoid(-log 3) is 1/4 only to rounding, and the streams' gradients are summed in
  // another order; everything else is exact.
  EXPECT_NEAR(other.loss, base.loss, 1e-6 * base.loss);
  for (const auto& [name, g] : base.grads) {
    ASSERT_TRUE(other.grads.count(name)) << name << " missing from the " << GetParam() << " model";
    EXPECT_EQ(other.values.at(name), base.values.at(name)) << name << ": shared weights differ";
    EXPECT_LT(rel_err(other.grads.at(name), g), 1e-5) << name;
  }
  // The connectors add parameters of their own, named after the connector.
  const char* expected = GetParam() == "mhc" ? "layers.2.ffn_conn.phi" : "layers.2.ffn_conn.static_res";
  EXPECT_TRUE(other.grads.count(expected)) << expected;
}

TEST_P(ConnectorInit, RandomDynamicProjectionBreaksTheEquivalence) {
  // The check above must be able to fail: with a random projection the model differs.
  ModelConfig c = config(GetParam());
  c.residual.phi_init_std = 0.5;
  c.residual.alpha_init = 1.0;  // let the random dynamic terms show
  const Result base = run(config("baseline"));
  const Result other = run(c);
  EXPECT_GT(std::abs(other.loss - base.loss), 1e-4 * base.loss);
}

INSTANTIATE_TEST_SUITE_P(Modes, ConnectorInit, ::testing::Values("hc", "mhc"));

// A probe with known matrices: identity, and a 2 x 2 [[2, 0], [1, 1]] whose powers grow.
class FixedProbe : public ConnectorProbe {
 public:
  FixedProbe(std::vector<float> h) {
    c_.n = 2;
    c_.h_res = Buffer({1, 2, 2});
    c_.h_pre = Buffer({1, 2});
    c_.h_post = Buffer({1, 2});
    std::copy(h.begin(), h.end(), c_.h_res.ptr<float>());
    c_.h_pre.ptr<float>()[0] = c_.h_pre.ptr<float>()[1] = 0.5f;
    c_.h_post.ptr<float>()[0] = c_.h_post.ptr<float>()[1] = 1.0f;
  }
  const ConnectorCoefficients& probed() const override { return c_; }

 private:
  ConnectorCoefficients c_;
};

TEST(ConnectorStats, AmaxGainsOfKnownMatrices) {
  FixedProbe a({2, 0, 1, 1}), b({2, 0, 1, 1}), id({1, 0, 0, 1});
  ConnectorStats s = connector_stats({&a, &b, &id});
  // Single: rows sums |2|, |2| -> 2; column sums 3, 1 -> 3.
  EXPECT_DOUBLE_EQ(s.fwd_gain[0], 2);
  EXPECT_DOUBLE_EQ(s.bwd_gain[0], 3);
  EXPECT_DOUBLE_EQ(s.fwd_gain[2], 1);
  // Composite from 0 to the last: I * B * A = [[4, 0], [3, 1]]: rows 4, 4; columns 7, 1.
  EXPECT_DOUBLE_EQ(s.comp_fwd_gain[0], 4);
  EXPECT_DOUBLE_EQ(s.comp_bwd_gain[0], 7);
  EXPECT_DOUBLE_EQ(s.max_comp_bwd_gain, 7);
  EXPECT_DOUBLE_EQ(s.h_res_diag[0], 1.5);
  EXPECT_DOUBLE_EQ(s.row_err[0], 1);  // rows sum to 2
  EXPECT_DOUBLE_EQ(s.col_err[2], 0);
  EXPECT_DOUBLE_EQ(s.h_pre[0], 0.5);
}

}  // namespace
}  // namespace bk
