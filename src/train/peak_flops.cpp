#include "train/peak_flops.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace bk {

PeakFlops measure_cpu_peak(int n, int reps) {
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
  double best = 0;
  for (int r = 0; r < reps + 1; ++r) {  // first run warms caches and threads
    auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::max(best, 2.0 * n * n * double(n) / s);
  }
  return {"cpu", best, true};
}

PeakFlops gpu_peak(const std::string& name) {
  struct Entry {
    const char* key;
    const char* device;
    double flops;
  };
  // Dense bf16 tensor-core peaks (no sparsity), datasheet values.
  static const Entry table[] = {
      {"H200", "h200", 989e12},   {"H100 SXM", "h100-sxm", 989e12}, {"H100 PCIe", "h100-pcie", 756e12},
      {"H100", "h100-sxm", 989e12}, {"A100", "a100", 312e12},
  };
  for (const Entry& e : table)
    if (name.find(e.key) != std::string::npos) return {e.device, e.flops, false};
  return {name, 0, false};
}

}  // namespace bk
