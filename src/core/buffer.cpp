#include "core/buffer.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#ifdef BIRKHOFF_WITH_CUDA
#include "core/cuda/allocator.h"
#include "core/cuda/check.h"
#include "core/cuda/device.h"
#endif

namespace bk {

namespace {
std::atomic<int64_t> g_host_live{0}, g_host_peak{0};

void host_allocated(size_t bytes) {
  const int64_t live = g_host_live.fetch_add(int64_t(bytes)) + int64_t(bytes);
  int64_t peak = g_host_peak.load();
  while (live > peak && !g_host_peak.compare_exchange_weak(peak, live)) {
  }
}

[[maybe_unused]] void no_cuda(const char* what) {
  BK_FAIL("{}: this binary was built without CUDA (configure with -DBIRKHOFF_CUDA=ON on a host "
          "with the CUDA toolkit)", what);
}
}  // namespace

void Buffer::Free::operator()(void* p) const {
  switch (kind) {
    case Kind::host:
      g_host_live.fetch_sub(int64_t(host_bytes));
      std::free(p);
      return;
#ifdef BIRKHOFF_WITH_CUDA
    case Kind::pinned: pinned_allocator().free(p); return;
    case Kind::device: device_allocator().free(p); return;
#else
    default: std::abort();  // unreachable: such buffers cannot be made without CUDA
#endif
  }
}

Buffer::Buffer(Shape shape, DType dtype) : Buffer(shape, dtype, Device::cpu, Stream{}, true) {}

namespace {
std::atomic<int> g_poison{-1};  // -1: not decided yet (the environment decides)
}  // namespace

void set_poison_uninitialized(bool on) { g_poison.store(on ? 1 : 0); }
bool poison_uninitialized() {
  int p = g_poison.load();
  if (p < 0) {
    const char* env = std::getenv("BIRKHOFF_POISON_BUFFERS");
    p = env && *env && std::strcmp(env, "0") != 0 ? 1 : 0;
    g_poison.store(p);
  }
  return p == 1;
}

Buffer Buffer::uninitialized(Shape shape, DType dtype, Device device) {
  return Buffer(shape, dtype, device, Stream{}, false);
}

HostTensorBytes host_tensor_bytes() { return {g_host_live.load(), g_host_peak.load()}; }
void reset_host_tensor_peak() { g_host_peak.store(g_host_live.load()); }

Buffer::Buffer(Shape shape, DType dtype, Device device)
    : Buffer(shape, dtype, device, Stream{}) {}  // CUDA: the default stream

Buffer::Buffer(Shape shape, DType dtype, Device device, Stream stream)
    : Buffer(shape, dtype, device, stream, true) {}

Buffer::Buffer(Shape shape, DType dtype, Device device, Stream stream, bool zeroed)
    : shape_(shape), dtype_(dtype), device_(device), stream_(stream) {
  const int fill = zeroed ? 0 : poison_uninitialized() ? 0xFF : -1;  // -1: leave as is
  if (device == Device::cpu) {
    stream_ = Stream{};  // a CPU buffer: the default stream (buffer.h)
    size_t rounded = (nbytes() + 63) / 64 * 64;
    if (rounded == 0) rounded = 64;
    void* p = std::aligned_alloc(64, rounded);
    BK_CHECK(p != nullptr, "out of host memory allocating {} bytes for a tensor of shape {}", rounded,
             shape.str());
    if (fill >= 0) std::memset(p, fill, rounded);
    mem_ = std::unique_ptr<void, Free>(p, Free{Kind::host, rounded});
    host_allocated(rounded);
    return;
  }
#ifdef BIRKHOFF_WITH_CUDA
  stream_ = resolve_stream(stream);
  mem_ = std::unique_ptr<void, Free>(device_allocator().allocate(nbytes(), stream),
                                     Free{Kind::device});
  if (fill >= 0 && nbytes() > 0)
    BK_CUDA_CHECK(cudaMemsetAsync(mem_.get(), fill, nbytes(), static_cast<cudaStream_t>(stream_.handle)));
#else
  no_cuda("a CUDA buffer");
#endif
}

Buffer Buffer::pinned(Shape shape, DType dtype) {
#ifdef BIRKHOFF_WITH_CUDA
  Buffer b;
  b.shape_ = shape;
  b.dtype_ = dtype;
  b.mem_ = std::unique_ptr<void, Free>(pinned_allocator().allocate(b.nbytes()), Free{Kind::pinned});
  std::memset(b.mem_.get(), 0, b.nbytes());
  return b;
#else
  no_cuda("a pinned host buffer");
  return {};
#endif
}

void Buffer::zero() {
  if (!mem_) return;
  if (device_ == Device::cpu) {
    std::memset(mem_.get(), 0, nbytes());
    return;
  }
#ifdef BIRKHOFF_WITH_CUDA
  if (nbytes() > 0)
    BK_CUDA_CHECK(cudaMemsetAsync(mem_.get(), 0, nbytes(), static_cast<cudaStream_t>(stream_.handle)));
#endif
}

void Buffer::upload(const Tensor& src) {
  BK_CHECK(src.dtype == dtype_ && src.numel() == numel(),
           "Buffer::upload: buffer is {} {}, source is {} {}", dtype_name(dtype_), shape_.str(),
           dtype_name(src.dtype), src.shape.str());
  if (device_ == Device::cpu && src.device == Device::cpu) {
    if (nbytes() > 0) std::memmove(mem_.get(), src.data, nbytes());
    return;
  }
#ifdef BIRKHOFF_WITH_CUDA
  copy_sync(tensor(), src, stream_);
#else
  no_cuda("Buffer::upload to or from a CUDA tensor");
#endif
}

void Buffer::download(const Tensor& dst) const {
  BK_CHECK(dst.dtype == dtype_ && dst.numel() == numel(),
           "Buffer::download: buffer is {} {}, destination is {} {}", dtype_name(dtype_),
           shape_.str(), dtype_name(dst.dtype), dst.shape.str());
  if (device_ == Device::cpu && dst.device == Device::cpu) {
    if (nbytes() > 0) std::memmove(dst.data, mem_.get(), nbytes());
    return;
  }
#ifdef BIRKHOFF_WITH_CUDA
  copy_sync(dst, tensor(), stream_);
#else
  no_cuda("Buffer::download to or from a CUDA tensor");
#endif
}

Buffer Buffer::to_device(Device device) const {
  Buffer out(shape_, dtype_, device);
  // Copy in the stream order of the device side: this buffer's stream, or the new one's.
  if (device_ != Device::cpu) download(out);
  else out.upload(tensor());
  return out;
}

}  // namespace bk

namespace bk {

void Buffer::fill(double v) {
  if (device_ != Device::cpu) {
    Buffer host(shape_, dtype_);
    host.fill(v);
    upload(host);
    return;
  }
  if (dtype_ == DType::f64) {
    double* p = ptr<double>();
    for (int64_t i = 0; i < numel(); ++i) p[i] = v;
  } else {
    float* p = ptr<float>();
    for (int64_t i = 0; i < numel(); ++i) p[i] = float(v);
  }
}

Buffer Buffer::to(DType dtype, Device device) const {
  Buffer host = to_device(Device::cpu);
  if (host.dtype() != dtype) host = host.to(dtype);
  return device == Device::cpu ? std::move(host) : host.to_device(device);
}

Buffer Buffer::to(DType dtype) const {
  BK_CHECK(device_ == Device::cpu, "Buffer::to: a CUDA buffer; download it first");
  BK_CHECK((dtype_ == DType::f32 || dtype_ == DType::f64) && (dtype == DType::f32 || dtype == DType::f64),
           "Buffer::to: only f32 <-> f64, not {} -> {}", dtype_name(dtype_), dtype_name(dtype));
  Buffer out(shape_, dtype);
  for (int64_t i = 0; i < numel(); ++i) {
    const double v = dtype_ == DType::f64 ? ptr<double>()[i] : double(ptr<float>()[i]);
    if (dtype == DType::f64) out.ptr<double>()[i] = v;
    else out.ptr<float>()[i] = float(v);
  }
  return out;
}

}  // namespace bk
