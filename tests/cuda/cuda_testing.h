// Shared helpers of the CUDA op tests (tests/cuda/*_test.cpp): move tensors between host and
// device (converting f32 <-> bf16), poison outputs, compare against the CPU reference.
//
// The pattern of every test: draw random host inputs (never zeros), round them to what the
// device dtype can hold (representable), upload (to_device), poison the outputs, run the CUDA
// op, download (to_host) and compare with bk::cpu:: run on the same representable inputs by
// relative Frobenius error, ||got - want||_F / ||want||_F.
//
// Tolerances (relative Frobenius; NaN or infinity anywhere never passes):
// - kTolF32 = 1e-5: fp32 kernels differ from the CPU only in summation order and in the
//   libm vs CUDA intrinsics (exp, rsqrt: a few ulp); the resulting relative errors are ~1e-7
//   to 1e-6 for our sizes, an order below the tolerance, while a wrong term is >= 1e-3.
// - kTolTf32 = 2e-3: TF32 rounds GEMM inputs to 10 mantissa bits (unit roundoff 2^-11 =
//   4.9e-4, RMS ~2.8e-4 per operand), so a product's relative error is ~4e-4 RMS.
// - kTolBf16 = 8e-3: a bf16 output carries a rounding error of at most 2^-9 = 2.0e-3
//   relative (RMS ~1.1e-3); ops that round intermediates to bf16 as well (e.g. a bf16 y in
//   rmsnorm's backward) can compound two or three such roundings. Any wrong term is >= 1e-2.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/bf16.h"
#include "core/buffer.h"
#include "core/cuda/check.h"
#include "core/rng.h"
#include "unit/kernels/kernel_testing.h"

namespace bk::test {

constexpr double kTolF32 = 1e-5;
constexpr double kTolTf32 = 2e-3;
constexpr double kTolBf16 = 8e-3;

inline double tolerance(DType dt) { return dt == DType::bf16 ? kTolBf16 : kTolF32; }

inline void device_sync() { BK_CUDA_CHECK(cudaDeviceSynchronize()); }

// Host f32/f64 (or i32/i64) -> a device buffer of dtype dt: f32, bf16 or f64 for floating
// sources (bf16 rounds to nearest even), the same integer dtype for integer sources.
inline Buffer to_device(const Tensor& host, DType dt) {
  BK_CHECK(host.device == Device::cpu, "to_device: the source is already a CUDA tensor");
  Buffer dev(host.shape, dt, Device::cuda);
  if (host.dtype == DType::i32 || host.dtype == DType::i64) {
    BK_CHECK(dt == host.dtype, "to_device: integer tensors keep their dtype");
    dev.upload(host);
    return dev;
  }
  if (dt == DType::bf16) {
    std::vector<uint16_t> bits(size_t(host.numel()));
    for (int64_t i = 0; i < host.numel(); ++i) bits[i] = f32_to_bf16_bits(float(get(host, i)));
    BK_CUDA_CHECK(cudaMemcpy(dev.tensor().data, bits.data(), dev.nbytes(), cudaMemcpyHostToDevice));
  } else {
    Buffer staged = cast(host, dt);  // f32 or f64
    dev.upload(staged);
  }
  device_sync();  // the buffer was zeroed on the default stream; everything is settled here
  return dev;
}

// Device tensor -> host buffer: f32 for f32 and bf16, f64 for f64, integers as they are.
// Synchronises the device first, so asynchronous kernel errors surface here.
inline Buffer to_host(const Tensor& dev) {
  device_sync();
  const DType out_dt = dev.dtype == DType::bf16 ? DType::f32 : dev.dtype;
  Buffer host(dev.shape, out_dt);
  if (dev.dtype == DType::bf16) {
    std::vector<uint16_t> bits(size_t(dev.numel()));
    BK_CUDA_CHECK(cudaMemcpy(bits.data(), dev.data, dev.nbytes(), cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < dev.numel(); ++i) host.ptr<float>()[i] = bf16_bits_to_f32(bits[i]);
  } else if (dev.nbytes() > 0) {
    BK_CUDA_CHECK(cudaMemcpy(host.tensor().data, dev.data, dev.nbytes(), cudaMemcpyDeviceToHost));
  }
  return host;
}

// Every byte 0xFF: NaN in f32, bf16 and f64, -1 in integers. An op that leaves any output
// element unwritten then fails the comparison.
inline void poison(const Tensor& dev) {
  if (dev.nbytes() > 0) BK_CUDA_CHECK(cudaMemset(dev.data, 0xFF, dev.nbytes()));
  device_sync();
}

// ||got - want||_F / ||want||_F (absolute ||got - want||_F when want is all zeros); any NaN
// or infinity in got, or a shape mismatch, gives infinity.
inline double rel_frobenius(const Tensor& got_host, const Tensor& want_host) {
  if (!(got_host.shape == want_host.shape)) return std::numeric_limits<double>::infinity();
  double d2 = 0, w2 = 0;
  for (int64_t i = 0; i < want_host.numel(); ++i) {
    const double g = get(got_host, i), w = get(want_host, i);
    if (!std::isfinite(g)) return std::numeric_limits<double>::infinity();
    d2 += (g - w) * (g - w);
    w2 += w * w;
  }
  const double r = w2 > 0 ? std::sqrt(d2 / w2) : std::sqrt(d2);
  return std::isnan(r) ? std::numeric_limits<double>::infinity() : r;
}

// The values a device tensor of dtype dt holds for `host`, as an f32 host buffer (bf16:
// rounded to nearest even). CPU references run on these, so only the kernel's own
// arithmetic is compared.
inline Buffer representable(const Tensor& host, DType dt) {
  Buffer out(host.shape, DType::f32);
  for (int64_t i = 0; i < host.numel(); ++i) {
    const float f = float(get(host, i));
    out.ptr<float>()[i] = dt == DType::bf16 ? round_bf16(f) : f;
  }
  return out;
}

// Random normal host tensor (f32) of the given scale; `stream` picks an independent draw.
inline Buffer randn_f32(Shape s, uint64_t stream, double scale = 1.0) {
  return randn(s, stream, scale, DType::f32);
}

// An uninitialised-looking (poisoned) device output.
inline Buffer device_output(Shape s, DType dt) {
  Buffer b(s, dt, Device::cuda);
  poison(b);
  return b;
}

// The same bytes in two device tensors (determinism checks).
inline bool bitwise_equal_device(const Tensor& a, const Tensor& b) {
  if (!(a.shape == b.shape) || a.dtype != b.dtype) return false;
  device_sync();
  std::vector<unsigned char> ha(a.nbytes()), hb(b.nbytes());
  if (a.nbytes() == 0) return true;
  BK_CUDA_CHECK(cudaMemcpy(ha.data(), a.data, a.nbytes(), cudaMemcpyDeviceToHost));
  BK_CUDA_CHECK(cudaMemcpy(hb.data(), b.data, b.nbytes(), cudaMemcpyDeviceToHost));
  return std::memcmp(ha.data(), hb.data(), ha.size()) == 0;
}

// Downloads `dev` and expects it within `tol` of `want_host` (relative Frobenius).
inline void expect_close(const char* what, const Tensor& dev, const Tensor& want_host, double tol) {
  Buffer got = to_host(dev);
  const double err = rel_frobenius(got, want_host);
  EXPECT_LT(err, tol) << what << ": relative Frobenius error " << err << " (tolerance " << tol
                      << ", dtype " << dtype_name(dev.dtype) << ", shape " << dev.shape.str()
                      << ")";
}

// gtest parameter names for dtype-parameterised suites ("f32", "bf16").
inline std::string dtype_param_name(const testing::TestParamInfo<DType>& info) {
  return std::string(dtype_name(info.param));
}

// n token ids in [0, V) with repeats (a fixed draw per `stream`), as an i32 host buffer.
inline Buffer random_ids(int64_t n, int64_t V, uint64_t stream) {
  Buffer b({n}, DType::i32);
  Rng rng(777, stream);
  for (int64_t i = 0; i < n; ++i) b.ptr<int32_t>()[i] = int32_t(rng.next_u64() % uint64_t(V));
  return b;
}

}  // namespace bk::test
