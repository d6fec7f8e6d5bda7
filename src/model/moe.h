// DeepSeekMoE feed-forward sublayer with its own pre-norm (docs/model.md):
//   n = RMSNorm(x);  s = sigmoid(W_r n);  top-k experts by s + b (b: balancing bias, no gradient)
//   F(x) = sum_{j in top-k} g_j Expert_j(n) + Shared(n),  g = route_scale * s_sel / sum(s_sel)
// Tokens are grouped by expert (plan, permute, one GEMM chain per expert on its contiguous rows,
// unpermute weighted by the gates). With expert parallelism (an ep group of P ranks) this rank
// holds experts [r*E/P, (r+1)*E/P) only; an ExpertExchange carries the grouped rows to their
// owners and back between the permute and the unpermute (and the gradients the other way).
// Loss-free balancing: after each optimizer step b_i moves by gamma toward the mean load
// (end_step). Optional sequence-wise balance loss (DeepSeek-V3) with weight alpha.
#pragma once
#include <memory>
#include <vector>

#include "config/config.h"
#include "model/layer.h"
#include "model/rmsnorm_layer.h"
#include "model/swiglu_mlp.h"
#include "parallel/expert_exchange.h"

namespace bk {

// One MoE layer's routing statistics over the micro-batches of an optimizer step.
struct MoeStats {
  std::string name;
  std::vector<double> load;  // tokens routed to each expert (all top-k slots)
  double load_max = 0, load_min = 0, load_cv = 0;  // of `load`; cv = std / mean
  double bias_min = 0, bias_max = 0;               // after this step's update
  double balance_loss = 0;                         // mean over the step's tokens (0 if disabled)
};

class Moe : public Layer {
 public:
  // ep: the expert-parallel group (nullptr: this process holds every expert).
  Moe(const std::string& prefix, int64_t dim, const MoeConfig& cfg, float norm_eps, Communicator* ep = nullptr);
  std::string name() const override { return prefix_; }
  void init(uint64_t seed, double std, double out_std);
  void forward(const MicroBatch& mb, Tensor x, Tensor y) override;
  void backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) override;
  void backward_weight(const MicroBatch& mb) override;
  ParamList params() override;
  int64_t out_width() const override { return dim_; }
  void set_format(const ActivationFormat& f) override;  // moves the routing bias too

  // The routing bias, saved in checkpoints as "<prefix>.router.bias".
  std::vector<std::pair<std::string, Tensor>> state() { return {{prefix_ + ".router.bias", bias_}}; }
  // Statistics of the step's training micro-batches (summed over `data`, the ranks sharing the
  // global batch, when given); then the bias update with step gamma; then the counters start over.
  MoeStats end_step(double gamma, Communicator* data = nullptr);
  ExpertRange owned() const { return owned_; }

 private:
  struct Saved {
    Buffer x, rstd, n;                      // input and its norm
    Buffer scores, idx, gates, rows, offsets;
    Buffer offsets_host;                    // offsets on the host (the loads)
    ExpertExchange exchange;                // this micro-batch's rows to the experts' ranks
    Buffer y_perm;                          // the experts' outputs, back in this rank's plan order
    Buffer x_loc, gate_p, up_p, h_p;        // the local experts' rows (expert-major)
    Buffer s_gate, s_up, s_h;               // shared experts
    Buffer dy, dy_loc, dgate_p, dup_p, ds_gate, ds_up, dlogits, dn;  // from backward_input
  };
  // Local expert i's rows of a tensor in the exchange's local layout.
  static Tensor expert_rows(Tensor t, const ExpertExchange& x, int i) {
    return t.rows(x.local_begin(i), x.local_end(i));
  }

  std::string prefix_;
  int64_t dim_;
  MoeConfig cfg_;
  Norm norm_;
  Param router_;  // [E, C]
  Buffer bias_;   // [E]
  SwiGluMlp shared_;
  std::unique_ptr<Communicator> self_;  // the ep group of a one-process job
  Communicator* ep_;
  ExpertRange owned_;
  std::vector<SwiGluMlp> experts_;  // experts_[i] is global expert owned_.first + i
  PerMicroBatch<Saved> saved_;
  std::vector<double> step_load_;
  double step_balance_ = 0;
  int64_t step_tokens_ = 0;
};

}  // namespace bk
