// Linear without bias through cuBLASLt, y[N,O] = x[N,I] W^T with W[O,I] as in PyTorch.
//
// cuBLASLt is column-major; a row-major [r,c] matrix is the column-major [c,r] matrix (its
// transpose) with leading dimension c. So each row-major product is computed transposed:
//   forward          y^T[O,N]  = W[I,O]^T  x^T[I,N]          (A = W,  op T;  B = x,  op N)
//   backward input   dx^T[I,N] = W[I,O]    dy^T[O,N]         (A = W,  op N;  B = dy, op N)
//   backward weight  dW^T[I,O] += x^T[I,N] (dy^T[O,N])^T     (A = x,  op N;  B = dy, op T), beta 1
// where every bracket shape is the column-major view of the row-major tensor.
//
// Precision: A and B share one dtype. bf16 inputs accumulate in fp32 (CUBLAS_COMPUTE_32F) and
// write bf16 or f32 (an f32 dW accumulates bf16 products at full precision). f32 inputs run
// in full fp32 by default; set_tf32(true) or BIRKHOFF_TF32=1 allows TF32 tensor cores
// (10-bit mantissa inputs, ~3e-4 relative error, several times faster).
//
// Determinism: one algorithm per problem (the heuristic's first choice, cached), and
// cuBLASLt's split-K reductions are sequential (counters or a separate pass), so repeated
// runs give the same bits.
//
// Handles and workspaces: one cuBLASLt handle per process (one GPU per process), and one
// workspace per stream, since two streams sharing a workspace would race.
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include "core/cuda/allocator.h"
#include "kernels/cuda/args.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cublaslt.h"

namespace bk::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // what cuBLAS recommends for Hopper

struct Problem {
  bool ta, tb;
  int64_t m, n, k, lda, ldb, ldc;
  DType ab, cd;
  bool tf32;
  uint32_t align_a, align_b, align_c;
  auto tie() const {
    return std::tie(ta, tb, m, n, k, lda, ldb, ldc, ab, cd, tf32, align_a, align_b, align_c);
  }
  bool operator<(const Problem& o) const { return tie() < o.tie(); }
};

// Descriptors and the chosen algorithm for one Problem, created once and kept for the
// process (a few hundred distinct GEMM shapes at most).
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
};

struct LtState {
  std::mutex mu;
  cublasLtHandle_t handle = nullptr;
  std::unordered_map<void*, void*> workspace;  // stream -> kWorkspaceBytes of device memory
  std::map<Problem, Plan> plans;
  int tf32 = -1;  // -1: not decided yet (read BIRKHOFF_TF32 on first use)
};

// Never destroyed: cuBLASLt and the CUDA runtime may already be torn down at static
// destruction, and the process is ending anyway.
LtState& state() {
  static LtState* s = new LtState();
  return *s;
}

cudaDataType_t cuda_type(DType d) { return d == DType::bf16 ? CUDA_R_16BF : CUDA_R_32F; }

// The largest power of two (at most 256) dividing the address: cuBLASLt's heuristic assumes
// 256-byte aligned operands unless told otherwise, and slices (rows(), expert ranges) are not.
uint32_t alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al >>= 1;
  return al;
}

bool tf32_locked(LtState& st) {
  if (st.tf32 < 0) {
    const char* env = std::getenv("BIRKHOFF_TF32");
    st.tf32 = env && std::strcmp(env, "1") == 0 ? 1 : 0;
  }
  return st.tf32 == 1;
}

Plan make_plan(cublasLtHandle_t h, const Problem& p) {
  Plan plan;
  const cublasComputeType_t compute =
      p.ab == DType::f32 && p.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  BK_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, compute, CUDA_R_32F));
  const cublasOperation_t ta = p.ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = p.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  BK_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  BK_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  // Stored (pre-op) shapes, column-major: op(A) is m x k, op(B) is k x n, C/D is m x n.
  BK_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.a, cuda_type(p.ab), p.ta ? p.k : p.m,
                                             p.ta ? p.m : p.k, p.lda));
  BK_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.b, cuda_type(p.ab), p.tb ? p.n : p.k,
                                             p.tb ? p.k : p.n, p.ldb));
  BK_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.c, cuda_type(p.cd), p.m, p.n, p.ldc));

  cublasLtMatmulPreference_t pref = nullptr;
  BK_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const size_t ws = kWorkspaceBytes;
  BK_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                       &ws, sizeof(ws)));
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, p.align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, p.align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, p.align_c},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, p.align_c}};
  for (const auto& [attr, value] : aligns)
    BK_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(h, plan.desc, plan.a, plan.b, plan.c,
                                                           plan.c, pref, 1, &result, &found);
  BK_CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
  BK_CHECK(st == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS,
           "cuBLASLt has no algorithm for a {}x{}x{} GEMM (op A {}, op B {}, A/B {}, C/D {}, "
           "tf32 {}, alignments {}/{}/{} bytes): {}",
           p.m, p.n, p.k, p.ta ? "T" : "N", p.tb ? "T" : "N", dtype_name(p.ab), dtype_name(p.cd),
           p.tf32, p.align_a, p.align_b, p.align_c,
           cublas_status_name(st != CUBLAS_STATUS_SUCCESS ? st : result.state));
  plan.algo = result.algo;
  plan.workspace = result.workspaceSize;
  return plan;
}

// C[m,n] (column-major, ldc) = op(A) op(B) + beta C, in stream order on s.
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void* A, int64_t lda,
          const void* B, int64_t ldb, float beta, void* C, int64_t ldc, DType ab, DType cd,
          Stream s) {
  LtState& st = state();
  const Plan* plan = nullptr;
  void* workspace = nullptr;
  {
    std::lock_guard<std::mutex> lock(st.mu);
    if (!st.handle) BK_CUBLAS_CHECK(cublasLtCreate(&st.handle));
    const Problem p{ta,  tb, m, n, k, lda, ldb, ldc, ab, cd, ab == DType::f32 && tf32_locked(st),
                    alignment(A), alignment(B), alignment(C)};
    auto it = st.plans.find(p);
    if (it == st.plans.end()) it = st.plans.emplace(p, make_plan(st.handle, p)).first;
    plan = &it->second;  // std::map nodes never move
    void*& ws = st.workspace[resolve_stream(s).handle];
    if (!ws) ws = device_allocator().allocate(kWorkspaceBytes, s);
    workspace = ws;
  }
  const float alpha = 1.f;
  BK_CUBLAS_CHECK(cublasLtMatmul(st.handle, plan->desc, &alpha, A, plan->a, B, plan->b, &beta, C,
                                 plan->c, C, plan->c, &plan->algo, workspace, plan->workspace,
                                 stream_of(s)));
}

// x [N,I], w [O,I], y [N,O] (any may be the gradient of its namesake). The two inputs share a
// dtype; the output (slot 0: y, 1: x, 2: w) is that dtype or f32.
void check_args(const char* op, const char* yn, const Tensor& y, const char* xn, const Tensor& x,
                const char* wn, const Tensor& w, int out_slot) {
  const Arg args[3] = {{yn, y}, {xn, x}, {wn, w}};
  const Arg &out = args[out_slot], &in1 = args[(out_slot + 1) % 3], &in2 = args[(out_slot + 2) % 3];
  const DType dt = act_dtype(op, {in1, in2});
  check_device(op, out);
  BK_CHECK(out.t.dtype == dt || out.t.dtype == DType::f32,
           "{}: {} is {}; the output is f32 or the inputs' dtype {}", op, out.name,
           dtype_name(out.t.dtype), dtype_name(dt));
  check_shapes(op,
               x.ndim() == 2 && w.ndim() == 2 && y.ndim() == 2 && x.size(0) == y.size(0) &&
                   x.size(1) == w.size(1) && y.size(1) == w.size(0),
               fmt::format("{}[N,I], {}[O,I], {}[N,O]", xn, wn, yn).c_str(),
               {{xn, x}, {wn, w}, {yn, y}});
}

// Overwrite semantics with an empty reduction (k = 0): the product is zero.
void zero_output(const Tensor& t, Stream s) {
  if (t.nbytes() > 0) BK_CUDA_CHECK(cudaMemsetAsync(t.data, 0, t.nbytes(), stream_of(s)));
}

}  // namespace

void set_tf32(bool allow) {
  std::lock_guard<std::mutex> lock(state().mu);
  state().tf32 = allow ? 1 : 0;
}

bool tf32_enabled() {
  std::lock_guard<std::mutex> lock(state().mu);
  return tf32_locked(state());
}

void linear_forward(Tensor y, Tensor x, Tensor w, Stream s) {
  check_args("linear_forward", "y", y, "x", x, "w", w, 0);
  const int64_t N = x.size(0), I = x.size(1), O = w.size(0);
  if (y.numel() == 0) return;
  if (I == 0) return zero_output(y, s);
  gemm(true, false, O, N, I, w.data, I, x.data, I, 0.f, y.data, O, x.dtype, y.dtype, s);
}

void linear_backward_input(Tensor dx, Tensor dy, Tensor w, Stream s) {
  check_args("linear_backward_input", "dy", dy, "dx", dx, "w", w, 1);
  const int64_t N = dx.size(0), I = dx.size(1), O = w.size(0);
  if (dx.numel() == 0) return;
  if (O == 0) return zero_output(dx, s);
  gemm(false, false, I, N, O, w.data, I, dy.data, O, 0.f, dx.data, I, dy.dtype, dx.dtype, s);
}

void linear_backward_weight(Tensor dw, Tensor dy, Tensor x, Stream s) {
  check_args("linear_backward_weight", "dy", dy, "x", x, "dw", dw, 2);
  const int64_t N = x.size(0), I = x.size(1), O = dw.size(0);
  if (dw.numel() == 0 || N == 0) return;  // += nothing
  gemm(false, true, I, O, N, x.data, I, dy.data, O, 1.f, dw.data, I, x.dtype, dw.dtype, s);
}

}  // namespace bk::cuda
