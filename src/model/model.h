// Model: the decoder as an ordered list of layers
//   baseline:  embed -> [attn_conn(attn), ffn_conn(ffn)] x n_layers -> head
//   hc, mhc:   embed -> expand to n streams -> [...] x n_layers -> collapse (mean) -> head
// where *_conn is the connector of model.residual.mode around its sublayer, attn is MHA or MLA
// (model.attention), ffn is a dense SwiGLU or, after model.moe.first_dense_layers blocks, MoE
// (model.ffn), and head is the final norm, W_head and the loss — with model.mtp.depth > 0 an
// MtpHead that also runs the multi-token-prediction modules. A pipeline stage is a contiguous range of this list.
#pragma once
#include <memory>
#include <vector>

#include "config/config.h"
#include "model/connector_probe.h"
#include "model/layer.h"
#include "model/layer_stack.h"
#include "model/moe.h"

namespace bk {

class Communicator;

class Model {
 public:
  // ep: the expert-parallel group; each MoE layer holds only its share of the routed experts.
  // nullptr: one process holds them all.
  Model(const ModelConfig& cfg, uint64_t seed, Communicator* ep = nullptr);

  // Runs every layer forward on mb; returns the sum of the per-token losses (in double).
  double forward(const MicroBatch& mb);
  // Every layer in reverse: its input gradient, then its weight gradient (accumulated), so its
  // saved state is freed at once (layer_stack.h backward_layers).
  void backward(const MicroBatch& mb);

  // Selective recomputation (layer_stack.h, docs/recompute.md) over blocks of `block` consecutive
  // sublayers (attention or FFN with its connector) of the main stack, cut inside each of
  // num_stages equal pipeline stages; block 0 = one block per stage. mhc needs connectors.
  void set_recompute(const std::string& mode, int block, int num_stages = 1);
  Recompute& recompute() { return recompute_; }

  ParamList params();
  // Moves the parameters (working copies, full-precision masters for bf16, gradients) and the
  // MoE biases to f.device, and sets every layer's activation format (layer.h). Models are built
  // and initialised on the CPU in f32; f64 on the CPU is for finite-difference checks.
  void place(const ActivationFormat& f);
  const ActivationFormat& format() const { return format_; }
  // Model state that is not a parameter (the MoE routing biases), by global name.
  std::vector<std::pair<std::string, Tensor>> state();
  // After an optimizer step: each MoE layer's statistics and its routing-bias update. data: the
  // ranks that share the global batch (loads are summed over them so every replica applies the
  // same update); nullptr for one process.
  std::vector<MoeStats> end_step(double bias_update_speed, Communicator* data = nullptr);
  // Mean MTP loss (mean over depths of each depth's mean cross-entropy) over the training
  // micro-batches since the last call; 0 without MTP.
  double take_mtp_loss();
  // The connectors in sublayer order (their coefficients after a forward with mb.probe set).
  std::vector<const ConnectorProbe*> connectors() const;
  const std::vector<std::unique_ptr<Layer>>& layers() const { return layers_; }
  const ModelConfig& config() const { return cfg_; }

  int64_t num_params() const;
  // Parameters that take part in matrix products (all but the embedding table and norms).
  int64_t num_matmul_params() const;
  // Training FLOPs per token (count_model in model_plan.h): 6 x active matrix-product
  // parameters + causal attention.
  double flops_per_token() const;

 private:
  ModelConfig cfg_;
  ActivationFormat format_;
  std::vector<std::unique_ptr<Layer>> layers_;
  Recompute recompute_;
  std::vector<Moe*> moe_layers() const;
};

}  // namespace bk
