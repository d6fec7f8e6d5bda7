#include "model/layer_stack.h"

#include <algorithm>

#include "kernels/ops.h"

namespace bk {

int Recompute::block_of(size_t layer) const {
  for (size_t b = 0; b < blocks.size(); ++b)
    if (layer >= blocks[b].first && layer < blocks[b].second) return int(b);
  return -1;
}

Recompute::Mode parse_recompute_mode(const std::string& s) {
  if (s == "none") return Recompute::Mode::none;
  if (s == "mhc") return Recompute::Mode::mhc;
  if (s == "full") return Recompute::Mode::full;
  BK_FAIL("recompute mode '{}': expected none, mhc or full", s);
}

namespace {
size_t end_of(const LayerList& layers, LayerRange r) { return std::min(r.end, layers.size()); }

// Restores the saved state of every layer of block b for mb from the block's input.
void rebuild_block(const LayerList& layers, const MicroBatch& mb, Recompute& rc, int b) {
  const int64_t N = mb.tokens_count();
  std::map<int, Buffer>& inputs = rc.inputs.at(mb.id);
  auto it = inputs.find(b);
  BK_CHECK(it != inputs.end(), "recompute: no saved input of block {} for micro-batch {}", b, mb.id);
  Buffer x = std::move(it->second);
  inputs.erase(it);
  const auto [begin, end] = rc.blocks[size_t(b)];
  for (size_t j = begin; j < end; ++j) {
    Buffer next = layers[j]->output(N);
    if (rc.mode == Recompute::Mode::full) {
      MicroBatch m = mb;
      m.recompute = true;
      layers[j]->forward(m, x, next);
    } else {
      layers[j]->rebuild(mb, x, next);
    }
    x = std::move(next);
  }
  if (inputs.empty()) rc.inputs.drop(mb.id);
}

Buffer run(LayerPass pass) {
  while (!pass.done()) pass.step();
  return pass.take();
}
}  // namespace

LayerPass::LayerPass(Kind kind, const LayerList& layers, const MicroBatch& mb, Buffer in, int64_t in_width,
                     Recompute* rc, LayerRange range)
    : kind_(kind), layers_(&layers), mb_(mb), x_(std::move(in)), in_width_(in_width), rc_(rc), range_(range) {
  range_.end = end_of(layers, range);
  next_ = kind == Kind::forward ? range_.first : range_.end;
}

bool LayerPass::done() const { return kind_ == Kind::forward ? next_ >= range_.end : next_ <= range_.first; }

void LayerPass::step() {
  BK_CHECK(!done(), "LayerPass::step after the last layer");
  const LayerList& layers = *layers_;
  const int64_t N = mb_.tokens_count();
  if (kind_ == Kind::forward) {
    const size_t i = next_++;
    const int b = rc_ && rc_->active() && mb_.saves() ? rc_->block_of(i) : -1;
    if (b >= 0 && i == rc_->blocks[size_t(b)].first) {  // a block's input: kept for its rebuild
      Buffer in(x_.shape(), x_.dtype(), x_.device());
      ops::copy(in, x_);
      rc_->inputs.get_or_put(mb_.id)[b] = std::move(in);
    }
    MicroBatch m = mb_;
    m.discard = b >= 0 && rc_->mode == Recompute::Mode::full;
    Buffer y = layers[i]->output(N);
    layers[i]->forward(m, x_, y);
    x_ = std::move(y);
    return;
  }
  const size_t i = --next_;
  const int b = rc_ && rc_->active() ? rc_->block_of(i) : -1;
  if (b >= 0 && i + 1 == rc_->blocks[size_t(b)].second) rebuild_block(layers, mb_, *rc_, b);
  Buffer dx = layers[i]->buffer({N, i > range_.first ? layers[i - 1]->out_width() : in_width_});
  layers[i]->backward_input(mb_, x_, dx);
  if (kind_ == Kind::backward) layers[i]->backward_weight(mb_);
  x_ = std::move(dx);
}

Buffer LayerPass::take() {
  BK_CHECK(done(), "LayerPass::take before the last layer");
  return std::move(x_);
}

Buffer forward_layers(const LayerList& layers, const MicroBatch& mb, Buffer x, Recompute* rc, LayerRange range) {
  return run(LayerPass(LayerPass::Kind::forward, layers, mb, std::move(x), 0, rc, range));
}

Buffer backward_input_layers(const LayerList& layers, const MicroBatch& mb, Buffer dy, int64_t in_width,
                             Recompute* rc, LayerRange range) {
  return run(LayerPass(LayerPass::Kind::backward_input, layers, mb, std::move(dy), in_width, rc, range));
}

Buffer backward_layers(const LayerList& layers, const MicroBatch& mb, Buffer dy, int64_t in_width, Recompute* rc,
                       LayerRange range) {
  return run(LayerPass(LayerPass::Kind::backward, layers, mb, std::move(dy), in_width, rc, range));
}

void backward_weight_layers(const LayerList& layers, const MicroBatch& mb, LayerRange range) {
  for (size_t i = end_of(layers, range); i-- > range.first;) layers[i]->backward_weight(mb);
}

double sum_losses(const Buffer& losses) {
  const Buffer l = losses.to_device(Device::cpu).to(DType::f64);  // on the GPU: waits for the forward
  double sum = 0;
  for (int64_t i = 0; i < l.numel(); ++i) sum += l.ptr<double>()[i];
  return sum;
}

}  // namespace bk
