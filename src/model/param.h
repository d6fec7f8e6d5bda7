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
  Buffer value;
  Buffer grad;        // accumulated over the micro-batches of a step
  bool decay = true;  // AdamW weight decay applies (false for norms, biases, static coefficients)
  // A routed expert's weight: held by one rank of the ep group (replicated over dp only), so its
  // gradient is summed over the dp group instead of all the ranks that share the batch.
  bool expert = false;

  Param() = default;
  Param(std::string n, Shape shape, bool decay_) : name(std::move(n)), value(shape), grad(shape), decay(decay_) {}

  // Fill with N(0, std^2) from the parameter's own random stream (seed, name).
  void init_normal(uint64_t seed, double std);
  void fill(float v);
  // Converts value and gradient (f32 <-> f64; f64 is for finite-difference checks).
  void to(DType dtype);
};

using ParamList = std::vector<Param*>;

}  // namespace bk
