// The n-stream state of hc/mhc models: StreamExpand copies the embedding into n identical
// streams; StreamCollapse takes their mean before the final norm and head (docs/mhc.md says why
// the mean: with identical streams it returns the baseline's hidden state unchanged).
#pragma once
#include "core/buffer.h"
#include "model/layer.h"

namespace bk {

class StreamExpand : public Layer {
 public:
  StreamExpand(int64_t n, int64_t dim) : n_(n), dim_(dim) {}
  std::string name() const override { return "streams.expand"; }
  void forward(const MicroBatch& mb, Tensor x, Tensor y) override;
  void backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) override;
  void backward_weight(const MicroBatch&) override {}
  int64_t out_width() const override { return n_ * dim_; }

 private:
  int64_t n_, dim_;
};

class StreamCollapse : public Layer {
 public:
  StreamCollapse(int64_t n, int64_t dim);
  std::string name() const override { return "streams.collapse"; }
  void forward(const MicroBatch& mb, Tensor x, Tensor y) override;
  void backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) override;
  void backward_weight(const MicroBatch&) override {}
  int64_t out_width() const override { return dim_; }

 private:
  int64_t n_, dim_;
  Tensor weights_for(int64_t tokens) const;  // [tokens, n] of 1/n
  mutable Buffer weights_;
};

}  // namespace bk
