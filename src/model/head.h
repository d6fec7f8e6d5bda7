// LM head and loss, the last layer: losses[n] = CE(W_head RMSNorm(x[n]), targets[n]).
// y is one loss per token. The loss is the root of the backward: backward_input ignores dy and
// seeds the gradient with mb.loss_scale per token.
#pragma once
#include "model/layer.h"
#include "model/rmsnorm_layer.h"

namespace bk {

class Head : public Layer {
 public:
  Head(int64_t vocab, int64_t dim, float norm_eps)
      : norm_("final_norm", dim, norm_eps), w_("head.weight", {vocab, dim}, true) {}
  std::string name() const override { return "head"; }
  void init(uint64_t seed, double std) { w_.init_normal(seed, std); }
  void forward(const MicroBatch& mb, Tensor x, Tensor y) override;
  void backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) override;
  void backward_weight(const MicroBatch& mb) override;
  ParamList params() override { return {&norm_.weight, &w_}; }
  int64_t out_width() const override { return 1; }

 private:
  struct Saved {
    Buffer x, rstd, n, logits, targets;  // forward
    Buffer dlogits, dn;                  // from backward_input
  };
  Norm norm_;
  Param w_;
  PerMicroBatch<Saved> saved_;
};

}  // namespace bk
