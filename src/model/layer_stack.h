// Running a contiguous list of layers: the model, an MTP module, a pipeline stage.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/layer.h"

namespace bk {

using LayerList = std::vector<std::unique_ptr<Layer>>;

// Layers [first, end) of a list: a whole list (the model, an MTP module) or a pipeline stage of
// the model's.
struct LayerRange {
  size_t first = 0, end = SIZE_MAX;  // SIZE_MAX: to the end of the list
};

// Selective recomputation over blocks of consecutive layers (docs/recompute.md). The runner keeps
// each block's input (one tensor per block and micro-batch) and, when the backward reaches the
// block's last layer, rebuilds the block's saved state from it before going on:
//   mhc:  the connectors of the block ran light (HyperConnection::set_light: only F's output is
//         kept); rebuild() re-derives the stream states and coefficients, F is not re-run;
//   full: the block's forward saved nothing (MicroBatch::discard); it is run again (recompute).
// Either way the rebuilt state has the bits of the original, so the gradients do too.
struct Recompute {
  enum class Mode { none, mhc, full };
  Mode mode = Mode::none;
  std::vector<std::pair<size_t, size_t>> blocks;  // [begin, end) layer indices, ascending, disjoint
  PerMicroBatch<std::map<int, Buffer>> inputs;    // block -> its input, per micro-batch in flight

  bool active() const { return mode != Mode::none && !blocks.empty(); }
  int block_of(size_t layer) const;  // -1 outside every block
};
Recompute::Mode parse_recompute_mode(const std::string& s);

// One pass over a layer range, advanced a layer at a time: the functions below run one to the
// end; a pipeline's F&B pair alternates the steps of two (the forward of one micro-batch and the
// backward of another, sublayer by sublayer, so one's communication can hide behind the
// other's compute). The steps do exactly what the functions do, in the same order.
class LayerPass {
 public:
  enum class Kind { forward, backward_input, backward };  // backward: input and weight gradients
  // in: x (forward) or dy; in_width: the width of the range's input (backward only).
  LayerPass(Kind kind, const LayerList& layers, const MicroBatch& mb, Buffer in, int64_t in_width, Recompute* rc,
            LayerRange range);
  bool done() const;
  void step();    // the next layer (forward: first to last; backward: last to first)
  Buffer take();  // once done: the output (forward) or the range input's gradient

 private:
  Kind kind_;
  const LayerList* layers_;
  MicroBatch mb_;
  Buffer x_;
  int64_t in_width_;
  Recompute* rc_;
  LayerRange range_;
  size_t next_;
};

// x through every layer's forward; returns the last layer's output (in x's dtype).
Buffer forward_layers(const LayerList& layers, const MicroBatch& mb, Buffer x, Recompute* rc = nullptr,
                      LayerRange range = {});
// dy back through every layer's backward_input, last layer first; in_width is the width of the
// first layer's input. Returns the gradient of that input.
Buffer backward_input_layers(const LayerList& layers, const MicroBatch& mb, Buffer dy, int64_t in_width,
                             Recompute* rc = nullptr, LayerRange range = {});
// Every layer's (deferred) weight gradient, last layer first.
void backward_weight_layers(const LayerList& layers, const MicroBatch& mb, LayerRange range = {});
// The full backward (no deferred weight gradients): each layer's input gradient and then at once
// its weight gradient, last layer first, so each layer's saved state is freed as soon as it is
// used (the peak holds one rebuilt recompute block, not every layer's gradients). The same
// gradients, bit for bit, as backward_input_layers followed by backward_weight_layers.
Buffer backward_layers(const LayerList& layers, const MicroBatch& mb, Buffer dy, int64_t in_width,
                       Recompute* rc = nullptr, LayerRange range = {});
// Sum of per-token losses, accumulated in double.
double sum_losses(const Buffer& losses);

}  // namespace bk
