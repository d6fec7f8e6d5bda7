// Error macros for CUDA runtime and cuBLAS(Lt) calls: a failed call throws bk::Error with the
// call's text, the library's error name and the file and line of the call.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include "core/cuda/check.h"  // BK_CUDA_CHECK (shared with the core's device memory code)
#include "core/error.h"

namespace bk::cuda {
// cublasGetStatusName lives in libcublas, which the backend does not otherwise need (it uses
// cuBLASLt only): the names are spelled out here instead.
inline const char* cublas_status_name(cublasStatus_t st) {
  switch (st) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED (no CUDA context?)";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE (bad shape, type or alignment)";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH (not supported on this GPU)";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED (no kernel for this configuration)";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "unknown cublasStatus_t";
}
}  // namespace bk::cuda

#define BK_CUBLAS_CHECK(expr)                                                                   \
  do {                                                                                          \
    const cublasStatus_t bk_st_ = (expr);                                                       \
    if (bk_st_ != CUBLAS_STATUS_SUCCESS)                                                        \
      throw ::bk::Error(fmt::format("cuBLAS call failed: {} -> {} ({})", #expr,                 \
                                    ::bk::cuda::cublas_status_name(bk_st_), int(bk_st_)),       \
                        __FILE__, __LINE__);                                                    \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, at the launch site.
#define BK_CUDA_CHECK_LAUNCH() BK_CUDA_CHECK(cudaGetLastError())
