// GEMM through OpenBLAS for both element types: C[M,N] = alpha op(A) op(B) + beta C, row-major,
// with explicit leading dimensions (row strides), so that strided views such as one head of a
// [B,T,H,D] tensor (row stride H*D) need no copy.
#pragma once
#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace bk::cpu {

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  const auto ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  lda = std::max<int64_t>(lda, 1), ldb = std::max<int64_t>(ldb, 1);  // BLAS rejects 0 (K = 0)
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, ta, tb, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb),
                beta, C, int(ldc));
  else
    cblas_dgemm(CblasRowMajor, ta, tb, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb),
                beta, C, int(ldc));
}

// While alive, OpenBLAS runs every call in the calling thread. For GEMMs issued from inside our
// own OpenMP regions (attention): OpenBLAS' pthread pool would otherwise start its threads
// from each of ours, oversubscribing the cores (measured 10-20x slower on 2 cores).
// The thread count is process-wide state, so it is restored on exit.
class BlasSingleThreaded {
 public:
  BlasSingleThreaded() : saved_(openblas_get_num_threads()) { openblas_set_num_threads(1); }
  ~BlasSingleThreaded() { openblas_set_num_threads(saved_); }
  BlasSingleThreaded(const BlasSingleThreaded&) = delete;
  BlasSingleThreaded& operator=(const BlasSingleThreaded&) = delete;

 private:
  int saved_;
};

// Runs fn(r0, r1) over fixed blocks of kGemmRows rows of a GEMM's output, the blocks spread
// over OpenMP threads, each block one single-threaded GEMM. All CPU parallelism is then
// OpenMP's (OpenBLAS's pool would spin against our threads between calls), and since the
// blocks do not depend on the thread count, neither do the results.
constexpr int64_t kGemmRows = 128;
template <typename F> void gemm_row_blocks(int64_t rows, int64_t flops, F&& fn) {
  BlasSingleThreaded guard;
  const int64_t nblocks = (rows + kGemmRows - 1) / kGemmRows;
#pragma omp parallel for schedule(static) if (nblocks > 1 && flops >= (1 << 20))
  for (int64_t b = 0; b < nblocks; ++b) fn(b * kGemmRows, std::min(rows, (b + 1) * kGemmRows));
}

}  // namespace bk::cpu
