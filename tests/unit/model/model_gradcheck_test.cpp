// Whole-model gradient check in fp64: for every parameter tensor, the directional derivative
// along a random direction by central finite differences equals <gradient, direction>. Covers
// every layer's forward/backward_input/backward_weight together, for each connector mode, with
// the connector parameters moved off their (baseline-equivalent) initialisation.
#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.h"
#include "model/model.h"

namespace bk {
namespace {

struct Data {
  std::vector<int32_t> in, tgt;
};

// The training objective: mean cross-entropy plus the MoE balance losses. A forward with keep
// set counts the balance loss into the MoE statistics, which end_step returns (and resets).
double objective(Model& m, const Data& d, int B, int T) {
  MicroBatch mb{1, B, T, d.in.data(), d.tgt.data(), 1.0f, true};
  double loss = m.forward(mb) / double(B * T);
  for (const MoeStats& s : m.end_step(0.0)) loss += s.balance_loss;
  return loss + m.config().mtp.weight * m.take_mtp_loss();
}

// "<residual mode>[+mla][+mlaq][+moe][+mtp]"
ModelConfig config_for(const std::string& variant) {
  ModelConfig c;
  c.vocab_size = 37;
  c.dim = 16;
  c.n_layers = 2;
  c.n_heads = 2;
  c.ffn_dim = 24;
  c.seq_len = 7;
  c.init_std = 0.3;  // large enough that every path carries signal
  c.residual.mode = variant.substr(0, variant.find('+'));
  c.residual.streams = 3;
  c.residual.sinkhorn_iters = 4;
  c.residual.alpha_init = 0.5;
  c.residual.phi_init_std = 0.2;
  if (variant.find("+mla") != std::string::npos) {
    c.attention = "mla";
    c.mla = MlaConfig{variant.find("+mlaq") != std::string::npos ? 6 : 0, 10, 4, 4, 6};
  }
  if (variant.find("+moe") != std::string::npos) {
    c.ffn = "moe";
    c.moe.first_dense_layers = 1;
    c.moe.routed_experts = 4;
    c.moe.shared_experts = 1;
    c.moe.top_k = 2;
    c.moe.moe_inter_dim = 8;
    c.moe.n_groups = 2;
    c.moe.topk_groups = 1;
    c.moe.route_scale = 1.5;
    c.moe.balance_loss_weight = 0.1;  // large, so its gradient path is checked too
  }
  if (variant.find("+mtp") != std::string::npos) {
    c.mtp.depth = 2;
    c.mtp.weight = 0.7;
  }
  return c;
}

class ModelGradcheck : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelGradcheck, EveryParameterMatchesFiniteDifferences) {
  const ModelConfig c = config_for(GetParam());
  const int B = 2, T = c.seq_len;

  Model m(c, 99);
  Rng rng(5, 5);
  for (Param* p : m.params()) {  // move norms and connector coefficients off their init
    if (p->value.shape().ndim == 1 || p->name.find("static") != std::string::npos) {
      float* v = p->value.ptr<float>();
      for (int64_t i = 0; i < p->value.numel(); ++i) v[i] += float(0.2 * rng.normal());
    }
  }
  m.place({DType::f64, Device::cpu});
  Data d;
  for (int i = 0; i < B * T; ++i) {
    d.in.push_back(int32_t(rng.next_u64() % c.vocab_size));
    d.tgt.push_back(i % 5 == 4 ? -1 : int32_t(rng.next_u64() % c.vocab_size));  // some ignored
  }

  MicroBatch mb{0, B, T, d.in.data(), d.tgt.data(), float(1.0 / (B * T)), true};
  m.forward(mb);
  m.backward(mb);
  m.end_step(0.0);  // reset the MoE counters (gamma 0: the bias stays)
  m.take_mtp_loss();

  const double eps = 1e-5;
  for (Param* p : m.params()) {
    double* v = p->value.ptr<double>();
    const double* g = p->grad.ptr<double>();
    std::vector<double> dir(p->value.numel());
    double analytic = 0;
    for (size_t i = 0; i < dir.size(); ++i) {
      dir[i] = rng.normal();
      analytic += g[i] * dir[i];
    }
    for (size_t i = 0; i < dir.size(); ++i) v[i] += eps * dir[i];
    const double up = objective(m, d, B, T);
    for (size_t i = 0; i < dir.size(); ++i) v[i] -= 2 * eps * dir[i];
    const double down = objective(m, d, B, T);
    for (size_t i = 0; i < dir.size(); ++i) v[i] += eps * dir[i];
    const double numeric = (up - down) / (2 * eps);
    // Central differences: O(eps^2) truncation plus O(1e-16 / eps) rounding, about 1e-10 here.
    EXPECT_NEAR(analytic, numeric, 1e-7 + 1e-6 * std::abs(numeric)) << p->name;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, ModelGradcheck,
                         ::testing::Values("baseline", "hc", "mhc", "baseline+mla", "baseline+mlaq",
                                           "baseline+moe", "mhc+mlaq+moe", "hc+mla+moe", "baseline+mtp",
                                           "mhc+mla+moe+mtp"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n) if (ch == '+') ch = '_';
                           return n;
                         });

}  // namespace
}  // namespace bk
