// LM head and loss, the last layer: losses[n] = CE(W_head RMSNorm(x[n]), targets[n]).
// y is one loss per token. The loss is the root of the backward: backward_input ignores dy and
// seeds the gradient with mb.loss_scale per token.
#pragma once
#include <memory>

#include "model/layer.h"
#include "model/rmsnorm_layer.h"

namespace bk {

// The final norm and the output projection; shared by the main head and the MTP heads.
struct HeadWeights {
  Norm norm;
  Param w;
  HeadWeights(int64_t vocab, int64_t dim, float norm_eps)
      : norm("final_norm", dim, norm_eps), w("head.weight", {vocab, dim}, true) {}
};

class Head : public Layer {
 public:
  // A head that owns its weights ...
  Head(int64_t vocab, int64_t dim, float norm_eps)
      : owned_(std::make_unique<HeadWeights>(vocab, dim, norm_eps)), hw_(owned_.get()) {}
  // ... or one that uses another head's (MTP); its params() is then empty.
  explicit Head(HeadWeights* shared) : hw_(shared) {}
  std::string name() const override { return "head"; }
  void init(uint64_t seed, double std) { hw_->w.init_normal(seed, std); }
  HeadWeights* weights() { return hw_; }
  void forward(const MicroBatch& mb, Tensor x, Tensor y) override;
  void backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) override;
  void backward_weight(const MicroBatch& mb) override;
  ParamList params() override { return owned_ ? ParamList{&hw_->norm.weight, &hw_->w} : ParamList{}; }
  int64_t out_width() const override { return 1; }
  Buffer output(int64_t tokens) const override { return stats_buffer({tokens, 1}); }

 private:
  struct Saved {
    Buffer x, rstd, n, logits, targets;  // forward
    Buffer dlogits, dn;                  // from backward_input
  };
  std::unique_ptr<HeadWeights> owned_;
  HeadWeights* hw_;
  PerMicroBatch<Saved> saved_;
};

}  // namespace bk
