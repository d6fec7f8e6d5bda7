// oracle_dump_step: one training step's forward and backward of the model (the dense baseline,
// or the hc / mhc n-stream model: --mode; MHA or MLA attention: --attention; a dense or a
// DeepSeekMoE FFN: --ffn; multi-token prediction: --mtp-depth), dumped for the torch oracle
// (tests/oracle/torch_oracle.py), which rebuilds the model in PyTorch from the dumped weights and
// checks the loss and every gradient.
//
// The model is built from the shape given on the command line (no YAML), with random tokens and
// targets from bk::Rng; a fraction of the targets is -1 (ignored). Gradients are accumulated
// over M micro-batches exactly as the trainer does (src/train/trainer.cpp): every micro-batch
// has loss_scale = 1 / (M * B * T), all tokens of the step, ignored ones included. An ignored
// target contributes loss 0 and gradient 0 (kernels/cpu/cross_entropy.cpp), so the objective
// whose gradient is dumped is
//     loss = sum over non-ignored tokens of CE(logits, target) / (M * B * T)
// which is also the `loss` the trainer reports (sum of Model::forward / step tokens). It is NOT
// PyTorch's default "mean over non-ignored tokens"; the oracle computes the same reduction.
// With MoE and MTP the objective has two more terms, whose gradients the backward includes but
// Model::forward does not return: J = loss + mtp.weight * mtp_loss + balance_loss, mtp_loss from
// Model::take_mtp_loss (the mean over depths of each depth's CE sum / its B * (T - k) positions)
// and balance_loss from Model::end_step (below); both are dumped.
//
// The norm weights, which initialise to 1, are jittered (--norm-jitter) so that a backward that
// forgets the weight would be caught. All forwards run before all backwards, so M micro-batches
// are in flight at once (per-micro-batch saved state) and the backward accumulates into the
// gradients left by the previous micro-batch.
//
// hc / mhc: at initialisation every connector is exactly the baseline residual (zero projection,
// static coefficients that reproduce x + F(x) on identical streams), which would leave the
// coefficient paths (Sinkhorn, sigmoids, tanh, static terms) untested: a wrong formula there can
// still give the baseline's numbers. So the projection (phi / w) is drawn with --phi-init-std > 0
// and every other connector parameter (alpha, bias / scale, static_pre, static_post, static_res)
// gets + --conn-jitter * N(0,1), each from its own random stream. The streams are identical after
// the expand; the per-stream coefficients make them diverge from the first sublayer on.
//
// MoE (--ffn moe): the routing bias of every MoE layer is model state, not a parameter, and
// starts at 0, where the biased top-k is the unbiased one; --router-bias-jitter draws it as
// jitter * N(0,1) so that a slip between the two (gates from biased scores, choice by unbiased
// ones) shows. The top-k choice is not differentiable: the oracle must make the same choice,
// from float64 values where this side compares fp32 ones. So this tool recomputes each MoE
// layer's routing with the model's own kernels on the layer's exact fp32 input (a forward with
// mb.probe, whose connector coefficients give the sublayer input H_pre X; the MTP modules, which
// an evaluation forward skips, are run the way MtpHead::forward runs them), checks that it gives
// the loads the model counted (Model::end_step), and dumps the chosen experts; it also measures
// the routing margin (the gap between the last chosen and the best unchosen eligible biased
// score, and between the last eligible and the best ineligible group score) and refuses a dump
// whose margin is small enough for fp32 rounding to flip a choice (--min-route-margin, 1e-6). The sequence-wise balance loss (--balance-alpha)
// is part of the objective whose gradient the backward computes, but Model::forward returns only
// the cross-entropy; its value comes from Model::end_step(0) (gamma 0: the biases stay).
//
// Output: one safetensors file with `param.<name>` and `grad.<name>` (f32) for every parameter,
// `tokens` and `targets` (i32 [M,B,T]), `loss` (f64 [1], the cross-entropy part of the
// objective), `loss_scale` (f64 [1], the value the model used) and the configuration as
// metadata; with MoE layers also `state.<name>` (f32 [E], the routing biases),
// `route.<layer>.idx` (i32 [M,B,T,k], the chosen experts of MoE layer <layer>, e.g.
// layers.1.ffn or mtp.0.ffn, in descending biased score), and `balance_loss` (f64 [1], the sum
// over the MoE layers of the balance loss term of the objective, 0 without it); with MTP,
// `mtp_loss` (f64 [1]).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "config/config.h"
#include "core/buffer.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "model/model.h"
#include "model/mtp.h"

namespace {

const char* kUsage =
    "usage: oracle_dump_step --out FILE [--vocab V] [--dim C] [--layers L] [--heads H] [--ffn-dim F]\n"
    "                        [--seq T] [--micro M] [--batch B] [--seed S] [--init-std X]\n"
    "                        [--rope-theta X] [--norm-eps X] [--norm-jitter X] [--ignore-frac X]\n"
    "                        [--mode baseline|hc|mhc] [--streams n] [--sinkhorn-iters K]\n"
    "                        [--alpha-init X] [--res-init-diag X] [--phi-init-std X] [--conn-jitter X]\n"
    "                        [--attention mha|mla] [--q-lora-rank R] [--kv-lora-rank R]\n"
    "                        [--qk-nope D] [--qk-rope D] [--v-head D]\n"
    "                        [--ffn dense|moe] [--first-dense L] [--experts E] [--shared S] [--top-k k]\n"
    "                        [--moe-inter F] [--groups G] [--topk-groups G] [--route-scale X]\n"
    "                        [--balance-alpha X] [--router-bias-jitter X] [--min-route-margin X]\n"
    "                        [--mtp-depth D] [--mtp-weight X]\n"
    "(--ffn-dim is the dense SwiGLU's width: the dense model's, and with --ffn moe the leading\n"
    " --first-dense blocks'; the MLA flags need --attention mla, the MoE flags --ffn moe)\n";

// The routing margin below which a dump is refused (--min-route-margin): fp32 rounding of the
// router logits (a few 1e-8 for the scores around 0.5 here) could then order two experts
// differently from the oracle's float64 computation.
constexpr double kMinRouteMargin = 1e-6;

struct Args {
  std::string out;
  bk::ModelConfig model;
  int micro = 2, batch = 2;
  uint64_t seed = 1234;
  double norm_jitter = 0.1, ignore_frac = 0.15;
  double conn_jitter = 0.0;
  double router_bias_jitter = 0.0;
  double min_route_margin = kMinRouteMargin;
};

// A norm weight (initialised to 1): attn.norm, ffn.norm, final_norm, MLA's q_norm and kv_norm.
bool is_norm_weight(const std::string& name) {
  const std::string suffix = "norm.weight";
  return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A connector parameter other than the projection: mhc alpha, bias; hc scale, static_*.
bool is_conn_coefficient(const std::string& name) {
  const size_t at = name.find("_conn.");
  if (at == std::string::npos) return false;
  const std::string leaf = name.substr(at + 6);
  return leaf != "phi" && leaf != "w";
}

Args parse(int argc, char** argv) {
  Args a;
  a.model.vocab_size = 61;
  a.model.dim = 32;
  a.model.n_layers = 2;
  a.model.n_heads = 4;
  a.model.ffn_dim = 80;
  a.model.seq_len = 12;
  std::map<std::string, std::string> kv;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "-h" || k == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    BK_CHECK(k.rfind("--", 0) == 0 && i + 1 < argc, "bad argument '{}'\n{}", k, kUsage);
    kv[k.substr(2)] = argv[++i];
  }
  std::set<std::string> given;
  auto take = [&](const char* key, auto& dst) {
    auto it = kv.find(key);
    if (it == kv.end()) return;
    try {
      size_t used = 0;
      if constexpr (std::is_same_v<std::decay_t<decltype(dst)>, std::string>)
        dst = it->second, used = it->second.size();
      else if constexpr (std::is_floating_point_v<std::decay_t<decltype(dst)>>)
        dst = std::stod(it->second, &used);
      else
        dst = static_cast<std::decay_t<decltype(dst)>>(std::stoll(it->second, &used));
      if (used != it->second.size()) throw std::invalid_argument("trailing characters");
    } catch (const std::exception&) {
      BK_FAIL("--{}: cannot parse '{}'", key, it->second);
    }
    given.insert(key);
    kv.erase(it);
  };
  {  // --ffn was the dense width before it named the FFN kind: say so instead of "cannot parse"
    auto it = kv.find("ffn");
    BK_CHECK(it == kv.end() || it->second.empty() || !std::isdigit(static_cast<unsigned char>(it->second[0])),
             "--ffn takes dense or moe, got '{}' (the dense SwiGLU width is --ffn-dim)", it->second);
  }
  take("out", a.out);
  take("vocab", a.model.vocab_size);
  take("dim", a.model.dim);
  take("layers", a.model.n_layers);
  take("heads", a.model.n_heads);
  take("ffn-dim", a.model.ffn_dim);
  take("seq", a.model.seq_len);
  take("rope-theta", a.model.rope_theta);
  take("norm-eps", a.model.norm_eps);
  take("init-std", a.model.init_std);
  take("micro", a.micro);
  take("batch", a.batch);
  take("seed", a.seed);
  take("norm-jitter", a.norm_jitter);
  take("ignore-frac", a.ignore_frac);
  take("mode", a.model.residual.mode);
  take("streams", a.model.residual.streams);
  take("sinkhorn-iters", a.model.residual.sinkhorn_iters);
  take("alpha-init", a.model.residual.alpha_init);
  take("res-init-diag", a.model.residual.res_init_diag);
  take("phi-init-std", a.model.residual.phi_init_std);
  take("conn-jitter", a.conn_jitter);
  bk::MlaConfig& mla = a.model.mla;
  take("attention", a.model.attention);
  take("q-lora-rank", mla.q_lora_rank);
  take("kv-lora-rank", mla.kv_lora_rank);
  take("qk-nope", mla.qk_nope_dim);
  take("qk-rope", mla.qk_rope_dim);
  take("v-head", mla.v_head_dim);
  bk::MoeConfig& moe = a.model.moe;
  take("ffn", a.model.ffn);
  take("first-dense", moe.first_dense_layers);
  take("experts", moe.routed_experts);
  take("shared", moe.shared_experts);
  take("top-k", moe.top_k);
  take("moe-inter", moe.moe_inter_dim);
  take("groups", moe.n_groups);
  take("topk-groups", moe.topk_groups);
  take("route-scale", moe.route_scale);
  take("balance-alpha", moe.balance_loss_weight);
  take("router-bias-jitter", a.router_bias_jitter);
  take("min-route-margin", a.min_route_margin);
  take("mtp-depth", a.model.mtp.depth);
  take("mtp-weight", a.model.mtp.weight);
  moe.bias_update_speed = 0;  // not used here (end_step(0)), recorded as such
  BK_CHECK(kv.empty(), "unknown option --{}\n{}", kv.begin()->first, kUsage);
  BK_CHECK(!a.out.empty(), "--out is required\n{}", kUsage);
  const bk::ModelConfig& m = a.model;
  BK_CHECK(m.vocab_size > 0 && m.dim > 0 && m.n_layers > 0 && m.n_heads > 0 && m.ffn_dim > 0 &&
               m.seq_len > 0 && a.micro > 0 && a.batch > 0,
           "all sizes must be positive");
  BK_CHECK(a.ignore_frac >= 0 && a.ignore_frac < 1, "--ignore-frac must be in [0, 1)");
  // The checks of src/config/schema.cpp (this tool builds the ModelConfig without it).
  const bk::ResidualConfig& r = m.residual;
  BK_CHECK(r.mode == "baseline" || r.mode == "hc" || r.mode == "mhc", "--mode must be baseline, hc or mhc, got '{}'",
           r.mode);
  BK_CHECK(r.mode == "baseline" || r.streams >= 2, "--streams must be at least 2 for {}", r.mode);
  BK_CHECK(r.sinkhorn_iters >= 1, "--sinkhorn-iters must be at least 1");
  BK_CHECK(r.alpha_init >= 0 && r.phi_init_std >= 0 && a.conn_jitter >= 0,
           "--alpha-init, --phi-init-std and --conn-jitter must be >= 0");
  BK_CHECK(r.res_init_diag > 0 && r.res_init_diag < 1, "--res-init-diag must be in (0, 1)");
  // A flag of the other attention / FFN kind would be silently unused: refuse it.
  auto only_with = [&](std::initializer_list<const char*> keys, bool on, const char* need) {
    for (const char* k : keys) BK_CHECK(on || !given.count(k), "--{} needs {}", k, need);
  };
  BK_CHECK(m.attention == "mha" || m.attention == "mla", "--attention must be mha or mla, got '{}'", m.attention);
  only_with({"q-lora-rank", "kv-lora-rank", "qk-nope", "qk-rope", "v-head"}, m.attention == "mla",
            "--attention mla");
  if (m.attention == "mha") {
    BK_CHECK(m.dim % m.n_heads == 0 && (m.dim / m.n_heads) % 2 == 0,
             "dim {} must split into {} heads of even width", m.dim, m.n_heads);
  } else {
    BK_CHECK(mla.q_lora_rank >= 0, "--q-lora-rank must be >= 0 (0: plain query projection)");
    BK_CHECK(mla.kv_lora_rank >= 1 && mla.qk_nope_dim >= 1 && mla.v_head_dim >= 1,
             "--kv-lora-rank, --qk-nope and --v-head must be >= 1");
    BK_CHECK(mla.qk_rope_dim >= 2 && mla.qk_rope_dim % 2 == 0, "--qk-rope must be even and >= 2, got {}",
             mla.qk_rope_dim);
  }
  BK_CHECK(m.ffn == "dense" || m.ffn == "moe", "--ffn must be dense or moe, got '{}'", m.ffn);
  only_with({"first-dense", "experts", "shared", "top-k", "moe-inter", "groups", "topk-groups", "route-scale",
             "balance-alpha", "router-bias-jitter", "min-route-margin"},
            m.ffn == "moe", "--ffn moe");
  if (m.ffn == "moe") {
    BK_CHECK(moe.first_dense_layers >= 0 && moe.first_dense_layers < m.n_layers,
             "--first-dense {} leaves no MoE block of {} (need 0 <= first-dense < layers)",
             moe.first_dense_layers, m.n_layers);
    BK_CHECK(moe.routed_experts >= 1 && moe.shared_experts >= 0 && moe.moe_inter_dim >= 1,
             "--experts and --moe-inter must be >= 1, --shared >= 0");
    BK_CHECK(moe.n_groups >= 1 && moe.routed_experts % moe.n_groups == 0,
             "--groups {} must be >= 1 and divide --experts {}", moe.n_groups, moe.routed_experts);
    BK_CHECK(moe.topk_groups >= 1 && moe.topk_groups <= moe.n_groups, "--topk-groups must be in [1, --groups]");
    BK_CHECK(moe.top_k >= 1 && moe.top_k <= moe.routed_experts / moe.n_groups * moe.topk_groups,
             "--top-k {} must be in [1, experts in the eligible groups = {}]", moe.top_k,
             moe.routed_experts / moe.n_groups * moe.topk_groups);
    BK_CHECK(moe.route_scale > 0, "--route-scale must be > 0");
    BK_CHECK(moe.balance_loss_weight >= 0 && a.router_bias_jitter >= 0,
             "--balance-alpha and --router-bias-jitter must be >= 0");
  }
  BK_CHECK(m.mtp.depth >= 0 && m.mtp.depth < m.seq_len, "--mtp-depth must be in [0, --seq)");
  BK_CHECK(m.mtp.weight >= 0, "--mtp-weight must be >= 0");
  only_with({"mtp-weight"}, m.mtp.depth > 0, "--mtp-depth > 0");
  return a;
}

// One MoE layer's routing, recomputed from its input (see the header comment).
struct Route {
  bk::Moe* moe = nullptr;
  bk::Buffer idx;               // i32 [M, B, T, k], the chosen experts
  std::vector<double> load;     // per expert, over the step
  double margin = 1e300;        // smallest routing margin (biased scores / group scores)
  int64_t bias_changed = 0;     // tokens whose chosen set differs from the unbiased choice
};

// u: the MoE layer's input [N, C] for micro-batch m: route it with the layer's norm, router and
// bias (the kernels the layer uses, so the result is the layer's own), into route.idx[m].
void route_tokens(Route& route, const bk::ModelConfig& cfg, int m, bk::Tensor u) {
  const bk::MoeConfig& mc = cfg.moe;
  const int64_t N = u.size(0), C = u.size(1), E = mc.routed_experts, K = mc.top_k;
  const std::string pre = route.moe->name();
  bk::Tensor norm_w, router_w;
  for (bk::Param* p : route.moe->params()) {
    if (p->name == pre + ".norm.weight") norm_w = p->value.tensor();
    if (p->name == pre + ".router.weight") router_w = p->value.tensor();
  }
  bk::Tensor bias;
  for (auto& [name, t] : route.moe->state())
    if (name == pre + ".router.bias") bias = t;
  BK_CHECK(norm_w.data && router_w.data && bias.data, "{}: norm, router or bias not found", pre);
  bk::Buffer n({N, C}), rstd({N}), logits({N, E}), scores({N, E}), gates({N, K});
  bk::Buffer idx({N, K}, bk::DType::i32), idx0({N, K}, bk::DType::i32), zero({E});  // (zero-filled)
  bk::ops::rmsnorm_forward(n, rstd, u, norm_w, float(cfg.norm_eps));
  bk::ops::linear_forward(logits, n, router_w);
  bk::ops::moe_router_forward(idx, gates, scores, logits, bias, mc.n_groups, mc.topk_groups, float(mc.route_scale));
  bk::ops::moe_router_forward(idx0, gates, scores, logits, zero, mc.n_groups, mc.topk_groups,
                              float(mc.route_scale));
  std::copy(idx.ptr<int32_t>(), idx.ptr<int32_t>() + N * K, route.idx.ptr<int32_t>() + int64_t(m) * N * K);

  // Margins, from the fp32 biased scores exactly as the kernel forms them.
  const int64_t G = E / mc.n_groups;
  const float* s = scores.ptr<float>();
  const float* b0 = bias.ptr<float>();
  const int32_t *id = idx.ptr<int32_t>(), *id0 = idx0.ptr<int32_t>();
  std::vector<float> b(size_t(E), 0.0f);
  std::vector<double> gs(size_t(mc.n_groups));
  for (int64_t t = 0; t < N; ++t) {
    for (int64_t e = 0; e < E; ++e) b[e] = s[t * E + e] + b0[e];
    std::vector<uint8_t> chosen(size_t(E), 0), group_open(size_t(mc.n_groups), 0), chosen0(size_t(E), 0);
    for (int64_t j = 0; j < K; ++j) {
      chosen[id[t * K + j]] = 1;
      chosen0[id0[t * K + j]] = 1;
      route.load[id[t * K + j]] += 1;
    }
    route.bias_changed += chosen != chosen0;
    if (mc.n_groups > 1) {  // the groups: their scores as the kernel sums them (top two, in float)
      for (int64_t g = 0; g < mc.n_groups; ++g) {
        float m1 = -INFINITY, m2 = -INFINITY;
        for (int64_t e = g * G; e < (g + 1) * G; ++e) {
          if (b[e] > m1) m2 = m1, m1 = b[e];
          else if (b[e] > m2) m2 = b[e];
        }
        gs[g] = G >= 2 ? double(m1 + m2) : double(m1);
      }
      // The chosen experts may not cover all topk_groups eligible groups (top_k < topk_groups):
      // the eligible groups are the topk_groups best; margin between the last of them and the next.
      std::vector<double> sorted = gs;
      std::sort(sorted.begin(), sorted.end(), std::greater<>());
      route.margin = std::min(route.margin, sorted[mc.topk_groups - 1] - (mc.topk_groups < mc.n_groups
                                                                              ? sorted[mc.topk_groups]
                                                                              : -1e300));
      for (int64_t g = 0; g < mc.n_groups; ++g) group_open[g] = gs[g] >= sorted[mc.topk_groups - 1];
    } else {
      group_open[0] = 1;
    }
    double last_in = 1e300, first_out = -1e300;
    for (int64_t e = 0; e < E; ++e) {
      if (chosen[e]) last_in = std::min(last_in, double(b[e]));
      else if (group_open[e / G]) first_out = std::max(first_out, double(b[e]));
    }
    route.margin = std::min(route.margin, last_in - first_out);
  }
}

// Every MoE layer of the model, in Model::end_step's order (depth first through children()).
std::vector<bk::Moe*> moe_layers(const bk::Model& model) {
  std::vector<bk::Moe*> out;
  std::function<void(bk::Layer*)> visit = [&](bk::Layer* l) {
    if (auto* m = dynamic_cast<bk::Moe*>(l)) out.push_back(m);
    for (bk::Layer* c : l->children()) visit(c);
  };
  for (auto& layer : model.layers()) visit(layer.get());
  return out;
}

// The routing probe: an evaluation forward (keep = false: nothing saved, no loads counted; probe:
// the connectors record their coefficients) that routes each MoE sublayer's exact input.
struct RouteProbe {
  const bk::ModelConfig& cfg;
  bk::Model& model;
  std::vector<Route>& routes;
  int m;  // the micro-batch

  bk::Tensor param(const std::string& name) {
    for (bk::Param* p : model.params())
      if (p->name == name) return p->value.tensor();
    BK_FAIL("no parameter {}", name);
  }

  // layer->forward(x) -> returned; a connector whose sublayer is a MoE routes its sublayer's
  // input: x (baseline) or H_pre X (hc / mhc, the probed h_pre with the connector's own kernel).
  bk::Buffer forward(const bk::MicroBatch& mb, bk::Layer* layer, const bk::Buffer& x) {
    const int64_t N = mb.tokens_count();
    bk::Buffer y({N, layer->out_width()});
    layer->forward(mb, x, y);
    for (bk::Layer* c : layer->children()) {
      auto* moe = dynamic_cast<bk::Moe*>(c);
      if (!moe) continue;
      Route* r = nullptr;
      for (Route& q : routes)
        if (q.moe == moe) r = &q;
      BK_CHECK(r, "{}: an MoE layer the model does not list", moe->name());
      const auto* probe = dynamic_cast<const bk::ConnectorProbe*>(layer);
      BK_CHECK(probe, "{}: the MoE sublayer's connector exposes no coefficients", layer->name());
      const int64_t n = cfg.streams();
      if (n == 1) {
        route_tokens(*r, cfg, m, x);
      } else {
        BK_CHECK(probe->probed().n == n, "{}: no probed coefficients", layer->name());
        bk::Buffer u({N, cfg.dim});
        bk::ops::stream_pre_forward(u, x.tensor().view({N, n, cfg.dim}), probe->probed().h_pre);
        route_tokens(*r, cfg, m, u);
      }
    }
    return y;
  }

  // The MTP modules (an evaluation forward of MtpHead skips them): module k = j + 1 as
  // MtpHead::forward computes its input, h'^k = W_k [RMSNorm(h^{k-1}); RMSNorm(Emb(t_{t+k}))],
  // with the same kernels, then its layers as above.
  void mtp(const bk::MicroBatch& mb, bk::MtpHead* head, bk::Buffer h) {
    const int64_t N = mb.tokens_count(), C = cfg.dim;
    const std::vector<bk::Layer*> kids = head->children();
    const size_t per = cfg.streams() > 1 ? 4 : 2;  // [expand], attn_conn, ffn_conn, [collapse]
    BK_CHECK(kids.size() == per * size_t(cfg.mtp.depth), "MtpHead: {} layers for depth {}", kids.size(),
             cfg.mtp.depth);
    const float eps = float(cfg.norm_eps);
    for (int j = 0; j < cfg.mtp.depth; ++j) {
      const int k = j + 1;
      const std::string p = "mtp." + std::to_string(j);
      bk::Buffer tok({N}, bk::DType::i32);
      for (int b = 0; b < mb.B; ++b)
        for (int t = 0; t < mb.T; ++t) {
          const int64_t i = int64_t(b) * mb.T + t;
          const int32_t next = t + k - 1 < mb.T ? mb.targets[i + k - 1] : -1;
          tok.ptr<int32_t>()[i] = next < 0 ? 0 : next;
        }
      bk::Buffer hn({N, C}), en({N, C}), e({N, C}), rstd({N}), cat({N, 2 * C}), cur({N, C});
      bk::ops::rmsnorm_forward(hn, rstd, h, param(p + ".norm_h.weight"), eps);
      bk::ops::embedding_forward(e, tok, param("embed.weight"));
      bk::ops::rmsnorm_forward(en, rstd, e, param(p + ".norm_e.weight"), eps);
      bk::ops::copy_columns(cat, 0, hn, 0, C, false);
      bk::ops::copy_columns(cat, C, en, 0, C, false);
      bk::ops::linear_forward(cur, cat, param(p + ".proj.weight"));
      for (size_t i = per * size_t(j); i < per * size_t(j + 1); ++i) cur = forward(mb, kids[i], cur);
      h = std::move(cur);
    }
  }

  void run(const bk::MicroBatch& mb) {
    bk::Buffer cur({mb.tokens_count(), 1});
    for (auto& layer : model.layers()) {
      if (auto* head = dynamic_cast<bk::MtpHead*>(layer.get())) {
        mtp(mb, head, std::move(cur));
        return;
      }
      cur = forward(mb, layer.get(), cur);
    }
  }
};

int run(const Args& a) {
  const bk::ModelConfig& cfg = a.model;
  const int M = a.micro, B = a.batch, T = cfg.seq_len, V = cfg.vocab_size;
  bk::Model model(cfg, a.seed);

  bk::ParamList params = model.params();
  int jittered_conn = 0;
  for (bk::Param* p : params) {
    if (is_norm_weight(p->name) && a.norm_jitter > 0) {  // norm weights: 1 + jitter * N(0,1)
      bk::Rng rng(a.seed, bk::Rng::stream_of("oracle.jitter." + p->name));
      float* w = p->value.ptr<float>();
      for (int64_t i = 0; i < p->value.numel(); ++i) w[i] = float(1.0 + a.norm_jitter * rng.normal());
    }
    if (is_conn_coefficient(p->name) && a.conn_jitter > 0) {  // connector coefficients: + jitter * N(0,1)
      bk::Rng rng(a.seed, bk::Rng::stream_of("oracle.conn_jitter." + p->name));
      float* w = p->value.ptr<float>();
      for (int64_t i = 0; i < p->value.numel(); ++i) w[i] = float(double(w[i]) + a.conn_jitter * rng.normal());
      ++jittered_conn;
    }
    p->grad.zero();
  }
  BK_CHECK(cfg.streams() == 1 || a.conn_jitter == 0 || jittered_conn == 2 * (cfg.n_layers + cfg.mtp.depth) * (cfg.residual.mode == "mhc" ? 2 : 4),
           "--conn-jitter: jittered {} connector parameters, expected {} per connector", jittered_conn,
           cfg.residual.mode == "mhc" ? 2 : 4);

  // MoE routing biases (state, not parameters): jitter * N(0,1), each layer from its own stream.
  std::vector<std::pair<std::string, bk::Tensor>> state = model.state();
  for (auto& [name, t] : state) {
    BK_CHECK(t.dtype == bk::DType::f32 && t.ndim() == 1, "state {} is not f32 [E]", name);
    bk::Rng rng(a.seed, bk::Rng::stream_of("oracle.router_bias." + name));
    float* b = t.ptr<float>();
    for (int64_t i = 0; i < t.numel(); ++i) b[i] = float(a.router_bias_jitter * rng.normal());
  }
  // One MoE layer per block from first_dense_layers on, and one in each MTP module (the model
  // has MoE blocks: --first-dense < --layers).
  const int n_moe = cfg.ffn == "moe" ? cfg.n_layers - cfg.moe.first_dense_layers + cfg.mtp.depth : 0;
  BK_CHECK(int(state.size()) == n_moe, "the model has {} routing biases, expected one per MoE block ({})",
           state.size(), n_moe);

  // Tokens uniform in [0, V); targets uniform too, with a fraction ignored (-1). Each
  // micro-batch's last token of its first sequence is always ignored, so every run has some.
  bk::Buffer tokens({M, B, T}, bk::DType::i32), targets({M, B, T}, bk::DType::i32);
  {
    bk::Rng rng(a.seed, bk::Rng::stream_of("oracle.tokens"));
    int32_t *tk = tokens.ptr<int32_t>(), *tg = targets.ptr<int32_t>();
    for (int64_t i = 0; i < tokens.numel(); ++i) {
      tk[i] = int32_t(rng.next_u64() % uint64_t(V));
      tg[i] = int32_t(rng.next_u64() % uint64_t(V));
      if (rng.uniform() < a.ignore_frac) tg[i] = -1;
    }
    for (int m = 0; m < M; ++m) tg[int64_t(m) * B * T + T - 1] = -1;
  }

  const int64_t step_tokens = int64_t(M) * B * T;
  const float loss_scale = float(1.0 / double(step_tokens));  // as the trainer
  std::vector<bk::MicroBatch> mbs;
  for (int m = 0; m < M; ++m) {
    bk::MicroBatch mb;
    mb.id = m;
    mb.B = B;
    mb.T = T;
    mb.tokens = tokens.ptr<int32_t>() + int64_t(m) * B * T;
    mb.targets = targets.ptr<int32_t>() + int64_t(m) * B * T;
    mb.loss_scale = loss_scale;
    mb.keep = true;
    mbs.push_back(mb);
  }

  // The routing of every MoE layer (RouteProbe), recomputed before the step.
  std::vector<Route> routes;
  for (bk::Moe* moe : moe_layers(model)) {
    Route r;
    r.moe = moe;
    r.idx = bk::Buffer({M, B, T, cfg.moe.top_k}, bk::DType::i32);
    r.load.assign(size_t(cfg.moe.routed_experts), 0.0);
    routes.push_back(std::move(r));
  }
  BK_CHECK(int(routes.size()) == n_moe, "found {} MoE sublayers, expected {}", routes.size(), n_moe);
  if (n_moe > 0)
    for (int m = 0; m < M; ++m) {
      bk::MicroBatch mb = mbs[m];
      mb.id = 1000 + m;
      mb.keep = false;
      mb.probe = true;
      RouteProbe{cfg, model, routes, m}.run(mb);
    }

  double loss_sum = 0;
  for (const bk::MicroBatch& mb : mbs) loss_sum += model.forward(mb);
  for (const bk::MicroBatch& mb : mbs) model.backward(mb);
  // The step's MoE statistics (gamma 0: the biases stay as dumped): the balance loss term of the
  // objective, and the loads the model counted, which the recomputed routing must reproduce.
  std::vector<bk::Buffer> bias_before;
  for (auto& [name, t] : state) {
    bias_before.emplace_back(t.shape);
    std::copy(t.ptr<float>(), t.ptr<float>() + t.numel(), bias_before.back().ptr<float>());
  }
  const std::vector<bk::MoeStats> stats = model.end_step(0.0);
  state = model.state();  // end_step replaces the bias buffers (same values with gamma 0)
  for (size_t i = 0; i < state.size(); ++i)
    BK_CHECK(std::equal(bias_before[i].ptr<float>(), bias_before[i].ptr<float>() + state[i].second.numel(),
                        state[i].second.ptr<float>()),
             "{}: end_step(0) changed the routing bias", state[i].first);
  BK_CHECK(stats.size() == routes.size(), "end_step gave {} MoE layers, expected {}", stats.size(), routes.size());
  double balance = 0, margin = 1e300;
  int64_t bias_changed = 0;
  for (size_t i = 0; i < routes.size(); ++i) {
    BK_CHECK(stats[i].name == routes[i].moe->name(), "end_step: layer {} is {}, expected {}", i, stats[i].name,
             routes[i].moe->name());
    BK_CHECK(stats[i].load == routes[i].load,
             "{}: the recomputed routing does not give the loads the model counted: the dump's route "
             "idx would not be the model's",
             stats[i].name);
    balance += stats[i].balance_loss;
    margin = std::min(margin, routes[i].margin);
    bias_changed += routes[i].bias_changed;
  }
  if (n_moe > 0)
    BK_CHECK(margin >= a.min_route_margin,
             "routing margin {:.3g} < {:.0e}: a biased score (or group score) nearly ties with another, and "
             "fp32 rounding could then choose differently from the oracle's float64; choose another --seed or "
             "--router-bias-jitter",
             margin, a.min_route_margin);

  bk::Buffer loss({1}, bk::DType::f64), scale({1}, bk::DType::f64), bal({1}, bk::DType::f64),
      mtp_loss({1}, bk::DType::f64);
  mtp_loss.ptr<double>()[0] = model.take_mtp_loss();
  loss.ptr<double>()[0] = loss_sum / double(step_tokens);
  scale.ptr<double>()[0] = double(loss_scale);
  bal.ptr<double>()[0] = balance;

  std::vector<bk::NamedTensor> out;
  for (bk::Param* p : params) out.push_back({"param." + p->name, p->value.tensor()});
  for (bk::Param* p : params) out.push_back({"grad." + p->name, p->grad.tensor()});
  for (auto& [name, t] : state) out.push_back({"state." + name, t});
  for (const Route& r : routes) out.push_back({"route." + r.moe->name() + ".idx", r.idx.tensor()});
  out.push_back({"tokens", tokens.tensor()});
  out.push_back({"targets", targets.tensor()});
  out.push_back({"loss", loss.tensor()});
  out.push_back({"loss_scale", scale.tensor()});
  if (n_moe > 0) out.push_back({"balance_loss", bal.tensor()});
  if (cfg.mtp.depth > 0) out.push_back({"mtp_loss", mtp_loss.tensor()});

  auto num = [](double x) { return fmt::format("{:.17g}", x); };
  const bk::MlaConfig& mla = cfg.mla;
  const bk::MoeConfig& mc = cfg.moe;
  std::map<std::string, std::string> meta = {
      {"format", "birkhoff-oracle-step/1"},
      {"vocab_size", std::to_string(cfg.vocab_size)},
      {"dim", std::to_string(cfg.dim)},
      {"n_layers", std::to_string(cfg.n_layers)},
      {"n_heads", std::to_string(cfg.n_heads)},
      {"ffn_dim", std::to_string(cfg.ffn_dim)},
      {"seq_len", std::to_string(cfg.seq_len)},
      {"rope_theta", num(cfg.rope_theta)},
      {"norm_eps", num(cfg.norm_eps)},
      {"init_std", num(cfg.init_std)},
      {"micro_batches", std::to_string(M)},
      {"micro_batch_size", std::to_string(B)},
      {"seed", std::to_string(a.seed)},
      {"loss_reduction", "sum_over_non_ignored_div_all_tokens"},
      {"residual_mode", cfg.residual.mode},
      {"streams", std::to_string(cfg.streams())},
      {"sinkhorn_iters", std::to_string(cfg.residual.sinkhorn_iters)},
      {"alpha_init", num(cfg.residual.alpha_init)},
      {"res_init_diag", num(cfg.residual.res_init_diag)},
      {"phi_init_std", num(cfg.residual.phi_init_std)},
      {"conn_jitter", num(a.conn_jitter)},
      {"norm_jitter", num(a.norm_jitter)},
      {"attention", cfg.attention},
      {"ffn", cfg.ffn},
  };
  if (cfg.mtp.depth > 0)
    meta.insert({{"mtp_depth", std::to_string(cfg.mtp.depth)}, {"mtp_weight", num(cfg.mtp.weight)}});
  if (cfg.attention == "mla")
    meta.insert({{"mla_q_lora_rank", std::to_string(mla.q_lora_rank)},
                 {"mla_kv_lora_rank", std::to_string(mla.kv_lora_rank)},
                 {"mla_qk_nope_dim", std::to_string(mla.qk_nope_dim)},
                 {"mla_qk_rope_dim", std::to_string(mla.qk_rope_dim)},
                 {"mla_v_head_dim", std::to_string(mla.v_head_dim)}});
  if (cfg.ffn == "moe")
    meta.insert({{"moe_first_dense_layers", std::to_string(mc.first_dense_layers)},
                 {"moe_routed_experts", std::to_string(mc.routed_experts)},
                 {"moe_shared_experts", std::to_string(mc.shared_experts)},
                 {"moe_top_k", std::to_string(mc.top_k)},
                 {"moe_inter_dim", std::to_string(mc.moe_inter_dim)},
                 {"moe_n_groups", std::to_string(mc.n_groups)},
                 {"moe_topk_groups", std::to_string(mc.topk_groups)},
                 {"moe_route_scale", num(mc.route_scale)},
                 {"moe_balance_loss_weight", num(mc.balance_loss_weight)},
                 {"router_bias_jitter", num(a.router_bias_jitter)},
                 {"route_min_margin", num(margin)},
                 {"route_bias_changed_tokens", std::to_string(bias_changed)}});
  bk::write_safetensors(a.out, out, meta);

  int64_t ignored = 0;
  for (int64_t i = 0; i < targets.numel(); ++i) ignored += targets.ptr<int32_t>()[i] < 0;
  std::printf("oracle_dump_step: %s: %s (n=%d), %s, %s, %zu parameters, M=%d B=%d T=%d (%lld tokens, %lld ignored), "
              "loss %.9f\n",
              a.out.c_str(), cfg.residual.mode.c_str(), int(cfg.streams()), cfg.attention.c_str(), cfg.ffn.c_str(),
              params.size(), M, B, T, (long long)step_tokens, (long long)ignored, loss.ptr<double>()[0]);
  if (cfg.mtp.depth > 0)
    std::printf("oracle_dump_step: MTP depth %d, weight %g: mtp loss %.9f\n", cfg.mtp.depth, cfg.mtp.weight,
                mtp_loss.ptr<double>()[0]);
  if (n_moe > 0)
    std::printf("oracle_dump_step: %d MoE layers: balance loss %.9g, routing margin %.3g, the routing bias changes "
                "the choice of %lld of %lld token-layers\n",
                n_moe, balance, margin, (long long)bias_changed, (long long)(step_tokens * n_moe));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const bk::Error& e) {
    std::fprintf(stderr, "oracle_dump_step: %s (%s)\n", e.what(), e.where().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "oracle_dump_step: %s\n", e.what());
  }
  return 1;
}
