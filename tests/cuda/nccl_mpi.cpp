// The NCCL communicator across ranks, one GPU per rank, under mpirun (tools/bundle's
// run_gpu_tests.sh runs it with as many ranks as the host has GPUs, when it has 2 or more):
//   mpirun -np <gpus> test_cuda_nccl_mpi
// Every collective is checked against a host computation; the rank-ordered sums must match
// the host's ((r0 + r1) + r2) + ... bit for bit on every rank. Exit 0 on success, 1 on a
// failed check (reported per rank), 77 when there are fewer GPUs than ranks.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/buffer.h"
#include "core/cuda/device.h"
#include "parallel/launch_env.h"
#include "parallel/mpi_communicator.h"
#include "parallel/nccl_communicator.h"

using namespace bk;

namespace {

int g_failed = 0, g_rank = 0;

#define CHECK(cond)                                                                           \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      ++g_failed;                                                                             \
      std::fprintf(stderr, "rank %d: CHECK failed at %s:%d: %s\n", g_rank, __FILE__, __LINE__, \
                   #cond);                                                                    \
    }                                                                                         \
  } while (0)

// Deterministic test data: value i of rank r.
float value(int r, int64_t i) { return float((r + 1) * 0.37 + double(i % 97) * 1e-3 - 0.01 * double(i % 13)); }

Buffer device_from(const std::vector<float>& v, Stream s) {
  Buffer host({int64_t(v.size())});
  std::memcpy(host.tensor().data, v.data(), sizeof(float) * v.size());
  Buffer d(Shape{int64_t(v.size())}, DType::f32, Device::cuda, s);
  d.upload(host);
  return d;
}

std::vector<float> host_of(const Buffer& d) {
  Buffer h(d.shape(), DType::f32);
  d.download(h);
  return std::vector<float>(h.ptr<float>(), h.ptr<float>() + h.numel());
}

void run(Communicator& world, const DeviceContext& ctx, bool rank_ordered) {
  NcclCommunicator::Options opt;
  opt.rank_ordered_sums = rank_ordered;
  auto nccl = NcclCommunicator::create(world, ctx.compute(), ctx.comm(), opt);
  const int P = nccl->size(), me = nccl->rank();
  CHECK(P == world.size() && me == world.rank());

  // all_reduce_sum, a size that does not divide by P.
  const int64_t n = 10007;
  std::vector<float> mine(static_cast<size_t>(n)), want(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    mine[size_t(i)] = value(me, i);
    float s = value(0, i);
    for (int r = 1; r < P; ++r) s += value(r, i);
    want[size_t(i)] = s;
  }
  Buffer d = device_from(mine, ctx.compute());
  nccl->all_reduce_sum(d);
  const std::vector<float> got = host_of(d);
  if (rank_ordered) CHECK(std::memcmp(got.data(), want.data(), sizeof(float) * size_t(n)) == 0);
  else
    for (int64_t i = 0; i < n; ++i) CHECK(std::abs(got[size_t(i)] - want[size_t(i)]) < 1e-5f);

  // reduce_scatter_sum: chunk r of the sum lands on rank r.
  const int64_t chunk = 333;
  std::vector<float> in(size_t(chunk * P));
  for (int64_t i = 0; i < chunk * P; ++i) in[size_t(i)] = value(me, i);
  Buffer d_in = device_from(in, ctx.compute());
  Buffer d_out(Shape{chunk}, DType::f32, Device::cuda, ctx.compute());
  nccl->reduce_scatter_sum(d_out, d_in);
  const std::vector<float> rs = host_of(d_out);
  for (int64_t i = 0; i < chunk; ++i) {
    float s = value(0, me * chunk + i);
    for (int r = 1; r < P; ++r) s += value(r, me * chunk + i);
    if (rank_ordered) CHECK(rs[size_t(i)] == s);
    else CHECK(std::abs(rs[size_t(i)] - s) < 1e-5f);
  }

  // all_gather and broadcast (bytes only: exact).
  Buffer d_all(Shape{chunk * P}, DType::f32, Device::cuda, ctx.compute());
  Buffer d_part = device_from(std::vector<float>(size_t(chunk), float(me)), ctx.compute());
  nccl->all_gather(d_all, d_part);
  const std::vector<float> ag = host_of(d_all);
  for (int r = 0; r < P; ++r) CHECK(ag[size_t(r * chunk)] == float(r) && ag[size_t(r * chunk + chunk - 1)] == float(r));
  Buffer d_b = device_from(std::vector<float>(7, float(me + 10)), ctx.compute());
  nccl->broadcast(d_b, P - 1);
  CHECK(host_of(d_b)[6] == float(P - 1 + 10));

  // all_to_all_v: rank r sends (r + d + 1) rows of 3 floats to rank d.
  std::vector<int64_t> send_rows(static_cast<size_t>(P)), recv_rows(static_cast<size_t>(P));
  int64_t s_total = 0, r_total = 0;
  for (int p = 0; p < P; ++p) {
    send_rows[size_t(p)] = me + p + 1;
    recv_rows[size_t(p)] = p + me + 1;
    s_total += send_rows[size_t(p)];
    r_total += recv_rows[size_t(p)];
  }
  std::vector<float> a2a_in(size_t(s_total * 3));
  for (int64_t i = 0, row = 0; row < s_total; ++row)
    for (int c = 0; c < 3; ++c) a2a_in[size_t(i++)] = float(me * 1000 + row);
  Buffer d_a2a_in = device_from(a2a_in, ctx.compute());
  Buffer d_a2a_out(Shape{r_total, 3}, DType::f32, Device::cuda, ctx.compute());
  nccl->all_to_all_v(d_a2a_out, recv_rows, d_a2a_in.tensor().view({s_total, 3}), send_rows);
  const std::vector<float> a2a = host_of(d_a2a_out);
  int64_t row = 0;
  for (int p = 0; p < P; ++p) {
    int64_t first = 0;  // rank p's first row for me: the rows it sent to ranks < me
    for (int q = 0; q < me; ++q) first += p + q + 1;
    for (int64_t k = 0; k < recv_rows[size_t(p)]; ++k, ++row)
      CHECK(a2a[size_t(row * 3)] == float(p * 1000 + first + k));
  }

  // isend/irecv around a ring, both directions posted before waiting.
  const int next = (me + 1) % P, prev = (me + P - 1) % P;
  Buffer d_send = device_from(std::vector<float>(100, float(me)), ctx.compute());
  Buffer d_recv(Shape{100}, DType::f32, Device::cuda, ctx.compute());
  {
    auto rr = nccl->irecv(d_recv, prev, 0);
    auto sr = nccl->isend(d_send, next, 0);
    sr->wait();
    rr->wait();
  }
  CHECK(host_of(d_recv)[99] == float(prev));

  // split: even and odd ranks.
  auto sub = nccl->split(me % 2, me);
  CHECK(sub->size() == (P + 1 - me % 2) / 2);
  CHECK(sub->rank() == me / 2);
  Buffer d_one = device_from(std::vector<float>(1, 1.f), ctx.compute());
  sub->all_reduce_sum(d_one);
  CHECK(host_of(d_one)[0] == float(sub->size()));
  sub->barrier();
  nccl->barrier();
  ctx.synchronize();
}

}  // namespace

int main(int argc, char** argv) {
  MpiRuntime mpi(&argc, &argv);
  auto world = mpi.world();
  g_rank = world->rank();
  const LaunchEnv env = read_launch_env();
  const int gpus = cuda_device_count();
  if (gpus == 0 || world->size() < 2) {
    if (g_rank == 0)
      std::fprintf(stderr, "SKIPPED: %d GPU(s), %d rank(s); needs one GPU per rank and 2+ ranks\n",
                   gpus, world->size());
    return 77;
  }
  BK_CHECK(env.local_rank < gpus, "local rank {} has no GPU of its own ({} on this host)",
           env.local_rank, gpus);
  try {
    DeviceContext ctx(env.local_rank);
    run(*world, ctx, true);
    run(*world, ctx, false);
  } catch (const std::exception& e) {
    abort_job(e.what());
  }
  std::fprintf(stderr, "rank %d: %s (%d failed checks)\n", g_rank, g_failed ? "FAILED" : "passed",
               g_failed);
  return g_failed ? 1 : 0;
}
