// The NCCL communicator on one GPU (one rank, bootstrapped by a SelfCommunicator), and the
// rank-ordered sum kernel behind its deterministic reductions. Multi-rank behaviour is
// tested by tests/cuda/nccl_mpi.cpp under mpirun on hosts with 2+ GPUs (run_gpu_tests.sh).
#include "core/cuda/device.h"
#include "cuda/cuda_testing.h"
#include "kernels/cuda/comm_reduce.h"

#ifdef BIRKHOFF_WITH_NCCL
#include "parallel/nccl_communicator.h"
#include "parallel/self_communicator.h"
#endif

namespace bk::test {
namespace {

TEST(CommReduce, SumsPartsInRankOrder) {
  const int P = 5;
  const int64_t n = 1001;
  Buffer parts = randn_f32({P, n}, 1);
  Buffer want({n});
  for (int64_t i = 0; i < n; ++i) {
    float s = parts.ptr<float>()[i];
    for (int r = 1; r < P; ++r) s += parts.ptr<float>()[r * n + i];  // ((p0 + p1) + p2) ...
    want.ptr<float>()[i] = s;
  }
  Buffer d_parts = to_device(parts, DType::f32);
  Buffer d_out = device_output({n}, DType::f32);
  cuda::sum_in_rank_order(d_out.tensor().data, d_parts.tensor().data, P, n, DType::f32, Stream{});
  Buffer got = to_host(d_out);
  EXPECT_TRUE(bitwise_equal(got, want));  // the same additions in the same order
}

#ifdef BIRKHOFF_WITH_NCCL
TEST(NcclCommunicator, SingleRankCollectives) {
  DeviceContext ctx(0);
  SelfCommunicator self;
  auto comm = NcclCommunicator::create(self, ctx.compute(), ctx.comm());
  ASSERT_EQ(comm->rank(), 0);
  ASSERT_EQ(comm->size(), 1);
  const int64_t n = 4096;
  Buffer x = randn_f32({n}, 2);
  Buffer d(Shape{n}, DType::f32, Device::cuda, ctx.compute());
  d.upload(x);
  comm->all_reduce_sum(d);  // a sum over one rank is the identity
  Buffer out(Shape{n}, DType::f32, Device::cuda, ctx.compute());
  comm->all_gather(out, d);
  comm->broadcast(out, 0);
  comm->barrier();
  Buffer back({n});
  out.download(back);  // on the compute stream, which waited for the comm stream
  EXPECT_TRUE(bitwise_equal(back, x));
  auto sub = comm->split(0, 0);
  EXPECT_EQ(sub->size(), 1);
  sub->barrier();
  comm->synchronize();
  ctx.synchronize();
}
#endif

}  // namespace
}  // namespace bk::test
