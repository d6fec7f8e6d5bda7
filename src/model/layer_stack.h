// Running a contiguous list of layers: the model, an MTP module (later, a pipeline stage).
#pragma once
#include <memory>
#include <vector>

#include "model/layer.h"

namespace bk {

using LayerList = std::vector<std::unique_ptr<Layer>>;

// x through every layer's forward; returns the last layer's output (in x's dtype).
Buffer forward_layers(const LayerList& layers, const MicroBatch& mb, Buffer x);
// dy back through every layer's backward_input, last layer first; in_width is the width of the
// first layer's input. Returns the gradient of that input.
Buffer backward_input_layers(const LayerList& layers, const MicroBatch& mb, Buffer dy, int64_t in_width);
// Every layer's (deferred) weight gradient, last layer first.
void backward_weight_layers(const LayerList& layers, const MicroBatch& mb);
// Sum of per-token losses, accumulated in double.
double sum_losses(const Buffer& losses);

}  // namespace bk
