// Buffer: owning, zero-initialised storage for one tensor.
// - CPU (the default): 64-byte aligned host memory.
// - CUDA: device memory from the caching allocator (core/cuda/allocator.h), allocated and
//   zeroed in stream order on the buffer's stream; freeing returns it to that stream's cache.
// - pinned(): page-locked host memory (device cpu, usable by every CPU kernel) for
//   host<->device transfers that overlap compute.
// The CUDA parts exist when the binary is built with CUDA (BIRKHOFF_WITH_CUDA); otherwise
// asking for them is an error with a message, and the CPU behaviour is the same either way.
#pragma once
#include <cstddef>
#include <memory>

#include "core/stream.h"
#include "core/tensor.h"

namespace bk {

class Buffer {
 public:
  Buffer() = default;
  Buffer(Shape shape, DType dtype = DType::f32);
  // On `device`; CUDA memory is allocated and zeroed in stream order on `stream` (a null
  // stream: core/cuda/device.h's default_stream(), the current DeviceContext's compute
  // stream, or the legacy stream 0 without a context).
  Buffer(Shape shape, DType dtype, Device device);
  Buffer(Shape shape, DType dtype, Device device, Stream stream);
  // Page-locked host memory, zeroed.
  static Buffer pinned(Shape shape, DType dtype = DType::f32);
  // Storage whose contents are undefined (no zeroing pass: on the GPU a memset per activation
  // would cost a few percent of a step), for outputs an op overwrites entirely. With
  // set_poison_uninitialized(true) (tests; env BIRKHOFF_POISON_BUFFERS=1) it is filled with
  // 0xFF bytes instead (NaN in every float dtype), so a read before a write shows.
  static Buffer uninitialized(Shape shape, DType dtype, Device device);
  Buffer(Buffer&&) noexcept = default;
  Buffer& operator=(Buffer&&) noexcept = default;

  Tensor tensor() const { return Tensor{mem_.get(), dtype_, shape_, device_}; }
  operator Tensor() const { return tensor(); }  // NOLINT: a buffer is usable wherever a view is
  template <typename T> T* ptr() const { return tensor().ptr<T>(); }
  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  Stream stream() const { return stream_; }
  bool is_pinned() const { return mem_.get_deleter().kind == Kind::pinned; }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  bool empty() const { return !mem_; }
  void zero();          // CUDA: asynchronous on the buffer's stream
  void fill(double v);  // f32 or f64 (CUDA: through a host staging copy, synchronous)
  // A copy converted to another floating dtype (f32 <-> f64), CPU buffers only.
  Buffer to(DType dtype) const;
  // A copy in `dtype` (f32 <-> f64, converted on the host) on `device`, from any device:
  // placing weights and model state (synchronous).
  Buffer to(DType dtype, Device device) const;

  // Transfers between this buffer and a tensor of the same dtype and element count on any
  // device, in stream order on this buffer's stream (a CPU buffer: the default stream), then
  // waiting for it: they return when the bytes have arrived. Work on other streams that
  // writes the source must be ordered before (an Event). core/cuda/device.h has copy_async
  // for overlapped transfers from pinned memory.
  void upload(const Tensor& src);
  void download(const Tensor& dst) const;
  // A copy of this buffer on `device` (same dtype and shape), synchronous.
  Buffer to_device(Device device) const;

 private:
  enum class Kind : uint8_t { host, pinned, device };
  Buffer(Shape shape, DType dtype, Device device, Stream stream, bool zeroed);
  struct Free {
    Kind kind;
    size_t host_bytes;  // host kind: bytes allocated (host_tensor_bytes accounting)
    Free() noexcept : kind(Kind::host), host_bytes(0) {}  // a constructor, not an initializer: see [class.mem]
    explicit Free(Kind k, size_t bytes = 0) noexcept : kind(k), host_bytes(bytes) {}
    void operator()(void* p) const;
  };
  std::unique_ptr<void, Free> mem_;
  Shape shape_;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu;
  Stream stream_;
};

void set_poison_uninitialized(bool on);
bool poison_uninitialized();

// Bytes of host tensor storage (CPU Buffers, not pinned) alive now and at the peak since the
// last reset: what the activation-memory accounting of recomputation is checked against.
struct HostTensorBytes {
  int64_t live = 0, peak = 0;
};
HostTensorBytes host_tensor_bytes();
void reset_host_tensor_peak();  // peak = live

}  // namespace bk
