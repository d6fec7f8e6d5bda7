// Residual: the `baseline` connector around a sublayer F (n = 1 stream):
//   y = x + F(x)        (F carries its own pre-norm, so this is a pre-norm residual network)
// The hc and mhc connectors wrap F the same way with n streams.
#pragma once
#include <memory>

#include "model/connector_probe.h"
#include "model/layer.h"

namespace bk {

class Residual : public Layer, public ConnectorProbe {
 public:
  Residual(std::string name, std::unique_ptr<Layer> f) : name_(std::move(name)), f_(std::move(f)) {}
  std::string name() const override { return name_; }
  void forward(const MicroBatch& mb, Tensor x, Tensor y) override;
  void backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) override;
  void backward_weight(const MicroBatch& mb) override { f_->backward_weight(mb); }
  ParamList params() override { return f_->params(); }
  void set_format(const ActivationFormat& f) override {
    fmt_ = f;
    f_->set_format(f);
  }
  int64_t out_width() const override { return f_->out_width(); }
  std::vector<Layer*> children() override { return {f_.get()}; }
  // H_pre = H_post = H_res = 1 for every token.
  const ConnectorCoefficients& probed() const override { return probe_; }

 private:
  ConnectorCoefficients probe_;
  std::string name_;
  std::unique_ptr<Layer> f_;
};

}  // namespace bk
