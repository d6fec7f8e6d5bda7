#include "model/streams.h"

#include "kernels/ops.h"

namespace bk {

void StreamExpand::forward(const MicroBatch& mb, Tensor x, Tensor y) {
  ops::stream_expand_forward(y.view({mb.tokens_count(), n_, dim_}), x);
}

void StreamExpand::backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) {
  ops::stream_expand_backward(dx, dy.view({mb.tokens_count(), n_, dim_}));
}

StreamCollapse::StreamCollapse(int64_t n, int64_t dim) : n_(n), dim_(dim) {}

// The collapse is the pre apply with h_pre = 1/n for every token (kept between calls: on the GPU
// filling it is a host transfer).
Tensor StreamCollapse::weights_for(int64_t tokens) const {
  if (weights_.empty() || weights_.shape()[0] != tokens || weights_.dtype() != fmt_.stats() ||
      weights_.device() != fmt_.device) {
    weights_ = stats_buffer({tokens, n_});
    weights_.fill(1.0 / double(n_));
  }
  return weights_;
}

void StreamCollapse::forward(const MicroBatch& mb, Tensor x, Tensor y) {
  const int64_t N = mb.tokens_count();
  ops::stream_pre_forward(y, x.view({N, n_, dim_}), weights_for(N));
}

void StreamCollapse::backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) {
  const int64_t N = mb.tokens_count();
  // dx needs only the weights; x enters only the (discarded) gradient of the fixed weights.
  Buffer dh = stats_buffer({N, n_});
  Buffer no_x = buffer({N, n_, dim_});
  ops::stream_pre_backward(dx.view({N, n_, dim_}), dh, dy, no_x, weights_for(N));
}

}  // namespace bk
