// Shared helpers of the CPU reference kernels: argument checks with messages that name the op
// and the shapes, the f32/f64 dispatch to one template, and the few vector loops the ops share.
//
// Checks run before any OpenMP region: an exception must not escape a parallel region.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "kernels/ops.h"

namespace bk::cpu {

// A named tensor argument, for error messages ("x is [8, 64]").
struct Arg {
  const char* name;
  const Tensor& t;
};

inline std::string describe(std::initializer_list<Arg> args) {
  std::string s;
  for (const Arg& a : args) s += fmt::format("{}{} is {}", s.empty() ? "" : ", ", a.name, a.t.shape.str());
  return s;
}

inline void check_cpu(const char* op, const Arg& a) {
  BK_CHECK(a.t.device == Device::cpu, "{}: {} is a CUDA tensor; the CPU kernel needs host memory",
           op, a.name);
  BK_CHECK(a.t.data != nullptr || a.t.numel() == 0, "{}: {} {} has no storage", op, a.name,
           a.t.shape.str());
}

// Every argument on the CPU and of one floating dtype, f32 or f64; returns that dtype.
inline DType float_dtype(const char* op, std::initializer_list<Arg> args) {
  const Arg& first = *args.begin();
  for (const Arg& a : args) {
    check_cpu(op, a);
    BK_CHECK(a.t.dtype == DType::f32 || a.t.dtype == DType::f64,
             "{}: {} has dtype {}; the CPU kernels take f32 or f64", op, a.name,
             dtype_name(a.t.dtype));
    BK_CHECK(a.t.dtype == first.t.dtype, "{}: {} is {} but {} is {}; all operands share one dtype",
             op, a.name, dtype_name(a.t.dtype), first.name, dtype_name(first.t.dtype));
  }
  return first.t.dtype;
}

// Token ids / targets: i32 on the CPU.
inline void check_index(const char* op, const Arg& a) {
  check_cpu(op, a);
  BK_CHECK(a.t.dtype == DType::i32, "{}: {} has dtype {}; indices are i32", op, a.name,
           dtype_name(a.t.dtype));
}

// ok is the op's shape rule; the message lists every operand's shape and the rule in words.
inline void check_shapes(const char* op, bool ok, const char* expected,
                         std::initializer_list<Arg> args) {
  BK_CHECK(ok, "{}: {}; expected {}", op, describe(args), expected);
}

inline bool is_shape(const Tensor& t, std::initializer_list<int64_t> dims) {
  return t.shape == Shape(dims);
}

// Calls f.template operator()<T>() with T = float or double (dt already checked by float_dtype).
template <typename F> void dispatch(DType dt, F&& f) {
  if (dt == DType::f32) f.template operator()<float>();
  else f.template operator()<double>();
}

// Below this much work an OpenMP region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 14;

// Reductions inside one thread use `omp simd`: the summation order (lanes, then a fixed tree)
// is fixed at compile time, so results never depend on the thread count.
template <typename T> inline T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// e^x that vectorises inside `omp simd` loops (glibc's expf is a call per element, and the
// softmaxes of the loss and of attention spend most of their time in it). Cephes' expf:
// x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for exactness), e^r by a polynomial, 2^n
// built in the exponent bits. Relative error < 1e-7 on [-87, 88]. Below -87 it returns exactly
// 0, never a denormal (denormal arithmetic is ~100x slower on Intel cores); above 88, e^88.
// double keeps std::exp: the f64 path is the exact reference of the gradient checks.
// (The clamps vectorise only under -fno-trapping-math, set for bk_kernels in CMakeLists.txt.)
inline float exp_fast(float x) {
  const float xc = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  const float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * r * r + r + 1.0f;
  return x < -87.0f ? 0.0f : er * std::bit_cast<float>((int32_t(n) + 127) << 23);
}
inline double exp_fast(double x) { return std::exp(x); }

// The stable pieces of a log-sum-exp over x[0, n): the max m and z = sum_j exp(x_j - m), so
// lse = m + log z. Callers keep m and z apart where x - lse would cancel digits (large x).
template <typename T> struct MaxSumExp {
  T m, z;
};
template <typename T> MaxSumExp<T> max_sum_exp(const T* x, int64_t n) {
  T m = x[0];
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; ++j) m = x[j] > m ? x[j] : m;
  T z = 0;
#pragma omp simd reduction(+ : z)
  for (int64_t j = 0; j < n; ++j) z += exp_fast(x[j] - m);
  return {m, z};
}

// Reductions over rows into a [C] result (weight gradients): parallelise over blocks of
// columns instead, so each output element is one sequential sum in row order, whatever the
// number of threads. fn(c0, c1) handles columns [c0, c1) for all rows.
template <typename F> void for_column_blocks(int64_t cols, int64_t rows, F&& fn) {
  constexpr int64_t kBlock = 64;
  const int64_t nblocks = (cols + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t b = 0; b < nblocks; ++b) fn(b * kBlock, std::min(cols, (b + 1) * kBlock));
}

}  // namespace bk::cpu
