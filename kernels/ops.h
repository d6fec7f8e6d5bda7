// The op contract both backends implement (see op_list.inc for the conventions).
#pragma once
#include <vector>

#include "core/stream.h"  // Stream: the CPU backend ignores it, CUDA reads a cudaStream_t
#include "core/tensor.h"

namespace bk {

// One AdamW step's scalars.
struct AdamWStep {
  float lr = 0;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0;  // decoupled: w -= lr * wd * w
  float grad_scale = 1;    // clip coefficient applied to g
  int64_t step = 1;        // 1-based, for bias correction
};

namespace ops {
#include "kernels/op_list.inc"
}  // namespace ops

namespace cpu {
#include "kernels/op_list.inc"
}  // namespace cpu

// Defined in kernels/cuda when the binary is built with CUDA (BIRKHOFF_WITH_CUDA).
namespace cuda {
#include "kernels/op_list.inc"
}  // namespace cuda

}  // namespace bk
