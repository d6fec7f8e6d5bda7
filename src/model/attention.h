// Causal multi-head self-attention sublayer with its own pre-norm:
//   F(x) = Wo · attn(rope(Wq n), rope(Wk n), Wv n),  n = RMSNorm(x)
// (MLA replaces the projections in the DeepSeek-V3 block; the attention kernel is shared.)
#pragma once
#include "model/layer.h"
#include "model/rmsnorm_layer.h"

namespace bk {

struct AttentionShape {
  int64_t dim = 0, n_heads = 0;
  float rope_theta = 10000.0f, norm_eps = 1e-6f;
  int64_t head_dim() const { return dim / n_heads; }
};

class Attention : public Layer {
 public:
  Attention(const std::string& prefix, AttentionShape shape);
  std::string name() const override { return prefix_; }
  void init(uint64_t seed, double std, double out_std);
  void forward(const MicroBatch& mb, Tensor x, Tensor y) override;
  void backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) override;
  void backward_weight(const MicroBatch& mb) override;
  ParamList params() override { return {&norm_.weight, &wq_, &wk_, &wv_, &wo_}; }
  int64_t out_width() const override { return s_.dim; }

 private:
  struct Saved {
    Buffer x, rstd, n, q, k, v, att, lse;  // forward
    Buffer dy, dq, dk, dv, dn;             // from backward_input, for the weight gradients
  };
  std::string prefix_;
  AttentionShape s_;
  Norm norm_;
  Param wq_, wk_, wv_, wo_;
  PerMicroBatch<Saved> saved_;
};

}  // namespace bk
