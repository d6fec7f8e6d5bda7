// Param: one trainable tensor with its gradient, under its global name
// (e.g. "layers.3.attn.wq.weight"), so checkpoints do not depend on the parallel layout.
#pragma once
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/rng.h"

namespace bk {

struct Param {
  std::string name;
  Buffer value;   // the working weights the forward and backward read (bf16 in mixed precision)
  Buffer grad;    // f32 (f64 in finite-difference checks), accumulated over a step's micro-batches
  Buffer master;  // mixed precision: the f32 weights AdamW updates and checkpoints keep; else empty
  bool decay = true;  // AdamW weight decay applies (false for norms, biases, static coefficients)
  // Kept in f32 even when the working weights are bf16: the connector coefficients' parameters
  // (the mHC paper keeps phi in fp32), which enter only small per-token products.
  bool full_precision = false;
  // A routed expert's weight: held by one rank of the ep group (replicated over dp only), so its
  // gradient is summed over the dp group instead of all the ranks that share the batch.
  bool expert = false;

  Param() = default;
  Param(std::string n, Shape shape, bool decay_) : name(std::move(n)), value(shape), grad(shape), decay(decay_) {}

  // Fill with N(0, std^2) from the parameter's own random stream (seed, name).
  void init_normal(uint64_t seed, double std);
  void fill(float v);
  // The full-precision weights: what the optimizer updates and checkpoints save and restore.
  Tensor weights() const { return master.empty() ? value.tensor() : master.tensor(); }
  // After the weights changed (an update, a restore): value = master rounded to the working
  // dtype. Nothing to do without a master copy.
  void refresh();
  // Moves the parameter to `device` with working dtype `working` (f32, bf16 or f64): the weights
  // keep full precision (f32; f64 when working is f64) in `master` when the working copy is bf16
  // and the parameter is not full_precision. The gradient becomes a zeroed full-precision buffer
  // there.
  void place(Device device, DType working);
};

using ParamList = std::vector<Param*>;

}  // namespace bk
