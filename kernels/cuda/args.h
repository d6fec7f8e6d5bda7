// Host-side argument checks and dtype dispatch of the CUDA launchers (kernels/cuda/*.cu).
// Checks run before anything is queued on the stream and throw bk::Error with messages that
// name the op, the argument and the shapes, like the CPU kernels' (kernels/cpu/common.h).
//
// Dtype policy (docs/cuda.md): activations and weights of one call share one dtype T, f32 or
// bf16; weight-gradient accumulators are f32 or T; statistics (rstd, losses), optimizer
// state and master weights are f32; indices are i32.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "kernels/ops.h"

namespace bk::cuda {

// A named tensor argument, for error messages.
struct Arg {
  const char* name;
  const Tensor& t;
};

inline std::string describe(std::initializer_list<Arg> args) {
  std::string s;
  for (const Arg& a : args)
    s += fmt::format("{}{} is {} {}", s.empty() ? "" : ", ", a.name, dtype_name(a.t.dtype),
                     a.t.shape.str());
  return s;
}

inline void check_device(const char* op, const Arg& a) {
  BK_CHECK(a.t.device == Device::cuda, "{}: {} is a CPU tensor; the CUDA kernel needs device memory",
           op, a.name);
  BK_CHECK(a.t.data != nullptr || a.t.numel() == 0, "{}: {} {} has no storage", op, a.name,
           a.t.shape.str());
}

inline bool is_float(DType d) { return d == DType::f32 || d == DType::bf16; }

// Every argument on the device, f32 or bf16, all of one dtype; returns it.
inline DType act_dtype(const char* op, std::initializer_list<Arg> args) {
  const Arg& first = *args.begin();
  for (const Arg& a : args) {
    check_device(op, a);
    BK_CHECK(is_float(a.t.dtype), "{}: {} has dtype {}; the CUDA kernels take f32 or bf16", op,
             a.name, dtype_name(a.t.dtype));
    BK_CHECK(a.t.dtype == first.t.dtype, "{}: {} is {} but {} is {}; these operands share one dtype",
             op, a.name, dtype_name(a.t.dtype), first.name, dtype_name(first.t.dtype));
  }
  return first.t.dtype;
}

// One argument on the device with exactly dtype `dt` (statistics and optimizer state: f32).
inline void check_dtype(const char* op, const Arg& a, DType dt, const char* why) {
  check_device(op, a);
  BK_CHECK(a.t.dtype == dt, "{}: {} has dtype {}; it must be {} ({})", op, a.name,
           dtype_name(a.t.dtype), dtype_name(dt), why);
}

// A weight-gradient accumulator: f32 (full-precision accumulation) or the operands' dtype.
inline void check_accumulator(const char* op, const Arg& a, DType act) {
  check_device(op, a);
  BK_CHECK(a.t.dtype == DType::f32 || a.t.dtype == act,
           "{}: {} has dtype {}; an accumulated gradient is f32 or the operands' dtype {}", op,
           a.name, dtype_name(a.t.dtype), dtype_name(act));
}

inline void check_index(const char* op, const Arg& a) {
  check_device(op, a);
  BK_CHECK(a.t.dtype == DType::i32, "{}: {} has dtype {}; indices are i32", op, a.name,
           dtype_name(a.t.dtype));
}

inline void check_shapes(const char* op, bool ok, const char* expected,
                         std::initializer_list<Arg> args) {
  BK_CHECK(ok, "{}: {}; expected {}", op, describe(args), expected);
}

inline bool is_shape(const Tensor& t, std::initializer_list<int64_t> dims) {
  return t.shape == Shape(dims);
}

// 16-byte alignment of every pointer: the condition for 128-bit vector loads.
inline bool aligned16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// Calls f(Tag<T>{}) with T = float or __nv_bfloat16 for a dtype already checked by act_dtype
// (C++17 generic lambdas: `[&](auto tag) { using T = typename decltype(tag)::type; ... }`).
template <typename T> struct Tag {
  using type = T;
};
template <typename F> void dispatch_float(DType dt, F&& f) {
  if (dt == DType::f32) f(Tag<float>{});
  else f(Tag<__nv_bfloat16>{});
}

}  // namespace bk::cuda
