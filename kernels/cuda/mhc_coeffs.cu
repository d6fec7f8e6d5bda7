// mHC coefficients on the GPU (docs/mhc.md "Kernels"; the CPU reference is
// kernels/cpu/mhc_coeffs.cpp). Per token, x = vec(X) in R^K, K = nC, m = n^2 + 2n:
//   rinv = 1/sqrt(|x|^2/K + eps),  z = phi x,  logit_j = alpha_g(j) rinv z_j + bias_j,
//   h_pre = sigmoid(l[0,n)),  h_post = 2 sigmoid(l[n,2n)),  res_logits = l[2n,m).
//
// forward:         one kernel: a block reads its 32 tokens' x once, forming z and |x|^2
//                  together (connector_common.cuh, project_tile), then rinv, the logits and
//                  the activations in its epilogue. When there are too few token tiles to fill
//                  the GPU (fewer than 512 blocks), K is split: each split writes partial z
//                  and |x|^2 and a second kernel adds the splits in order and finishes.
//                  Bytes per token: reads 2 K (bf16 x) [+ phi from L2: 4 m K per 32 tokens],
//                  writes 4 (2n + n^2 + 1 + m) (f32 coefficients, rinv, z).
// backward_input:  one kernel: dl -> dlogits, dz = dl alpha rinv and the RMSNorm term
//                  kx = -rinv^3 (sum_j dl_j alpha_g z_j) / K for a 32-token tile in its
//                  prologue, then dx = phi^T dz + kx x, x read once.
//                  Bytes per token: reads 2 K (x) + 4 (4n + n^2 + 1 + m), writes 2 K (dx) + 4 m.
// backward_weight: dphi += dz^T x with fixed token chunks and an ordered sum of the chunk
//                  partials; dalpha and dbias are one block each (fixed-order block sums).
//                  Bytes per token: reads 2 K + 4 (m + 1 + m); the partials add
//                  2 * 4 m K * chunks (chunks <= 16) in all, independent of N.
//
// Dtypes: x and dx share T (f32 or bf16); every other operand is f32 or bf16 on its own (the
// model keeps coefficients, phi and their gradients in f32). Deterministic: no atomics; every
// sum has an order fixed by the shapes.
#include "kernels/cuda/connector_common.cuh"

namespace bk::cuda {

namespace {
using namespace conn;

constexpr const char* kX = "x";
constexpr int kTargetBlocks = 512;  // below this many token tiles the forward splits K
constexpr int kMaxSplits = 16;

__device__ __forceinline__ int group_of(int j, int n) { return j < n ? 0 : j < 2 * n ? 1 : 2; }

struct MhcFwd {
  FPtr h_pre, h_post, res, rinv, z, phi, alpha, bias;
  int64_t N, K;
  int n, m;
  float eps;
  bool xvec, wvec;
};

__device__ __forceinline__ float mhc_rinv(float ss, int64_t K, float eps) {
  return 1.f / sqrtf(ss / float(K) + eps);
}

// Output j of token t from z_j and rinv r.
__device__ __forceinline__ void mhc_out(const MhcFwd& a, int64_t t, int j, float zj, float r) {
  const int n = a.n, g = group_of(j, n);
  a.z.set(t * a.m + j, zj);
  const float l = fmaf(a.alpha[g] * r, zj, a.bias[j]);
  if (g == 0) a.h_pre.set(t * n + j, sigmoid(l));
  else if (g == 1) a.h_post.set(t * n + j - n, 2.f * sigmoid(l));
  else a.res.set(t * n * n + j - 2 * n, l);
}

// Blocks: (token tiles, K splits). part == nullptr: one split, finish here; else write the
// split's partial z and |x|^2 to part [splits][N][m+1].
template <typename T, int JPT>
__global__ void __launch_bounds__(kThreads)
    mhc_fwd_kernel(MhcFwd a, const T* __restrict__ x, int64_t split_cols, float* __restrict__ part) {
  extern __shared__ float4 mhc_fwd_smem[];
  float* stage = reinterpret_cast<float*>(mhc_fwd_smem);
  float* zres = stage + proj_stage_floats<JPT>();  // [32][m+1]
  float* rs = zres + kRows * (a.m + 1);           // [32]
  const int m = a.m, m1 = a.m + 1, tid = threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.x) * kRows, kbeg = int64_t(blockIdx.y) * split_cols;
  const int64_t kend = kbeg + split_cols < a.K ? kbeg + split_cols : a.K;
  project_tile<T, JPT>(x, a.N, a.K, a.xvec, a.phi, m, a.wvec, r0, kbeg, kend, stage, zres);
  if (part) {
    for (int i = tid; i < kRows * m1; i += kThreads) {
      const int64_t t = r0 + i / m1;
      if (t < a.N) part[(int64_t(blockIdx.y) * a.N + t) * m1 + i % m1] = zres[i];
    }
    return;
  }
  if (tid < kRows) rs[tid] = mhc_rinv(zres[tid * m1 + m], a.K, a.eps);
  __syncthreads();
  for (int i = tid; i < kRows * m; i += kThreads) {
    const int row = i / m, j = i % m;
    const int64_t t = r0 + row;
    if (t >= a.N) continue;
    if (j == 0) a.rinv.set(t, rs[row]);
    mhc_out(a, t, j, zres[row * m1 + j], rs[row]);
  }
}

// One thread per token: add the splits in order, then as the epilogue above.
__global__ void mhc_fwd_finish(MhcFwd a, const float* __restrict__ part, int splits) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= a.N) return;
  const int m1 = a.m + 1;
  float ss = 0.f;
  for (int y = 0; y < splits; ++y) ss += part[(y * a.N + t) * m1 + a.m];
  const float r = mhc_rinv(ss, a.K, a.eps);
  a.rinv.set(t, r);
  for (int j = 0; j < a.m; ++j) {
    float zj = 0.f;
    for (int y = 0; y < splits; ++y) zj += part[(y * a.N + t) * m1 + j];
    mhc_out(a, t, j, zj, r);
  }
}

struct MhcBwd {
  FPtr dlogits, dh_pre, dh_post, dres, h_pre, h_post, phi, alpha, rinv, z;
  int64_t N, K;
  int n, m;
  bool vec4;
};

// d loss / d logit_j of token t.
__device__ __forceinline__ float mhc_dlogit(const MhcBwd& a, int64_t t, int j) {
  const int n = a.n;
  if (j < n) {
    const float h = a.h_pre[t * n + j];
    return a.dh_pre[t * n + j] * h * (1.f - h);
  }
  if (j < 2 * n) {
    const float h = a.h_post[t * n + j - n];
    return a.dh_post[t * n + j - n] * h * (1.f - h * 0.5f);
  }
  return a.dres[t * n * n + j - 2 * n];
}

// Blocks: (token tiles, column ranges of kDxColsPerBlock). The first column range also writes
// dlogits.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    mhc_bwd_input_kernel(MhcBwd a, T* __restrict__ dx, const T* __restrict__ x) {
  extern __shared__ float4 mhc_bwd_smem[];
  const int m = a.m, m1 = a.m + 1, tid = threadIdx.x;
  float* ws = reinterpret_cast<float*>(mhc_bwd_smem);  // [m][kDxCols]
  float* gs = ws + m * kDxCols;                        // [m][32]: dz, transposed
  float* dls = gs + m * kRows;                         // [32][m+1]: dl
  float* kxs = dls + kRows * m1;                       // [32]
  const int64_t r0 = int64_t(blockIdx.x) * kRows, c0 = int64_t(blockIdx.y) * kDxColsPerBlock;
  const int64_t c1 = c0 + kDxColsPerBlock < a.K ? c0 + kDxColsPerBlock : a.K;
  for (int i = tid; i < kRows * m; i += kThreads) {
    const int row = i / m, j = i % m;
    const int64_t t = r0 + row;
    float dl = 0.f, dz = 0.f;
    if (t < a.N) {
      dl = mhc_dlogit(a, t, j);
      dz = dl * a.alpha[group_of(j, a.n)] * a.rinv[t];
      if (blockIdx.y == 0) a.dlogits.set(t * m + j, dl);
    }
    dls[row * m1 + j] = dl;
    gs[j * kRows + row] = dz;
  }
  __syncthreads();
  if (tid < kRows) {
    const int64_t t = r0 + tid;
    float kx = 0.f;
    if (t < a.N) {
      float drinv = 0.f;
      for (int j = 0; j < m; ++j) drinv += dls[tid * m1 + j] * a.alpha[group_of(j, a.n)] * a.z[t * m + j];
      const float r = a.rinv[t];
      kx = -drinv * r * r * r / float(a.K);
    }
    kxs[tid] = kx;
  }
  dx_tile<T>(dx, x, a.N, a.K, a.vec4, a.phi, m, r0, c0, c1, gs, kxs, ws);
}

// dz of (token r, logit j) for the weight gradient.
struct MhcDz {
  FPtr dl, alpha, rinv;
  int n, m;
  __device__ __forceinline__ float operator()(int64_t r, int j) const {
    return dl[r * m + j] * alpha[group_of(j, n)] * rinv[r];
  }
};

// Block q < m: dbias[q] += sum_t dl[t, q]; block m + g: dalpha[g] += sum_t sum_{j in g}
// dl[t, j] rinv[t] z[t, j]. Each output is one block's fixed-order sum.
__global__ void mhc_param_grads(FPtr dalpha, FPtr dbias, FPtr dl, FPtr rinv, FPtr z, int64_t N,
                                int n, int m) {
  __shared__ float scratch[32];
  const int q = blockIdx.x;
  float s = 0.f;
  if (q < m) {
    for (int64_t t = threadIdx.x; t < N; t += blockDim.x) s += dl[t * m + q];
  } else {
    const int g = q - m, j0 = g == 0 ? 0 : g == 1 ? n : 2 * n, j1 = g == 0 ? n : g == 1 ? 2 * n : m;
    for (int64_t t = threadIdx.x; t < N; t += blockDim.x) {
      const float r = rinv[t];
      for (int j = j0; j < j1; ++j) s += dl[t * m + j] * r * z[t * m + j];
    }
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) {
    if (q < m) dbias.add(q, s);
    else dalpha.add(q - m, s);
  }
}

StreamDims check_params(const char* op, const Tensor& x, const Tensor& phi, const Tensor& alpha,
                        const Tensor* bias) {
  const StreamDims d = stream_dims(op, kX, x);
  const int64_t m = d.n * d.n + 2 * d.n;
  expect_shapes(op, kX, d,
                {{"phi", phi, {m, d.n * d.C}, "[n*n+2n, n*C]"}, {"alpha", alpha, {3}, "[3]"}});
  if (bias) expect_shapes(op, kX, d, {{"bias", *bias, {m}, "[n*n+2n]"}});
  return d;
}

template <int JPT, typename T>
void launch_fwd(const MhcFwd& a, const T* x, Stream s) {
  const cudaStream_t st = stream_of(s);
  const int64_t tiles = (a.N + kRows - 1) / kRows, chunks = (a.K + kChunk - 1) / kChunk;
  // Splits of K: enough blocks to fill the GPU, a function of (N, K) only.
  int64_t splits = std::min<int64_t>({(kTargetBlocks + tiles - 1) / tiles, chunks, kMaxSplits});
  splits = std::max<int64_t>(splits, 1);
  const int64_t per_split = (chunks + splits - 1) / splits;
  splits = (chunks + per_split - 1) / per_split;
  const size_t smem = sizeof(float) * (proj_stage_floats<JPT>() + kRows * (a.m + 1) + kRows);
  BK_CHECK(smem <= size_t(max_smem_optin()), "mhc_coeffs_forward: n = {} needs {} bytes of shared "
           "memory per block; this GPU allows {}", a.n, smem, max_smem_optin());
  allow_smem(mhc_fwd_kernel<T, JPT>, smem);
  Scratch part(splits > 1 ? sizeof(float) * size_t(splits * a.N * (a.m + 1)) : 1, s);
  float* dpart = splits > 1 ? part.as<float>() : nullptr;
  mhc_fwd_kernel<T, JPT><<<dim3(unsigned(tiles), unsigned(splits)), kThreads, smem, st>>>(
      a, x, per_split * kChunk, dpart);
  BK_CUDA_CHECK_LAUNCH();
  if (dpart) {
    mhc_fwd_finish<<<ceil_div(a.N, 256), 256, 0, st>>>(a, dpart, int(splits));
    BK_CUDA_CHECK_LAUNCH();
  }
}
}  // namespace

void mhc_coeffs_forward(Tensor h_pre, Tensor h_post, Tensor res_logits, Tensor rinv, Tensor z,
                        Tensor x, Tensor phi, Tensor alpha, Tensor bias, float eps, Stream s) {
  const char* op = "mhc_coeffs_forward";
  check_floats(op, {{"h_pre", h_pre}, {"h_post", h_post}, {"res_logits", res_logits},
                    {"rinv", rinv}, {"z", z}, {"x", x}, {"phi", phi}, {"alpha", alpha},
                    {"bias", bias}});
  const StreamDims d = check_params(op, x, phi, alpha, &bias);
  const int64_t N = d.N, n = d.n, K = d.n * d.C, m = n * n + 2 * n;
  expect_shapes(op, kX, d,
                {{"h_pre", h_pre, {N, n}, "[N, n]"},
                 {"h_post", h_post, {N, n}, "[N, n]"},
                 {"res_logits", res_logits, {N, n, n}, "[N, n, n]"},
                 {"rinv", rinv, {N}, "[N]"},
                 {"z", z, {N, m}, "[N, n*n+2n]"}});
  if (N == 0) return;
  MhcFwd a{fptr(h_pre), fptr(h_post), fptr(res_logits), fptr(rinv), fptr(z), fptr(phi),
           fptr(alpha), fptr(bias), N, K, int(n), int(m), eps,
           K % kPack == 0 && aligned16({x.data}), K % kPack == 0 && aligned16({phi.data})};
  dispatch_float(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = static_cast<const T*>(x.data);
    switch (proj_jpt(m)) {  // m = 3, 8, 15, 24, 35, 48, 63, 80 for n = 1..8
      case 1: launch_fwd<1>(a, px, s); break;
      case 2: launch_fwd<2>(a, px, s); break;
      case 4: launch_fwd<4>(a, px, s); break;
      case 6: launch_fwd<6>(a, px, s); break;
      case 9: launch_fwd<9>(a, px, s); break;
      case 12: launch_fwd<12>(a, px, s); break;
      case 16: launch_fwd<16>(a, px, s); break;
      default: launch_fwd<20>(a, px, s); break;
    }
  });
}

void mhc_coeffs_backward_input(Tensor dx, Tensor dlogits, Tensor dh_pre, Tensor dh_post,
                               Tensor dres_logits, Tensor h_pre, Tensor h_post, Tensor x,
                               Tensor phi, Tensor alpha, Tensor rinv, Tensor z, Stream s) {
  const char* op = "mhc_coeffs_backward_input";
  check_floats(op, {{"dlogits", dlogits}, {"dh_pre", dh_pre}, {"dh_post", dh_post},
                    {"dres_logits", dres_logits}, {"h_pre", h_pre}, {"h_post", h_post},
                    {"phi", phi}, {"alpha", alpha}, {"rinv", rinv}, {"z", z}});
  const DType dt = act_dtype(op, {{"x", x}, {"dx", dx}});
  const StreamDims d = check_params(op, x, phi, alpha, nullptr);
  const int64_t N = d.N, n = d.n, K = d.n * d.C, m = n * n + 2 * n;
  expect_shapes(op, kX, d,
                {{"dx", dx, x.shape, "[N, n, C]"},
                 {"dlogits", dlogits, {N, m}, "[N, n*n+2n]"},
                 {"dh_pre", dh_pre, {N, n}, "[N, n]"},
                 {"dh_post", dh_post, {N, n}, "[N, n]"},
                 {"dres_logits", dres_logits, {N, n, n}, "[N, n, n]"},
                 {"h_pre", h_pre, {N, n}, "[N, n]"},
                 {"h_post", h_post, {N, n}, "[N, n]"},
                 {"rinv", rinv, {N}, "[N]"},
                 {"z", z, {N, m}, "[N, n*n+2n]"}});
  if (N == 0) return;
  MhcBwd a{fptr(dlogits), fptr(dh_pre), fptr(dh_post), fptr(dres_logits), fptr(h_pre),
           fptr(h_post), fptr(phi), fptr(alpha), fptr(rinv), fptr(z), N, K, int(n), int(m),
           K % 4 == 0 && aligned16({x.data, dx.data})};
  const size_t smem = sizeof(float) * size_t(m * kDxCols + m * kRows + kRows * (m + 1) + kRows);
  BK_CHECK(smem <= size_t(max_smem_optin()), "{}: n = {} needs {} bytes of shared memory per "
           "block; this GPU allows {}", op, n, smem, max_smem_optin());
  const dim3 grid(ceil_div(N, kRows), ceil_div(K, kDxColsPerBlock));
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    allow_smem(mhc_bwd_input_kernel<T>, smem);
    mhc_bwd_input_kernel<T><<<grid, kThreads, smem, stream_of(s)>>>(
        a, static_cast<T*>(dx.data), static_cast<const T*>(x.data));
    BK_CUDA_CHECK_LAUNCH();
  });
}

void mhc_coeffs_backward_weight(Tensor dphi, Tensor dalpha, Tensor dbias, Tensor dlogits,
                                Tensor x, Tensor alpha, Tensor rinv, Tensor z, Stream s) {
  const char* op = "mhc_coeffs_backward_weight";
  check_floats(op, {{"dphi", dphi}, {"dalpha", dalpha}, {"dbias", dbias}, {"dlogits", dlogits},
                    {"x", x}, {"alpha", alpha}, {"rinv", rinv}, {"z", z}});
  const StreamDims d = stream_dims(op, kX, x);
  const int64_t N = d.N, n = d.n, K = d.n * d.C, m = n * n + 2 * n;
  expect_shapes(op, kX, d,
                {{"dphi", dphi, {m, K}, "[n*n+2n, n*C]"},
                 {"dalpha", dalpha, {3}, "[3]"},
                 {"dbias", dbias, {m}, "[n*n+2n]"},
                 {"alpha", alpha, {3}, "[3]"},
                 {"dlogits", dlogits, {N, m}, "[N, n*n+2n]"},
                 {"rinv", rinv, {N}, "[N]"},
                 {"z", z, {N, m}, "[N, n*n+2n]"}});
  if (N == 0) return;
  const bool vec4 = K % 4 == 0 && aligned16({x.data});
  dispatch_float(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_wgrad<T>(fptr(dphi), MhcDz{fptr(dlogits), fptr(alpha), fptr(rinv), int(n), int(m)},
                    static_cast<const T*>(x.data), N, K, int(m), vec4, s);
  });
  mhc_param_grads<<<unsigned(m + 3), 256, 0, stream_of(s)>>>(fptr(dalpha), fptr(dbias),
                                                             fptr(dlogits), fptr(rinv), fptr(z),
                                                             N, int(n), int(m));
  BK_CUDA_CHECK_LAUNCH();
}

}  // namespace bk::cuda
