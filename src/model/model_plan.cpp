#include "model/model_plan.h"

#include <algorithm>

#include "core/error.h"

// The saved-activation counts below mirror the Saved structs of attention.h, mla.h, ffn.h, moe.h,
// hyper_connection.h, head.h and mtp.h; they are flagged as estimates when a header is missing
// (the layer not built yet).
#if __has_include("model/mla.h")
#define BK_PLAN_HAVE_MLA 1
#else
#define BK_PLAN_HAVE_MLA 0
#endif
#if __has_include("model/moe.h")
#define BK_PLAN_HAVE_MOE 1
#else
#define BK_PLAN_HAVE_MOE 0
#endif
#if __has_include("model/mtp.h")
#define BK_PLAN_HAVE_MTP 1
#else
#define BK_PLAN_HAVE_MTP 0
#endif

namespace bk {
namespace {

struct Part {
  int64_t params = 0;     // all parameters
  int64_t matmul = 0;     // 2-D weights (all experts)
  int64_t active = 0;     // used by one token
  int64_t matmul_active = 0;
  int64_t norms = 0;      // RMSNorm weights among params
  int64_t routed = 0, shared = 0, router = 0;  // MoE split of the matrices
  ActivationCount saved;
  bool estimated = false;
};

// Attention sublayer (without connector).
Part attention_part(const ModelConfig& m) {
  const int64_t C = m.dim, H = m.n_heads;
  Part p;
  if (m.attention == "mha") {
    // Attention: norm [C]; wq, wk, wv, wo [C, C]. Saved: x, n, q, k, v, att [C]; rstd; lse [H].
    p.matmul = 4 * C * C;
    p.norms = C;
    p.saved = {6.0 * C, 1.0 + H, 0};
  } else {
    const int64_t dn = m.mla.qk_nope_dim, dr = m.mla.qk_rope_dim, dv = m.mla.v_head_dim;
    const int64_t rq = m.mla.q_lora_rank, r = m.mla.kv_lora_rank, dqk = dn + dr;
    // Queries: W_q [H*dqk, C], or W_dq [rq, C] -> RMSNorm [rq] -> W_uq [H*dqk, rq].
    p.matmul += rq == 0 ? H * dqk * C : rq * C + H * dqk * rq;
    p.norms += rq == 0 ? 0 : rq;
    // Keys/values: W_dkv [r + dr, C] -> RMSNorm [r] on the latent -> W_ukv [H*(dn + dv), r];
    // the rotary key part (dr) is shared by the heads. Output W_o [C, H*dv].
    p.matmul += (r + dr) * C + H * (dn + dv) * r + C * H * dv;
    p.norms += r + C;  // kv latent norm, sublayer pre-norm
    // Saved (mla.h): x, n [C]; query latent cq and its norm [rq] (rq > 0); kv latent c and its
    // norm [r]; q, k [H*dqk]; v, o [H*dv]; rstd of each norm; lse [H].
    p.saved.act = 2.0 * C + (rq > 0 ? 2.0 * rq : 0) + 2.0 * r + 2.0 * H * dqk + 2.0 * H * dv;
    p.saved.f32 = 1 + (rq > 0 ? 1 : 0) + 1 + H;
    p.estimated = !BK_PLAN_HAVE_MLA;
  }
  p.params = p.matmul + p.norms;
  p.active = p.params;
  p.matmul_active = p.matmul;
  return p;
}

// Dense SwiGLU FFN of width F: norm [C]; w1, w3 [F, C]; w2 [C, F].
// Saved: x, n [C]; gate, up, h [F]; rstd.
Part dense_part(const ModelConfig& m) {
  const int64_t C = m.dim, F = m.ffn_dim;
  Part p;
  p.matmul = 3 * F * C;
  p.norms = C;
  p.params = p.matmul + p.norms;
  p.active = p.params;
  p.matmul_active = p.matmul;
  p.saved = {2.0 * C + 3.0 * F, 1, 0};
  return p;
}

// DeepSeekMoE: norm [C]; router [E, C]; E routed and S shared SwiGLU experts of width I
// (w1, w3 [I, C], w2 [C, I] each). A token uses top_k routed experts.
Part moe_part(const ModelConfig& m) {
  const int64_t C = m.dim, I = m.moe.moe_inter_dim, E = m.moe.routed_experts, S = m.moe.shared_experts,
                k = m.moe.top_k;
  const int64_t expert = 3 * I * C;
  Part p;
  p.routed = E * expert;
  p.shared = S * expert;
  p.router = E * C;
  p.matmul = p.routed + p.shared + p.router;
  p.norms = C;
  p.params = p.matmul + p.norms;
  p.matmul_active = k * expert + p.shared + p.router;
  p.active = p.matmul_active + p.norms;
  // Saved (moe.h): x, n [C]; router scores [E] and gates [k] (fp32 statistics); expert
  // indices and permuted rows [k] each (i32); the k dispatched copies of n [k*C] and of the
  // expert outputs [k*C] (the gate gradient needs them); gate, up, h [I] of each of the k routed
  // slots and [S*I] of the shared experts; rstd. (Per micro-batch: expert offsets [E+1], ignored.)
  p.saved.act = 2.0 * C + 2.0 * k * C + 3.0 * (k + S) * I;
  p.saved.f32 = 1.0 + E + k;
  p.saved.i32 = 2.0 * k;
  p.estimated = !BK_PLAN_HAVE_MOE;
  return p;
}

// The connector around one sublayer (hyper_connection.h). Its 2-D weights count as matmul
// parameters, as in Model::num_matmul_params.
Part connector_part(const ModelConfig& m) {
  const int64_t C = m.dim, n = m.streams();
  Part p;
  if (m.residual.mode == "mhc") {
    // phi [n*n + 2n, n*C], alpha [3], bias [n*n + 2n].
    // Saved: X [n*C], F's output [C]; h_pre, h_post [n], h_res, res_logits [n*n], rinv, z [n*n+2n].
    const int64_t mm = n * n + 2 * n;
    p.matmul = mm * n * C;
    p.params = p.matmul + 3 + mm;
    p.saved = {double(n * C + C), double(2 * n + 2 * n * n + 1 + mm), 0};
  } else if (m.residual.mode == "hc") {
    // w [n+2, C], scale [3], static_pre [n], static_post [n], static_res [n, n].
    // Saved: X [n*C], F's output [C]; h_pre, h_post [n], h_res [n*n], rinv [n], z [n*(n+2)].
    p.matmul = (n + 2) * C + n * n;
    p.params = (n + 2) * C + 3 + 2 * n + n * n;
    p.saved = {double(n * C + C), double(2 * n + n * n + n + n * (n + 2)), 0};
  }  // baseline: y = x + F(x) keeps nothing of its own
  p.active = p.params;
  p.matmul_active = p.matmul;
  return p;
}

bool moe_block(const ModelConfig& m, int layer) { return m.ffn == "moe" && layer >= m.moe.first_dense_layers; }

}  // namespace

ModelCounts count_model(const ModelConfig& m) {
  ModelCounts c;
  const int64_t C = m.dim, V = m.vocab_size;
  const Part attn = attention_part(m), dense = dense_part(m), moe = moe_part(m), conn = connector_part(m);

  c.attention_per_layer = attn.params;
  c.dense_ffn_per_layer = dense.params;
  c.moe_per_layer_total = moe.params;
  c.moe_per_layer_active = moe.active;
  c.connector_per_sublayer = conn.params;

  c.embedding = V * C;
  c.head = V * C;
  c.norms = C;  // final norm
  c.first_stage_params = c.embedding;
  c.embedding_saved = {0, 0, 1};  // token ids
  int64_t matmul_active = c.head;
  int64_t active = c.head + C;

  auto add_sublayer = [&](const std::string& name, const std::string& kind, const Part& f) {
    SublayerCount s;
    s.name = name;
    s.kind = kind;
    s.params = f.params + conn.params;
    s.expert_params = f.routed;
    s.active = f.active + conn.active;
    s.matmul_active = f.matmul_active + conn.matmul_active;
    s.connector = conn.params;
    s.saved = f.saved;
    s.saved += conn.saved;
    s.connector_saved = conn.saved;
    s.stream_width = double(m.streams() * C);
    s.estimated = f.estimated;
    c.estimates = c.estimates || f.estimated;
    c.connectors += conn.params;
    c.norms += f.norms;
    active += s.active;
    matmul_active += s.matmul_active;
    c.sublayers.push_back(std::move(s));
  };
  for (int l = 0; l < m.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l);
    add_sublayer(p + ".attn", m.attention, attn);
    c.attention += attn.matmul;
    if (moe_block(m, l)) {
      add_sublayer(p + ".ffn", "moe", moe);
      c.moe_layers++;
      c.moe_routed += moe.routed;
      c.moe_shared += moe.shared;
      c.moe_router += moe.router;
      c.routing_bias += m.moe.routed_experts;
    } else {
      add_sublayer(p + ".ffn", "dense", dense);
      c.dense_layers++;
      c.dense_ffn += dense.matmul;
    }
  }

  // MTP (depth d, mtp.h): per module two RMSNorms [C] (hidden state, embedding of the next
  // token), a projection [C, 2C], and one block built like the main ones (the model's attention,
  // the FFN kind of its last block, the model's connectors around both); the embedding and the
  // head (final norm included) are shared, and the head runs once more per module (its FLOPs
  // count again). Saved per module: next tokens and targets (i32); h, e [C] and their rstds; the
  // normalised concat [2C]; the block; the module head's x, n [C], logits [V], rstd, targets.
  if (m.mtp.depth > 0) {
    const bool moe_ffn = moe_block(m, m.n_layers - 1);
    const Part& f = moe_ffn ? moe : dense;
    c.mtp_per_module = 2 * C + 2 * C * C + attn.params + f.params + 2 * conn.params;
    c.mtp_per_module_active = 2 * C + 2 * C * C + attn.active + f.active + 2 * conn.active;
    c.mtp = m.mtp.depth * c.mtp_per_module;
    active += m.mtp.depth * c.mtp_per_module_active;
    matmul_active +=
        m.mtp.depth * (2 * C * C + attn.matmul_active + f.matmul_active + 2 * conn.matmul_active + c.head);
    c.last_stage_expert_params = m.mtp.depth * f.routed;
    if (moe_ffn) c.routing_bias += int64_t(m.mtp.depth) * m.moe.routed_experts;
    ActivationCount per;
    per.act = 4.0 * C;
    per.f32 = 2;
    per.i32 = 2;
    per += attn.saved;
    per += f.saved;
    per += conn.saved;
    per += conn.saved;
    per.act += 2.0 * C + double(V);
    per.f32 += 1;
    per.i32 += 1;
    for (int d = 0; d < m.mtp.depth; ++d) c.mtp_saved += per;
    c.estimates = c.estimates || attn.estimated || f.estimated || !BK_PLAN_HAVE_MTP;
  }
  c.last_stage_params = C + c.head + c.mtp;
  c.head_saved = {2.0 * C + double(V), 1, 1};  // x, n, logits; rstd; targets

  c.total = c.embedding + c.head + c.attention + c.dense_ffn + c.moe_routed + c.moe_shared + c.moe_router +
            c.connectors + c.norms + c.mtp;
  c.active = active;
  c.matmul_active = matmul_active;

  // Causal attention: QK^T (qk dims) and AV (v dims), 2 FLOPs per multiply-add, x3 for forward +
  // backward, over seq_len keys, halved for the causal mask.
  const double qk = m.attention == "mha" ? double(C) / m.n_heads : double(m.mla.qk_nope_dim + m.mla.qk_rope_dim);
  const double v = m.attention == "mha" ? double(C) / m.n_heads : double(m.mla.v_head_dim);
  const double width = m.n_heads * (qk + v);
  c.matmul_flops_per_token = 6.0 * double(matmul_active);
  c.attention_flops_per_token = 6.0 * double(m.n_layers + m.mtp.depth) * double(m.seq_len) * width / 2.0;
  c.flops_per_token = c.matmul_flops_per_token + c.attention_flops_per_token;
  return c;
}

std::vector<StagePlan> plan_stages(const ModelCounts& counts, const ModelConfig& m, const Layout& L) {
  const int units = int(counts.sublayers.size());
  BK_CHECK(L.pp >= 1, "pp must be at least 1, got {}", L.pp);
  BK_CHECK(L.dp >= 1, "dp must be at least 1, got {}", L.dp);
  BK_CHECK(L.ep >= 1, "ep must be at least 1, got {}", L.ep);
  BK_CHECK(units % L.pp == 0,
           "pp = {} does not divide the {} sublayers ({} layers x 2): stages are equal contiguous "
           "splits of the sublayer list; use a divisor of {}",
           L.pp, units, m.n_layers, units);
  if (m.ffn == "moe")
    BK_CHECK(m.moe.routed_experts % L.ep == 0, "ep = {} does not divide the {} routed experts of a MoE layer",
             L.ep, m.moe.routed_experts);
  BK_CHECK(L.micro_batch_size >= 1 && L.num_microbatches >= 1, "micro-batch size and count must be >= 1");

  const int per = units / L.pp;
  const double tokens = double(L.micro_batch_size) * m.seq_len;
  std::vector<StagePlan> out;
  for (int s = 0; s < L.pp; ++s) {
    StagePlan st;
    st.first = s * per;
    st.end = (s + 1) * per;
    // Recomputation (docs/recompute.md): blocks of k sublayers inside the stage keep their input
    // (n C per token); mhc keeps F's saved state and output, full nothing else; one block's full
    // state exists again while its backward runs.
    const bool rc = L.recompute != "none";
    const int k = L.recompute_block > 0 ? std::min(L.recompute_block, per) : per;
    ActivationCount saved;
    double block_extra = 0, worst_extra = 0;  // a block's rebuilt state beyond what it keeps
    for (int i = st.first; i < st.end; ++i) {
      const SublayerCount& sub = counts.sublayers[i];
      st.params += sub.params;
      st.expert_params += sub.expert_params;
      if ((i - st.first) % k == 0) {
        if (rc) saved.act += sub.stream_width;
        block_extra = 0;
      }
      ActivationCount kept = sub.saved;
      if (L.recompute == "mhc") {
        kept.act -= sub.connector_saved.act - double(m.dim);  // F's output stays
        kept.f32 -= sub.connector_saved.f32;
        kept.i32 -= sub.connector_saved.i32;
      } else if (L.recompute == "full") {
        kept = {};
      }
      saved += kept;
      block_extra += sub.saved.bytes(L.act_bytes) - kept.bytes(L.act_bytes);
      worst_extra = std::max(worst_extra, block_extra);
    }
    st.rebuild_bytes = worst_extra * tokens;
    if (s == 0) {
      st.params += counts.first_stage_params;
      saved += counts.embedding_saved;
    }
    if (s == L.pp - 1) {
      st.params += counts.last_stage_params;
      st.expert_params += counts.last_stage_expert_params;
      saved += counts.head_saved;
      saved += counts.mtp_saved;
    }
    st.params_per_rank = (st.params - st.expert_params) + st.expert_params / L.ep;
    const double p = double(st.params_per_rank);
    st.state_bytes = p * param_state_bytes(L.act_bytes);
    st.state_bytes_zero1 =
        p * (param_state_bytes(L.act_bytes) - optimizer_state_bytes(L.act_bytes)) +
        p * optimizer_state_bytes(L.act_bytes) / L.dp;
    st.saved_bytes_per_microbatch = saved.bytes(L.act_bytes) * tokens;
    st.in_flight = std::min(L.pp - s, L.num_microbatches);
    st.activation_bytes = st.in_flight * st.saved_bytes_per_microbatch + st.rebuild_bytes;
    out.push_back(st);
  }
  return out;
}

}  // namespace bk
