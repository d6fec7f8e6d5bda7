// mhc_kernels: times each mHC connector kernel of the CUDA backend (bk::cuda::mhc_coeffs_*,
// sinkhorn_*, stream_pre_*, stream_post_res_*) at the paper's stream count n = 4, bf16
// streams, f32 coefficients and parameters, for C in {1280, 2560, 7168} and N in {4096, 16384,
// 65536} tokens, and reports the achieved bandwidth of each against a device-to-device
// cudaMemcpy measured in the same run.
//
//   build/bin/mhc_kernels [--json PATH] [--reps R] [--sizes small]
//
// Timing: 3 warm-up calls, then R (default 20) calls each between its own pair of cudaEvents;
// the median is reported. Bytes are the minimum DRAM traffic of the kernel per token (the
// byte model of docs/performance.md, "mHC kernel benchmark"), times N; phi, which stays in L2,
// and the weight gradient's per-chunk partials (a fixed amount, independent of N) are not
// counted. The memcpy reference moves 1 GiB (read + write = 2 GiB of traffic).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/ops.h"

namespace {

#define CHECK(expr)                                                                        \
  do {                                                                                     \
    const cudaError_t e_ = (expr);                                                         \
    if (e_ != cudaSuccess) {                                                               \
      std::fprintf(stderr, "%s:%d: %s -> %s\n", __FILE__, __LINE__, #expr,                 \
                   cudaGetErrorString(e_));                                                \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)

using bk::DType;
using bk::Shape;
using bk::Tensor;

// Deterministic pseudo-random fill: offset + scale * u, u uniform in [-1, 1).
template <typename T>
__global__ void fill_kernel(T* p, int64_t n, uint32_t seed, float scale, float offset) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    uint32_t h = uint32_t(i) * 2654435761u ^ (seed * 0x9E3779B9u) ^ uint32_t(i >> 32);
    h ^= h >> 16, h *= 0x7feb352du, h ^= h >> 15, h *= 0x846ca68bu, h ^= h >> 16;
    const float u = float(h) * (2.0f / 4294967296.0f) - 1.0f;
    p[i] = T(offset + scale * u);
  }
}

// A device tensor that owns its memory (cudaMalloc: the benchmark is a standalone tool).
struct DevTensor {
  Tensor t;
  DevTensor(Shape s, DType dt, uint32_t seed, float scale = 1.f, float offset = 0.f) {
    t.shape = s, t.dtype = dt, t.device = bk::Device::cuda;
    CHECK(cudaMalloc(&t.data, std::max<size_t>(t.nbytes(), 16)));
    const int64_t n = t.numel();
    const unsigned blocks = unsigned(std::min<int64_t>((n + 255) / 256, 65535));
    if (dt == DType::bf16)
      fill_kernel<__nv_bfloat16><<<blocks, 256>>>(static_cast<__nv_bfloat16*>(t.data), n, seed, scale, offset);
    else
      fill_kernel<float><<<blocks, 256>>>(static_cast<float*>(t.data), n, seed, scale, offset);
    CHECK(cudaGetLastError());
  }
  ~DevTensor() { cudaFree(t.data); }
  DevTensor(const DevTensor&) = delete;
  DevTensor& operator=(const DevTensor&) = delete;
  operator Tensor() const { return t; }  // NOLINT
};

// Median milliseconds of fn over `reps` timed calls after 3 warm-up calls.
float time_ms(const std::function<void()>& fn, int reps) {
  for (int i = 0; i < 3; ++i) fn();
  CHECK(cudaDeviceSynchronize());
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  std::vector<float> ms(static_cast<size_t>(reps));
  for (int i = 0; i < reps; ++i) {
    CHECK(cudaEventRecord(a));
    fn();
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    CHECK(cudaEventElapsedTime(&ms[size_t(i)], a, b));
  }
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Row {
  std::string kernel;
  int64_t C, N;
  double bytes, ms, gbps, frac;
};

}  // namespace

int main(int argc, char** argv) {
  std::string json;
  int reps = 20;
  bool small = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--sizes") && i + 1 < argc) small = !std::strcmp(argv[++i], "small");
    else {
      std::fprintf(stderr, "usage: %s [--json PATH] [--reps R] [--sizes small|paper]\n", argv[0]);
      return 2;
    }
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "mhc_kernels: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));

  // Reference bandwidth: device-to-device copy of 1 GiB; traffic = 2 GiB.
  double memcpy_gbps = 0;
  {
    const size_t bytes = size_t(1) << 30;
    void *src = nullptr, *dst = nullptr;
    CHECK(cudaMalloc(&src, bytes));
    CHECK(cudaMalloc(&dst, bytes));
    CHECK(cudaMemset(src, 1, bytes));
    const float ms = time_ms([&] { CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice)); },
                             reps);
    memcpy_gbps = 2.0 * double(bytes) / (ms * 1e-3) / 1e9;
    CHECK(cudaFree(src));
    CHECK(cudaFree(dst));
  }

  const int64_t n = 4, m = n * n + 2 * n;
  const int iters = 20;
  const std::vector<int64_t> widths = small ? std::vector<int64_t>{256} : std::vector<int64_t>{1280, 2560, 7168};
  const std::vector<int64_t> tokens = small ? std::vector<int64_t>{1024} : std::vector<int64_t>{4096, 16384, 65536};
  std::vector<Row> rows;
  for (int64_t C : widths)
    for (int64_t N : tokens) {
      const int64_t K = n * C;
      const DType bf = DType::bf16, f32 = DType::f32;
      // Streams (bf16) and coefficients / parameters (f32), filled with modest values.
      DevTensor x({N, n, C}, bf, 1), out({N, n, C}, bf, 2), dx({N, n, C}, bf, 3);
      DevTensor dout({N, n, C}, bf, 4), f({N, C}, bf, 5), y({N, C}, bf, 6), df({N, C}, bf, 7);
      DevTensor phi({m, K}, f32, 8, 0.02f), alpha({3}, f32, 9, 0.1f, 1.0f), bias({m}, f32, 10, 0.5f);
      DevTensor h_pre({N, n}, f32, 11, 0.5f, 0.5f), h_post({N, n}, f32, 12, 0.5f, 1.0f);
      DevTensor res_logits({N, n, n}, f32, 13, 2.0f), h_res({N, n, n}, f32, 14, 0.5f, 0.25f);
      DevTensor rinv({N}, f32, 15, 0.1f, 1.0f), z({N, m}, f32, 16);
      DevTensor dh_pre({N, n}, f32, 17), dh_post({N, n}, f32, 18), dres({N, n, n}, f32, 19);
      DevTensor dh_res({N, n, n}, f32, 20), dlogits({N, m}, f32, 21), dlres({N, n, n}, f32, 22);
      DevTensor dphi({m, K}, f32, 23), dalpha({3}, f32, 24), dbias({m}, f32, 25);

      // Bytes per token of each kernel (docs/performance.md, "mHC kernel benchmark").
      const double s = 2, c4 = 4;  // bf16 stream element, f32 coefficient
      struct K_ {
        const char* name;
        double bytes_per_token;
        std::function<void()> fn;
      };
      const std::vector<K_> kernels = {
          {"coeffs_fwd", s * n * C + c4 * (2 * n + n * n + 1 + m),
           [&] { bk::cuda::mhc_coeffs_forward(h_pre, h_post, res_logits, rinv, z, x, phi, alpha, bias, 1e-6f); }},
          {"coeffs_bwd_input", s * 2 * n * C + c4 * (4 * n + n * n + 1 + m + m),
           [&] {
             bk::cuda::mhc_coeffs_backward_input(dx, dlogits, dh_pre, dh_post, dres, h_pre, h_post, x,
                                                 phi, alpha, rinv, z);
           }},
          {"coeffs_bwd_weight", s * n * C + c4 * (2 * m + 1),
           [&] { bk::cuda::mhc_coeffs_backward_weight(dphi, dalpha, dbias, dlogits, x, alpha, rinv, z); }},
          {"sinkhorn_fwd", c4 * 2 * n * n, [&] { bk::cuda::sinkhorn_forward(h_res, res_logits, iters); }},
          {"sinkhorn_bwd", c4 * 3 * n * n,
           [&] { bk::cuda::sinkhorn_backward(dlres, dh_res, res_logits, iters); }},
          {"pre_fwd", s * (n * C + C) + c4 * n, [&] { bk::cuda::stream_pre_forward(y, x, h_pre); }},
          {"pre_bwd", s * (C + 2 * n * C) + c4 * 2 * n,
           [&] { bk::cuda::stream_pre_backward(dx, dh_pre, y, x, h_pre); }},
          {"post_res_fwd", s * ((n + 1) * C + n * C) + c4 * (n * n + n),
           [&] { bk::cuda::stream_post_res_forward(out, x, f, h_res, h_post); }},
          {"post_res_bwd", s * ((2 * n + 1) * C + (n + 1) * C) + c4 * 2 * (n * n + n),
           [&] { bk::cuda::stream_post_res_backward(dx, df, dh_res, dh_post, dout, x, f, h_res, h_post); }},
      };
      for (const K_& k : kernels) {
        const float ms = time_ms(k.fn, reps);
        const double bytes = k.bytes_per_token * double(N);
        const double gbps = bytes / (double(ms) * 1e-3) / 1e9;
        rows.push_back({k.name, C, N, bytes, ms, gbps, gbps / memcpy_gbps});
        std::fprintf(stderr, "  %-18s C=%-5lld N=%-6lld %9.4f ms  %7.1f GB/s\n", k.name, (long long)C,
                     (long long)N, ms, gbps);
      }
      CHECK(cudaDeviceSynchronize());
    }

  if (!json.empty()) {
    FILE* fp = std::fopen(json.c_str(), "w");
    if (!fp) {
      std::fprintf(stderr, "mhc_kernels: cannot write %s\n", json.c_str());
      return 1;
    }
    std::fprintf(fp, "{\n  \"device\": \"%s\",\n  \"n\": %lld,\n  \"sinkhorn_iters\": %d,\n", prop.name,
                 (long long)n, iters);
    std::fprintf(fp, "  \"stream_dtype\": \"bf16\",\n  \"coeff_dtype\": \"f32\",\n  \"reps\": %d,\n", reps);
    std::fprintf(fp, "  \"memcpy_d2d_gbps\": %.3f,\n  \"results\": [\n", memcpy_gbps);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      std::fprintf(fp,
                   "    {\"kernel\": \"%s\", \"C\": %lld, \"N\": %lld, \"bytes\": %.0f, \"ms\": %.6f, "
                   "\"gbps\": %.3f, \"fraction_of_memcpy\": %.4f}%s\n",
                   r.kernel.c_str(), (long long)r.C, (long long)r.N, r.bytes, r.ms, r.gbps, r.frac,
                   i + 1 < rows.size() ? "," : "");
    }
    std::fprintf(fp, "  ]\n}\n");
    std::fclose(fp);
  }

  std::printf("mHC kernels on %s: n = %lld, bf16 streams, f32 coefficients, Sinkhorn %d iterations\n",
              prop.name, (long long)n, iters);
  std::printf("device-to-device cudaMemcpy: %.1f GB/s (read + write)\n\n", memcpy_gbps);
  std::printf("%-18s %6s %7s %12s %10s %9s %9s\n", "kernel", "C", "N", "MB moved", "ms", "GB/s",
              "% memcpy");
  for (const Row& r : rows)
    std::printf("%-18s %6lld %7lld %12.1f %10.4f %9.1f %8.1f%%\n", r.kernel.c_str(), (long long)r.C,
                (long long)r.N, r.bytes / 1e6, r.ms, r.gbps, 100.0 * r.frac);
  return 0;
}
