// BK_CUDA_CHECK: a failed CUDA runtime call throws bk::Error with the call's text, CUDA's error
// name and string, and the file and line of the call. (kernels/cuda/cuda_check.h adds the
// cuBLAS variant and the kernel-launch check on top of this.)
#pragma once
#include <cuda_runtime.h>

#include "core/error.h"

#define BK_CUDA_CHECK(expr)                                                                     \
  do {                                                                                          \
    const cudaError_t bk_err_ = (expr);                                                         \
    if (bk_err_ != cudaSuccess)                                                                 \
      throw ::bk::Error(fmt::format("CUDA call failed: {} -> {} ({})", #expr,                   \
                                    cudaGetErrorName(bk_err_), cudaGetErrorString(bk_err_)),    \
                        __FILE__, __LINE__);                                                    \
  } while (0)
