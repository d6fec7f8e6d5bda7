// Dense SwiGLU feed-forward sublayer with its own pre-norm:
//   F(x) = W2 (silu(W1 n) * W3 n),  n = RMSNorm(x)
#pragma once
#include "model/layer.h"
#include "model/rmsnorm_layer.h"
#include "model/swiglu_mlp.h"

namespace bk {

class Ffn : public Layer {
 public:
  Ffn(const std::string& prefix, int64_t dim, int64_t hidden, float norm_eps);
  std::string name() const override { return prefix_; }
  void init(uint64_t seed, double std, double out_std) { mlp_.init(seed, std, out_std); }
  void forward(const MicroBatch& mb, Tensor x, Tensor y) override;
  void backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) override;
  void backward_weight(const MicroBatch& mb) override;
  ParamList params() override { return {&norm_.weight, &mlp_.w1, &mlp_.w3, &mlp_.w2}; }
  int64_t out_width() const override { return dim_; }

 private:
  struct Saved {
    Buffer x, rstd, n, gate, up, h;  // forward
    Buffer dy, dgate, dup, dn;       // from backward_input
  };
  std::string prefix_;
  int64_t dim_, hidden_;
  Norm norm_;
  SwiGluMlp mlp_;
  PerMicroBatch<Saved> saved_;
};

}  // namespace bk
