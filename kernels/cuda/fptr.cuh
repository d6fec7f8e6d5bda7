// Runtime-typed float operands for the attention, MoE and connector kernels.
//
// The large tensors of an op (streams, activations) share one dtype T and are template
// parameters of its kernels. The small per-token tensors (connector coefficients, router
// scores and gates, lse) and the connectors' parameters are f32 in the model but may be bf16;
// templating on each of their dtypes would multiply the instantiations, so they travel as an
// FPtr: a pointer plus a dtype flag. The flag is uniform over the grid, so the branch costs no
// divergence, and these tensors are a few bytes per token.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <initializer_list>

#include "kernels/cuda/args.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vec.cuh"

namespace bk::cuda {

struct FPtr {
  void* p = nullptr;
  bool bf = false;  // bf16 storage, else f32

  __device__ __forceinline__ float operator[](int64_t i) const {
    return bf ? __bfloat162float(static_cast<const bf16*>(p)[i]) : static_cast<const float*>(p)[i];
  }
  __device__ __forceinline__ void set(int64_t i, float v) const {
    if (bf) static_cast<bf16*>(p)[i] = __float2bfloat16(v);
    else static_cast<float*>(p)[i] = v;
  }
  // += (weight gradients accumulate; the sum is formed in f32, then rounded once)
  __device__ __forceinline__ void add(int64_t i, float v) const { set(i, (*this)[i] + v); }
  // Elements [i, i+8) in one 16-byte load (bf16) or two (f32); i 8-aligned, base 16-aligned.
  __device__ __forceinline__ void pack(int64_t i, float (&v)[kPack]) const {
    if (bf) load8(static_cast<const bf16*>(p) + i, v);
    else load8(static_cast<const float*>(p) + i, v);
  }
};

inline FPtr fptr(const Tensor& t) { return FPtr{t.data, t.dtype == DType::bf16}; }

// `a` is a device tensor of dtype f32 or bf16.
inline void check_float(const char* op, const Arg& a) {
  check_device(op, a);
  BK_CHECK(is_float(a.t.dtype), "{}: {} has dtype {}; the CUDA kernels take f32 or bf16", op,
           a.name, dtype_name(a.t.dtype));
}
inline void check_floats(const char* op, std::initializer_list<Arg> args) {
  for (const Arg& a : args) check_float(op, a);
}

// Elements [c, c+8) of a row of length `len` into v: one 16-byte load when `vec` (the caller
// checked alignment and len % 8 == 0), else guarded scalar loads with zeros past the end.
template <typename T>
__device__ __forceinline__ void load_pack(const T* row, int64_t c, int64_t len, bool vec,
                                          float (&v)[kPack]) {
  if (vec) {
    load8(row + c, v);
  } else {
#pragma unroll
    for (int e = 0; e < kPack; ++e) v[e] = c + e < len ? load(row, c + e) : 0.f;
  }
}
template <typename T>
__device__ __forceinline__ void store_pack(T* row, int64_t c, int64_t len, bool vec,
                                           const float (&v)[kPack]) {
  if (vec) {
    store8(row + c, v);
  } else {
#pragma unroll
    for (int e = 0; e < kPack; ++e)
      if (c + e < len) store(row, c + e, v[e]);
  }
}

// Four consecutive elements (8 bytes in bf16, 16 in f32); `vec` as for load_pack (len % 4 == 0
// and an aligned base), else guarded scalar accesses.
__device__ __forceinline__ void load4(const float* p, float (&v)[4]) {
  const float4 a = *reinterpret_cast<const float4*>(p);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
}
__device__ __forceinline__ void load4(const bf16* p, float (&v)[4]) {
  const uint2 u = *reinterpret_cast<const uint2*>(p);
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
  v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
}
__device__ __forceinline__ void store4(float* p, const float (&v)[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void store4(bf16* p, const float (&v)[4]) {
  const __nv_bfloat162 a = __floats2bfloat162_rn(v[0], v[1]), b = __floats2bfloat162_rn(v[2], v[3]);
  uint2 u;
  u.x = *reinterpret_cast<const uint32_t*>(&a);
  u.y = *reinterpret_cast<const uint32_t*>(&b);
  *reinterpret_cast<uint2*>(p) = u;
}
template <typename T>
__device__ __forceinline__ void load_quad(const T* row, int64_t c, int64_t len, bool vec,
                                          float (&v)[4]) {
  if (vec) {
    load4(row + c, v);
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = c + e < len ? load(row, c + e) : 0.f;
  }
}
template <typename T>
__device__ __forceinline__ void store_quad(T* row, int64_t c, int64_t len, bool vec,
                                           const float (&v)[4]) {
  if (vec) {
    store4(row + c, v);
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e)
      if (c + e < len) store(row, c + e, v[e]);
  }
}

// Dynamic shared memory above the default 48 KiB needs an opt-in per kernel; the largest a
// block may use is a device property (227 KiB on H100, 163 KiB on A100).
inline int max_smem_optin() {
  int dev = 0, bytes = 0;
  BK_CUDA_CHECK(cudaGetDevice(&dev));
  BK_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return bytes;
}
template <typename K> void allow_smem(K kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    BK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       int(bytes)));
}

}  // namespace bk::cuda
