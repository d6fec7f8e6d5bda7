// Token embedding: y[n] = table[tokens[n]]. The first layer of the model; x is unused and it
// produces no input gradient.
#pragma once
#include "model/layer.h"

namespace bk {

class Embedding : public Layer {
 public:
  Embedding(int64_t vocab, int64_t dim) : table_("embed.weight", {vocab, dim}, true) {}
  std::string name() const override { return "embed"; }
  void init(uint64_t seed, double std) { table_.init_normal(seed, std); }
  void forward(const MicroBatch& mb, Tensor x, Tensor y) override;
  void backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) override;
  void backward_weight(const MicroBatch& mb) override;
  ParamList params() override { return {&table_}; }
  int64_t out_width() const override { return table_.value.shape()[1]; }

 private:
  struct Saved {
    Buffer tokens, dy;
  };
  Param table_;
  PerMicroBatch<Saved> saved_;
};

}  // namespace bk
