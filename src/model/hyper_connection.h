// HyperConnection: the hc and mhc connectors around a sublayer F over an n-stream state X
// ([N, n, C] per token, passed between layers as [N, n*C]):
//   X' = H_res X + H_post^T F(H_pre X)
// hc:  H = s * tanh(norm(X_i) w) + H_static per stream (Zhu et al.), H_res unconstrained.
// mhc: [H_pre, H_post, H_res logits] = alpha * rinv * (phi vec(X)) + bias; sigmoid, 2*sigmoid,
//      Sinkhorn-Knopp (DeepSeek). docs/mhc.md has the equations and the initialisation, which
//      makes every connector start exactly as the baseline residual when the streams are equal.
#pragma once
#include <memory>

#include "config/config.h"
#include "model/connector_probe.h"
#include "model/layer.h"

namespace bk {

class HyperConnection : public Layer, public ConnectorProbe {
 public:
  // sublayer_index: position of F among all sublayers (hc's pre mapping starts as e_(index mod n)).
  HyperConnection(std::string name, std::unique_ptr<Layer> f, const ResidualConfig& cfg, int64_t dim,
                  int sublayer_index, float norm_eps);
  std::string name() const override { return name_; }
  void init(uint64_t seed);
  void forward(const MicroBatch& mb, Tensor x, Tensor y) override;
  void backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) override;
  void backward_weight(const MicroBatch& mb) override;
  ParamList params() override;
  void set_format(const ActivationFormat& f) override {
    fmt_ = f;
    f_->set_format(f);
  }
  int64_t out_width() const override { return n_ * dim_; }
  const ConnectorCoefficients& probed() const override { return probe_; }
  std::vector<Layer*> children() override { return {f_.get()}; }
  // recompute: mhc. A light forward keeps only F's output (C per token); rebuild() restores the
  // stream state, coefficients and their intermediates from this connector's input X, without
  // running F again (the runner in layer_stack.h keeps X at the start of each block).
  void set_light(bool on) { light_ = on; }
  void rebuild(const MicroBatch& mb, Tensor x, Tensor y) override;

 private:
  struct Saved {
    Buffer x, h_pre, h_post, h_res, f;  // forward
    Buffer res_logits, rinv, z;         // coefficient intermediates (z is u for hc)
    Buffer dlogits, dh_pre, dh_post, dh_res;  // from backward_input, for the weight gradients
  };
  void coefficients(Saved& st, int64_t N);
  bool light_ = false;

  std::string name_;
  std::unique_ptr<Layer> f_;
  bool mhc_;
  int64_t n_, dim_;
  int sinkhorn_iters_;
  int sublayer_index_;
  float eps_;
  ResidualConfig cfg_;
  // mhc: phi [n*n+2n, n*C], alpha [3], bias [n*n+2n]
  // hc:  w [n+2, C], scale [3], static_pre [n], static_post [n], static_res [n, n]
  Param proj_, scale_, bias_, static_pre_, static_post_, static_res_;
  PerMicroBatch<Saved> saved_;
  ConnectorCoefficients probe_;
};

}  // namespace bk
