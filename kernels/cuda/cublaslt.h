// Settings of the cuBLASLt GEMMs behind bk::cuda::linear_* (kernels/cuda/linear.cu).
#pragma once

namespace bk::cuda {

// TF32 tensor cores for f32 GEMMs: inputs rounded to 10 mantissa bits (relative error ~3e-4),
// several times the fp32 throughput. Off by default (f32 runs match the CPU reference to
// ~1e-6); the environment variable BIRKHOFF_TF32=1 turns it on at start-up. bf16 GEMMs are
// unaffected (they always accumulate in fp32).
void set_tf32(bool allow);
bool tf32_enabled();

}  // namespace bk::cuda
