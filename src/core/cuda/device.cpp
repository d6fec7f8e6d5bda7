#include "core/cuda/device.h"

#include <atomic>
#include <cstdio>

#include "core/cuda/check.h"

namespace bk {

namespace {
std::atomic<DeviceContext*> g_current{nullptr};

cudaStream_t cs(Stream s) { return static_cast<cudaStream_t>(resolve_stream(s).handle); }
cudaEvent_t ce(void* e) { return static_cast<cudaEvent_t>(e); }

Stream make_stream(int priority) {
  cudaStream_t s = nullptr;
  BK_CUDA_CHECK(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, priority));
  return Stream{s};
}
}  // namespace

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver / no device: not an error for the caller
    return 0;
  }
  return n;
}

std::string cuda_device_name(int device) {
  cudaDeviceProp prop{};
  BK_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

DeviceContext::DeviceContext(int device) : device_(device) {
  const int n = cuda_device_count();
  BK_CHECK(device >= 0 && device < n, "CUDA device {} requested but this host has {} device(s)",
           device, n);
  BK_CHECK(g_current.load() == nullptr, "a DeviceContext already exists in this process");
  BK_CUDA_CHECK(cudaSetDevice(device));
  // Lower numbers are higher priorities: `greatest` is the highest the device supports.
  int least = 0, greatest = 0;
  BK_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  compute_ = make_stream(greatest);
  side_ = make_stream(greatest);
  comm_ = make_stream(least);
  g_current.store(this);
}

DeviceContext::~DeviceContext() {
  // Destructors must not throw: report and carry on (the process is usually ending).
  for (Stream s : {compute_, side_, comm_}) {
    if (!s.handle) continue;
    if (cudaStreamSynchronize(cs(s)) != cudaSuccess || cudaStreamDestroy(cs(s)) != cudaSuccess)
      std::fprintf(stderr, "DeviceContext: %s while destroying a stream\n",
                   cudaGetErrorString(cudaGetLastError()));
  }
  g_current.store(nullptr);
}

void DeviceContext::synchronize() const {
  for (Stream s : {compute_, side_, comm_}) BK_CUDA_CHECK(cudaStreamSynchronize(cs(s)));
}

DeviceContext* DeviceContext::current() { return g_current.load(); }

Stream default_stream() {
  DeviceContext* ctx = g_current.load();
  return ctx ? ctx->compute() : Stream{};
}

Event::Event(bool timing) {
  cudaEvent_t e = nullptr;
  BK_CUDA_CHECK(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
  handle_ = e;
}

Event::~Event() {
  if (handle_ && cudaEventDestroy(ce(handle_)) != cudaSuccess)
    std::fprintf(stderr, "Event: cudaEventDestroy failed: %s\n",
                 cudaGetErrorString(cudaGetLastError()));
}

Event& Event::operator=(Event&& o) noexcept {
  if (this != &o) {
    if (handle_) (void)cudaEventDestroy(ce(handle_));
    handle_ = o.handle_;
    o.handle_ = nullptr;
  }
  return *this;
}

void Event::record(Stream s) { BK_CUDA_CHECK(cudaEventRecord(ce(handle_), cs(s))); }
void Event::wait(Stream s) const { BK_CUDA_CHECK(cudaStreamWaitEvent(cs(s), ce(handle_), 0)); }
void Event::synchronize() const { BK_CUDA_CHECK(cudaEventSynchronize(ce(handle_))); }

bool Event::done() const {
  const cudaError_t err = cudaEventQuery(ce(handle_));
  if (err == cudaErrorNotReady) return false;
  BK_CUDA_CHECK(err);
  return true;
}

float Event::elapsed_ms(const Event& start) const {
  float ms = 0;
  BK_CUDA_CHECK(cudaEventElapsedTime(&ms, ce(start.handle_), ce(handle_)));
  return ms;
}

void synchronize(Stream s) { BK_CUDA_CHECK(cudaStreamSynchronize(cs(s))); }

void stream_wait(Stream waiter, Stream signaler) {
  if (resolve_stream(waiter).handle == resolve_stream(signaler).handle) return;
  Event e;  // destroying a recorded event is fine: the wait already captured it
  e.record(signaler);
  e.wait(waiter);
}

void copy_async(Tensor dst, Tensor src, Stream s) {
  BK_CHECK(dst.dtype == src.dtype && dst.numel() == src.numel(),
           "copy_async: dst {} {} and src {} {} differ in dtype or element count",
           dtype_name(dst.dtype), dst.shape.str(), dtype_name(src.dtype), src.shape.str());
  if (dst.nbytes() == 0 || dst.data == src.data) return;
  BK_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, dst.nbytes(), cudaMemcpyDefault, cs(s)));
}

void copy_sync(Tensor dst, Tensor src, Stream s) {
  copy_async(dst, src, s);
  synchronize(s);
}

}  // namespace bk
