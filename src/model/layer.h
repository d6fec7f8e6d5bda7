// Layer: the unit the model, the pipeline stages and recomputation are built from.
//
// A layer maps a hidden-state tensor x to y. It has an explicit forward and a backward split in
// two, as in llm.c with the pipeline's needs added:
//   forward(mb, x, y)         y = f(x); saves what the backward needs under mb.id
//   backward_input(mb, dy, dx) dx = J^T dy; keeps what the weight gradient needs
//   backward_weight(mb)        accumulates parameter gradients, then frees mb's saved state
// Saved state is kept per micro-batch, so several micro-batches can be in flight (pipeline
// schedules) and a weight gradient can run long after its input gradient (zero-bubble "W").
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/tensor.h"
#include "model/param.h"

namespace bk {

struct MicroBatch {
  int id = 0;                         // unique among micro-batches in flight
  int B = 0, T = 0;                   // sequences and sequence length; N = B*T tokens
  const int32_t* tokens = nullptr;    // [N] inputs
  const int32_t* targets = nullptr;   // [N] next tokens (< 0 = ignored)
  float loss_scale = 1.0f;            // d(objective)/d(per-token loss), e.g. 1/tokens per step
  bool keep = true;                   // false: forward only (evaluation), nothing is saved
  bool probe = false;                 // connectors record their coefficients (diagnostics)
  // Recomputation (layer_stack.h): a training forward whose state is rebuilt in backward saves
  // nothing now (discard); the backward-time re-run saves it but counts nothing again.
  bool discard = false;
  bool recompute = false;

  int64_t tokens_count() const { return int64_t(B) * T; }
  bool saves() const { return keep && !discard; }      // layers keep state for the backward
  bool counts() const { return keep && !recompute; }   // statistics of a training micro-batch
};

// Where a layer keeps its activations, and in what precision.
struct ActivationFormat {
  DType dtype = DType::f32;     // f32; bf16 (GPU mixed precision); f64 (finite-difference checks)
  Device device = Device::cpu;
  // Statistics stay in f32 when activations are bf16: norm rstd, per-token losses, attention's
  // log-sum-exp, the connector coefficients and their gradients, router logits, scores and gates.
  DType stats() const { return dtype == DType::bf16 ? DType::f32 : dtype; }
};

class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string name() const = 0;
  virtual void forward(const MicroBatch& mb, Tensor x, Tensor y) = 0;
  virtual void backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) = 0;
  virtual void backward_weight(const MicroBatch& mb) = 0;
  virtual ParamList params() { return {}; }
  // Width of y per token (x of the next layer); the head's y is one loss per token.
  virtual int64_t out_width() const = 0;
  // Dtype and device of the activations (ActivationFormat). Layers that wrap others pass it on;
  // Model::place moves the parameters.
  virtual void set_format(const ActivationFormat& f) { fmt_ = f; }
  const ActivationFormat& format() const { return fmt_; }
  // The buffer for y of forward: out_width() per token, an activation (the head overrides it:
  // its y is one loss per token, a statistic).
  virtual Buffer output(int64_t tokens) const { return buffer({tokens, out_width()}); }
  // An activation buffer in this layer's format (its input gradient, its saved input). Its
  // contents are undefined (Buffer::uninitialized): every op overwrites its outputs; an
  // accumulating target is zeroed explicitly.
  Buffer buffer(Shape s) const { return Buffer::uninitialized(s, fmt_.dtype, fmt_.device); }
  // Layers this one runs inside it (a connector's sublayer, the MTP modules' layers), so the
  // model can find every MoE layer.
  virtual std::vector<Layer*> children() { return {}; }
  // recompute: mhc. Restores the state a light forward dropped, from the layer's input x, and
  // writes y as forward did, without re-running anything expensive (hyper_connection.h).
  virtual void rebuild(const MicroBatch& mb, Tensor x, Tensor y) {
    BK_FAIL("{}: this layer cannot be rebuilt for recompute: mhc", name());
  }

 protected:
  Buffer stats_buffer(Shape s) const { return Buffer::uninitialized(s, fmt_.stats(), fmt_.device); }
  Buffer index_buffer(Shape s) const { return Buffer::uninitialized(s, DType::i32, fmt_.device); }
  // A device copy of host i32 data (token ids, targets), in this layer's format.
  Buffer upload_indices(const int32_t* host, int64_t n) const {
    Buffer b = index_buffer({n});
    b.upload(Tensor{const_cast<int32_t*>(host), DType::i32, {n}, Device::cpu});
    return b;
  }
  ActivationFormat fmt_;
};

// Saved state of one layer, keyed by micro-batch id.
template <typename Saved>
class PerMicroBatch {
 public:
  Saved& put(int mb) { return map_[mb] = Saved{}; }
  Saved& get_or_put(int mb) { return map_[mb]; }
  Saved& at(int mb) {
    auto it = map_.find(mb);
    BK_CHECK(it != map_.end(), "no saved activations for micro-batch {} (backward before forward?)", mb);
    return it->second;
  }
  void drop(int mb) { map_.erase(mb); }
  size_t in_flight() const { return map_.size(); }

 private:
  std::map<int, Saved> map_;
};

}  // namespace bk
