#include "model/layer_stack.h"

namespace bk {

Buffer forward_layers(const LayerList& layers, const MicroBatch& mb, Buffer x) {
  const int64_t N = mb.tokens_count();
  for (auto& layer : layers) {
    Buffer next({N, layer->out_width()}, x.dtype());
    layer->forward(mb, x, next);
    x = std::move(next);
  }
  return x;
}

Buffer backward_input_layers(const LayerList& layers, const MicroBatch& mb, Buffer dy, int64_t in_width) {
  const int64_t N = mb.tokens_count();
  for (size_t i = layers.size(); i-- > 0;) {
    Buffer dx({N, i > 0 ? layers[i - 1]->out_width() : in_width}, dy.dtype());
    layers[i]->backward_input(mb, dy, dx);
    dy = std::move(dx);
  }
  return dy;
}

void backward_weight_layers(const LayerList& layers, const MicroBatch& mb) {
  for (size_t i = layers.size(); i-- > 0;) layers[i]->backward_weight(mb);
}

double sum_losses(const Buffer& losses) {
  const Buffer l = losses.to(DType::f64);
  double sum = 0;
  for (int64_t i = 0; i < l.numel(); ++i) sum += l.ptr<double>()[i];
  return sum;
}

}  // namespace bk
