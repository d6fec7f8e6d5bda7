// count_model (model/model_plan.h): the paper configs' parameter counts against the mHC paper's,
// and the analytic counts against a constructed Model (parameters, FLOPs per token).
#include <gtest/gtest.h>

#include <cmath>

#include "config/load.h"
#include "core/error.h"
#include "model/model.h"
#include "model/model_plan.h"

namespace bk {
namespace {

ModelConfig small_config(const std::string& residual) {
  ModelConfig c;
  c.vocab_size = 61;
  c.dim = 32;
  c.n_layers = 3;
  c.n_heads = 4;
  c.ffn_dim = 48;
  c.seq_len = 12;
  c.residual.mode = residual;
  c.residual.streams = 3;
  return c;
}

void expect_breakdown_sums(const ModelCounts& c) {
  EXPECT_EQ(c.total, c.embedding + c.head + c.attention + c.dense_ffn + c.moe_routed + c.moe_shared + c.moe_router +
                         c.connectors + c.norms + c.mtp);
  int64_t units = c.first_stage_params + c.last_stage_params;
  for (const SublayerCount& s : c.sublayers) units += s.params;
  EXPECT_EQ(c.total, units);
}

struct PaperModel {
  const char* config;
  double total, active;
};

TEST(ModelPlan, PaperConfigsMatchThePapersParameterCounts) {
  for (const PaperModel& p : {PaperModel{"paper-3b-mhc.yaml", 2.97e9, 612e6}, PaperModel{"paper-9b-mhc.yaml", 9.18e9, 1.66e9},
                              PaperModel{"paper-27b-mhc.yaml", 27.0e9, 4.14e9}}) {
    SCOPED_TRACE(p.config);
    const Config cfg = load_config(std::string(BK_SOURCE_DIR) + "/configs/" + p.config);
    const ModelCounts c = count_model(cfg.model);
    EXPECT_NEAR(double(c.total) / p.total, 1.0, 0.03) << c.total;
    EXPECT_NEAR(double(c.active) / p.active, 1.0, 0.03) << c.active;
    // The connectors are counted; they are well under 1% of the total.
    EXPECT_GT(c.connectors, 0);
    EXPECT_LT(double(c.connectors) / double(c.total), 0.01);
    expect_breakdown_sums(c);
    // Every stage layout the config names is valid.
    Layout L;
    L.pp = cfg.parallel.pp, L.ep = cfg.parallel.ep, L.dp = cfg.parallel.dp;
    EXPECT_NO_THROW(plan_stages(c, cfg.model, L));
  }
}

TEST(ModelPlan, CountsMatchTheConstructedDenseModel) {
  for (const std::string mode : {"baseline", "hc", "mhc"}) {
    SCOPED_TRACE(mode);
    const ModelConfig cfg = small_config(mode);
    const ModelCounts c = count_model(cfg);
    Model model(cfg, 1);
    EXPECT_EQ(c.total, model.num_params());
    EXPECT_EQ(c.matmul_active, model.num_matmul_params());
    EXPECT_DOUBLE_EQ(c.flops_per_token, model.flops_per_token());
    expect_breakdown_sums(c);
    EXPECT_EQ(c.active, c.total - c.embedding);  // dense: everything but the lookup
    EXPECT_FALSE(c.estimates);
  }
}

TEST(ModelPlan, StagesSplitTheSublayerList) {
  const ModelConfig cfg = small_config("mhc");  // 6 sublayers
  const ModelCounts c = count_model(cfg);
  Layout L;
  L.pp = 3, L.num_microbatches = 8, L.micro_batch_size = 2, L.act_bytes = 4;
  const auto stages = plan_stages(c, cfg, L);
  ASSERT_EQ(stages.size(), 3u);
  int64_t params = 0;
  for (size_t s = 0; s < stages.size(); ++s) {
    EXPECT_EQ(stages[s].first, int(2 * s));
    EXPECT_EQ(stages[s].end, int(2 * s + 2));
    EXPECT_EQ(stages[s].in_flight, 3 - int(s));  // 1F1B
    EXPECT_DOUBLE_EQ(stages[s].activation_bytes, stages[s].in_flight * stages[s].saved_bytes_per_microbatch);
    params += stages[s].params;
  }
  EXPECT_EQ(params, c.total);
  // Dense mha + mhc, f32: per token the first stage saves the token id, then per block
  // attention 6C + 1 + H, FFN 2C + 3F + 1, and per connector (n+1)C + 2n + 2n^2 + 1 + n^2 + 2n.
  const double C = cfg.dim, H = cfg.n_heads, F = cfg.ffn_dim, n = cfg.residual.streams;
  const double conn = (n + 1) * C + 2 * n + 2 * n * n + 1 + n * n + 2 * n;
  const double block = (6 * C + 1 + H) + (2 * C + 3 * F + 1) + 2 * conn;
  EXPECT_DOUBLE_EQ(stages[0].saved_bytes_per_microbatch, 4.0 * (1 + block) * 2 * cfg.seq_len);
  EXPECT_DOUBLE_EQ(stages[2].saved_bytes_per_microbatch, 4.0 * (block + 2 * C + cfg.vocab_size + 1 + 1) * 2 * cfg.seq_len);

  L.pp = 4;
  EXPECT_THROW(plan_stages(c, cfg, L), Error);
  L.pp = 0;
  EXPECT_THROW(plan_stages(c, cfg, L), Error);
}

TEST(ModelPlan, MoeAndMlaCountsByHand) {
  ModelConfig m = small_config("baseline");
  m.attention = "mla";
  m.ffn = "moe";
  m.mla = {0, 16, 8, 4, 8};  // q rank, kv rank, nope, rope, v
  m.moe.first_dense_layers = 1;
  m.moe.routed_experts = 6;
  m.moe.shared_experts = 1;
  m.moe.top_k = 2;
  m.moe.moe_inter_dim = 10;
  const int64_t C = 32, H = 4, V = 61;
  const int64_t attn = H * 12 * C + (16 + 4) * C + 16 + H * (8 + 8) * 16 + C * H * 8 + C;
  const int64_t expert = 3 * 10 * C;
  const int64_t moe = 6 * expert + expert + 6 * C + C;
  const int64_t dense = 3 * 48 * C + C;
  ModelCounts c = count_model(m);
  EXPECT_EQ(c.attention_per_layer, attn);
  EXPECT_EQ(c.moe_per_layer_total, moe);
  EXPECT_EQ(c.total, 2 * V * C + C + 3 * attn + dense + 2 * moe);
  EXPECT_EQ(c.active, c.total - V * C - 2 * (6 - 2) * expert);
  EXPECT_EQ(c.routing_bias, 2 * 6);
  expect_breakdown_sums(c);
  // Attention FLOPs use the qk (nope + rope) and v head dims.
  EXPECT_DOUBLE_EQ(c.attention_flops_per_token, 6.0 * 3 * 12 * H * (12 + 8) / 2.0);

  m.mla.q_lora_rank = 8;  // W_dq [8, C], norm [8], W_uq [H*12, 8]
  c = count_model(m);
  EXPECT_EQ(c.attention_per_layer, attn - H * 12 * C + 8 * C + 8 + H * 12 * 8);
  expect_breakdown_sums(c);

  m.mtp.depth = 2;  // 2 norms + [C, 2C] projection + a block with the last block's FFN (moe)
  const ModelCounts t = count_model(m);
  EXPECT_EQ(t.mtp, 2 * (2 * C + 2 * C * C + c.attention_per_layer + moe));
  EXPECT_EQ(t.total, c.total + t.mtp);
  expect_breakdown_sums(t);

  Layout L;
  L.ep = 4;  // does not divide 6 experts
  EXPECT_THROW(plan_stages(t, m, L), Error);
  L.ep = 3;
  const auto stages = plan_stages(t, m, L);
  EXPECT_EQ(stages[0].params_per_rank, t.total - (2 + 2) * 6 * expert + (2 + 2) * 2 * expert);
}

#if __has_include("model/moe.h")
// The analytic counts against a constructed MLA/MoE model (compiled once those layers exist).
TEST(ModelPlan, CountsMatchTheConstructedMlaMoeModel) {
  for (const std::string mode : {"baseline", "mhc"}) {
    for (int q_rank : {0, 8}) {
      for (int mtp : {0, 1}) {
        SCOPED_TRACE(mode + " q_rank " + std::to_string(q_rank) + " mtp " + std::to_string(mtp));
        ModelConfig m = small_config(mode);
        m.attention = "mla";
        m.ffn = "moe";
        m.mla = {q_rank, 16, 8, 4, 8};
        m.moe.first_dense_layers = 1;
        m.moe.routed_experts = 6;
        m.moe.shared_experts = 1;
        m.moe.top_k = 2;
        m.moe.moe_inter_dim = 10;
        m.mtp.depth = mtp;
        const ModelCounts c = count_model(m);
        Model model(m, 1);
        EXPECT_EQ(c.total, model.num_params());
        EXPECT_DOUBLE_EQ(c.flops_per_token, model.flops_per_token());
      }
    }
  }
}
#endif

}  // namespace
}  // namespace bk
