// Model planning: parameter counts, FLOPs per token and saved-activation sizes computed
// analytically from a ModelConfig (no model is built, so it works for the paper's 27B shapes),
// and their split over a pipeline / expert / data-parallel layout. `birkhoff plan` prints it;
// docs/model.md ("Parameter counts and `birkhoff plan`") has the formulas.
//
// Conventions:
// - total counts every trainable parameter (embedding and head are untied). The MoE routing
//   bias is model state updated outside the optimizer, not a parameter: see routing_bias.
// - active = what one token's forward uses: total minus the embedding table (a lookup) minus the
//   routed experts the token is not sent to (routed_experts - top_k per MoE layer).
// - FLOPs per token (training, forward + backward) = 6 * matmul_active
//                                                  + 6 * attention_layers * seq_len * attn_width / 2
//   where matmul_active counts every 2-D weight except the embedding table (only the top_k routed
//   experts of each MoE layer; the head once per output: main + each MTP module), and
//   attn_width = n_heads * (qk_head_dim + v_head_dim) (= 2 * dim for mha), halved for causality.
//   For dense mha models this is exactly Model::flops_per_token.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"

namespace bk {

// What one layer saves for its backward, per token, by storage class.
struct ActivationCount {
  double act = 0;  // elements in the activation dtype (bf16 on the GPU, f32 on the CPU)
  double f32 = 0;  // statistics kept in fp32: RMSNorm rstd, attention lse, connector coefficients,
                   // router scores and gates
  double i32 = 0;  // int32: token ids, targets, expert indices
  double bytes(int act_bytes) const { return act * act_bytes + 4.0 * (f32 + i32); }
  ActivationCount& operator+=(const ActivationCount& o) {
    act += o.act, f32 += o.f32, i32 += o.i32;
    return *this;
  }
};

// One sublayer (connector + attention or FFN): the unit pipeline stages are cut from.
struct SublayerCount {
  std::string name;            // layers.3.attn, layers.3.ffn
  std::string kind;            // mha | mla | dense | moe
  int64_t params = 0;          // the sublayer and its connector
  int64_t expert_params = 0;   // of which routed experts (split over the ep ranks)
  int64_t active = 0;          // used by one token
  int64_t matmul_active = 0;   // active 2-D weights (the FLOPs)
  int64_t connector = 0;       // the connector's coefficient parameters
  ActivationCount saved;       // per token, connector included
  ActivationCount connector_saved;  // the connector's part of `saved` (X, F's output, coefficients)
  double stream_width = 0;     // n * C: a recompute block's saved input per token
  bool estimated = false;      // the layer's Saved struct was not available: an estimate
};

struct ModelCounts {
  int64_t total = 0;
  int64_t active = 0;
  // Disjoint breakdown, sums to total. Matrices only, except: norms = every RMSNorm weight of
  // the main model (sublayer pre-norms, MLA latent norms, final norm); mtp = the MTP modules
  // whole (their norms, projection, block and its connectors).
  int64_t embedding = 0, head = 0, attention = 0, dense_ffn = 0, moe_routed = 0, moe_shared = 0,
          moe_router = 0, connectors = 0, norms = 0, mtp = 0;
  // Per layer, including the sublayer's own norms, excluding its connector.
  int64_t attention_per_layer = 0, dense_ffn_per_layer = 0, moe_per_layer_total = 0,
          moe_per_layer_active = 0, connector_per_sublayer = 0, mtp_per_module = 0,
          mtp_per_module_active = 0;
  int dense_layers = 0, moe_layers = 0;
  int64_t routing_bias = 0;  // model state (not trained by the optimizer): routed_experts per MoE layer
  int64_t matmul_active = 0;
  double matmul_flops_per_token = 0;     // 6 * matmul_active
  double attention_flops_per_token = 0;  // the seq_len-dependent part
  double flops_per_token = 0;

  // Pipeline units: the 2 * n_layers sublayers in order, plus what the first and last stage add.
  std::vector<SublayerCount> sublayers;
  int64_t first_stage_params = 0;     // the embedding
  int64_t last_stage_params = 0;      // final norm, head, MTP modules
  int64_t last_stage_expert_params = 0;  // routed experts inside MTP modules
  ActivationCount embedding_saved, head_saved, mtp_saved;  // per token
  bool estimates = false;             // some saved counts are estimates (layers not yet built)
};

ModelCounts count_model(const ModelConfig& cfg);

// A parallel layout to plan for.
struct Layout {
  int pp = 1, dp = 1, ep = 1;
  int micro_batch_size = 1;   // sequences per micro-batch
  int num_microbatches = 1;   // per optimizer step and data-parallel replica
  int act_bytes = 2;          // 2: bf16 activations and weights; 4: f32
  std::string recompute = "none";  // training.recompute: none | mhc | full
  int recompute_block = 0;         // sublayers per block; 0 = the stage
};

struct StagePlan {
  int first = 0, end = 0;        // sublayers [first, end)
  int64_t params = 0;            // held by the stage over all its ep ranks
  int64_t expert_params = 0;     // of which routed experts
  int64_t params_per_rank = 0;   // non-expert + experts / ep
  double state_bytes = 0;        // weights + grads + fp32 master (bf16 only) + 2 Adam moments, per rank
  double state_bytes_zero1 = 0;  // the same with the optimizer state sharded over dp (ZeRO-1)
  double saved_bytes_per_microbatch = 0;  // held from forward to backward (after recomputation)
  double rebuild_bytes = 0;      // recompute: what rebuilding the largest block adds, for one micro-batch
  int in_flight = 0;             // micro-batches whose activations are held at the peak (1F1B)
  double activation_bytes = 0;   // peak: in_flight * saved_bytes_per_microbatch + rebuild_bytes
};

// Equal contiguous split of the sublayer list over pp stages under 1F1B (stage s holds
// min(pp - s, num_microbatches) micro-batches at its peak). Throws bk::Error when pp does not
// divide the sublayer count, or ep does not divide the routed experts.
std::vector<StagePlan> plan_stages(const ModelCounts& counts, const ModelConfig& cfg, const Layout& layout);

// Per-parameter bytes of weights + gradients + optimizer state: bf16 weights and grads, fp32
// master and two fp32 moments (16); f32 training keeps no separate master (16 as well).
// optimizer_state_bytes is the part ZeRO-1 shards over dp.
inline double param_state_bytes(int act_bytes) { return act_bytes == 2 ? 2 + 2 + 4 + 8 : 4 + 4 + 8; }
inline double optimizer_state_bytes(int act_bytes) { return act_bytes == 2 ? 4 + 8 : 8; }

}  // namespace bk
