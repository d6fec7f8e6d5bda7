// The caching device allocator (reuse, per-stream free lists, peak accounting, no driver
// allocations in a steady-state loop), device and pinned Buffers, the DeviceContext's
// streams and events.
#include <cuda_runtime.h>

#include "core/cuda/allocator.h"
#include "core/cuda/device.h"
#include "cuda/cuda_testing.h"

namespace bk::test {
namespace {

TEST(CachingAllocator, SizeClassesRoundUpByAtMostAnEighth) {
  size_t prev = 0;
  for (size_t b = 1; b < (size_t(1) << 26); b = b * 3 / 2 + 1) {
    const size_t c = CachingAllocator::size_class(b);
    EXPECT_GE(c, b);
    EXPECT_GE(c, prev);
    EXPECT_LE(c, std::max<size_t>(512, b + b / 8)) << b;
    EXPECT_EQ(c % 64, 0u) << b;
    prev = c;
  }
  EXPECT_EQ(CachingAllocator::size_class(0), 512u);
  EXPECT_EQ(CachingAllocator::size_class(1 << 20), size_t(1) << 20);
}

TEST(CachingAllocator, FreedBlocksAreReusedWithoutTheDriver) {
  CachingAllocator& a = device_allocator();
  void* p = a.allocate(1000000);
  const AllocatorStats s0 = a.stats();
  a.free(p);
  EXPECT_EQ(a.stats().allocated, s0.allocated - CachingAllocator::size_class(1000000));
  void* q = a.allocate(999999);  // same size class
  EXPECT_EQ(q, p);
  EXPECT_EQ(a.stats().driver_allocs, s0.driver_allocs);
  a.free(q);
}

TEST(CachingAllocator, BlocksStayWithTheirStream) {
  CachingAllocator& a = device_allocator();
  cudaStream_t other = nullptr;
  BK_CUDA_CHECK(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking));
  void* p = a.allocate(123456, Stream{});
  a.free(p);
  void* q = a.allocate(123456, Stream{other});  // must not take p: work on stream 0 may use it
  EXPECT_NE(q, p);
  a.free(q);
  void* r = a.allocate(123456, Stream{});
  EXPECT_EQ(r, p);
  a.free(r);
  BK_CUDA_CHECK(cudaStreamDestroy(other));
}

TEST(CachingAllocator, PeakAccounting) {
  CachingAllocator& a = device_allocator();
  a.reset_peak();
  const size_t base = a.stats().allocated;
  void* x = a.allocate(3 << 20);
  void* y = a.allocate(5 << 20);
  const size_t both = CachingAllocator::size_class(3 << 20) + CachingAllocator::size_class(5 << 20);
  EXPECT_EQ(a.stats().allocated, base + both);
  a.free(x);
  a.free(y);
  const AllocatorStats s = a.stats();
  EXPECT_EQ(s.allocated, base);
  EXPECT_EQ(s.peak_allocated, base + both);
  EXPECT_GE(s.reserved, both);  // cached, not returned to the driver
  a.reset_peak();
  EXPECT_EQ(a.stats().peak_allocated, base);
  a.release_cached();
  EXPECT_EQ(a.stats().reserved, a.stats().allocated);
}

// A training-step-like loop: buffers of many sizes allocated, used by kernels, freed. After
// the first iteration every size is cached and the driver is never called again.
TEST(CachingAllocator, SteadyStateLoopNeverCallsTheDriver) {
  CachingAllocator& a = device_allocator();
  auto step = [] {
    Buffer x = to_device(randn_f32({64, 96}, 1), DType::bf16);
    Buffer w = to_device(randn_f32({80, 96}, 2), DType::bf16);
    Buffer y(Shape{64, 80}, DType::bf16, Device::cuda);
    Buffer dw(Shape{80, 96}, DType::f32, Device::cuda);
    cuda::linear_forward(y, x, w);
    cuda::linear_backward_weight(dw, y, x);
    Buffer r(Shape{64}, DType::f32, Device::cuda), n(Shape{64, 96}, DType::bf16, Device::cuda);
    Buffer g = to_device(randn_f32({96}, 3), DType::bf16);
    cuda::rmsnorm_forward(n, r, x, g, 1e-6f);
    Buffer dg(Shape{96}, DType::f32, Device::cuda);
    cuda::rmsnorm_backward_weight(dg, n, x, r);  // uses a scratch partial buffer
    return cuda::sum_squares(dw);                // and a pinned readback
  };
  const double first = step();
  const uint64_t allocs = a.stats().driver_allocs;
  const uint64_t pinned = pinned_allocator().stats().driver_allocs;
  for (int i = 0; i < 5; ++i) EXPECT_EQ(step(), first);
  EXPECT_EQ(a.stats().driver_allocs, allocs);
  EXPECT_EQ(pinned_allocator().stats().driver_allocs, pinned);
}

TEST(DeviceBuffer, ZeroedUploadDownloadFillAndPinned) {
  Buffer d(Shape{3, 5}, DType::f32, Device::cuda);
  EXPECT_EQ(d.device(), Device::cuda);
  EXPECT_EQ(d.tensor().device, Device::cuda);
  Buffer h = to_host(d);
  for (int64_t i = 0; i < 15; ++i) EXPECT_EQ(h.ptr<float>()[i], 0.f);

  Buffer src = randn_f32({3, 5}, 9);
  d.upload(src);
  Buffer back({3, 5});
  d.download(back);
  EXPECT_TRUE(bitwise_equal(back, src));

  d.fill(2.5);
  h = to_host(d);
  for (int64_t i = 0; i < 15; ++i) EXPECT_EQ(h.ptr<float>()[i], 2.5f);

  Buffer p = Buffer::pinned({4}, DType::f64);
  EXPECT_TRUE(p.is_pinned());
  EXPECT_EQ(p.device(), Device::cpu);
  p.ptr<double>()[2] = 7.0;  // host-accessible
  Buffer on_gpu = p.to_device(Device::cuda);
  Buffer again = on_gpu.to_device(Device::cpu);
  EXPECT_EQ(again.ptr<double>()[2], 7.0);
  EXPECT_THROW(d.to(DType::f64), Error);
}

TEST(DeviceContext, StreamsPrioritiesAndEvents) {
  ASSERT_EQ(DeviceContext::current(), nullptr);
  {
    DeviceContext ctx(0);
    EXPECT_EQ(DeviceContext::current(), &ctx);
    EXPECT_EQ(default_stream().handle, ctx.compute().handle);
    int pc = 0, pm = 0, least = 0, greatest = 0;
    BK_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    BK_CUDA_CHECK(cudaStreamGetPriority(static_cast<cudaStream_t>(ctx.compute().handle), &pc));
    BK_CUDA_CHECK(cudaStreamGetPriority(static_cast<cudaStream_t>(ctx.comm().handle), &pm));
    EXPECT_EQ(pc, greatest);
    EXPECT_EQ(pm, least);
    EXPECT_NE(ctx.compute().handle, ctx.comm().handle);
    EXPECT_NE(ctx.compute().handle, ctx.side().handle);

    // Produce on compute, consume on comm after an event: the consumer sees the result.
    const int64_t n = 1 << 20;
    Buffer a(Shape{n}, DType::f32, Device::cuda, ctx.compute());
    a.fill(1.0);  // synchronous
    Buffer b(Shape{n}, DType::f32, Device::cuda, ctx.compute());
    b.fill(2.0);
    cuda::add_inplace(a, b, ctx.compute());  // a = 3
    Event done(true), start(true);
    start.record(ctx.compute());
    done.record(ctx.compute());
    done.wait(ctx.comm());
    Buffer host = Buffer::pinned({n}, DType::f32);
    copy_async(host, a, ctx.comm());
    synchronize(ctx.comm());
    EXPECT_EQ(host.ptr<float>()[0], 3.f);
    EXPECT_EQ(host.ptr<float>()[n - 1], 3.f);
    EXPECT_TRUE(done.done());
    EXPECT_GE(done.elapsed_ms(start), 0.f);
    stream_wait(ctx.compute(), ctx.comm());  // `host` is read on comm before it is freed
    ctx.synchronize();
  }
  EXPECT_EQ(DeviceContext::current(), nullptr);
  EXPECT_EQ(default_stream().handle, nullptr);
}

}  // namespace
}  // namespace bk::test
