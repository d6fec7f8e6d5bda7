// Peak FLOP/s for MFU. GPUs come from a table of dense bf16 datasheet peaks; the CPU entry is
// measured once at start-up with an fp32 GEMM through the same BLAS the CPU kernels use.
#pragma once
#include <string>

namespace bk {

struct PeakFlops {
  std::string device;  // "cpu", "h100-sxm", ...
  double flops = 0;    // per second
  bool measured = false;
};

// Runs a few n x n x n sgemm products on the current thread settings and returns the best rate.
PeakFlops measure_cpu_peak(int n = 1024, int reps = 4);
// Datasheet dense bf16 peak for a known GPU name; flops = 0 when unknown.
PeakFlops gpu_peak(const std::string& device_name);

}  // namespace bk
