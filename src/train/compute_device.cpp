#include "train/compute_device.h"

#include <cstdio>
#include <exception>

#include "core/error.h"

#ifdef BIRKHOFF_WITH_CUDA
#include "core/cuda/allocator.h"
#include "core/cuda/device.h"
#endif
#ifdef BIRKHOFF_WITH_NCCL
#include "parallel/nccl_communicator.h"
#endif

namespace bk {

#ifdef BIRKHOFF_WITH_CUDA
struct ComputeDevice::Gpu {
  DeviceContext ctx;
  explicit Gpu(int device) : ctx(device) {}
};
#else
struct ComputeDevice::Gpu {};
#endif

namespace {
int gpus_on_host() {
#ifdef BIRKHOFF_WITH_CUDA
  return cuda_device_count();
#else
  return 0;
#endif
}
}  // namespace

ComputeDevice::ComputeDevice(const Config& cfg, int local_rank) {
  (void)local_rank;  // unused without CUDA
  const RunConfig& run = cfg.run;
  const int gpus = gpus_on_host();
#ifdef BIRKHOFF_WITH_CUDA
  constexpr bool built_with_cuda = true;
#else
  constexpr bool built_with_cuda = false;
#endif
  BK_CHECK(run.device != "cuda" || built_with_cuda,
           "{}: run.device: cuda, but this birkhoff was built without CUDA (no nvcc at configure time, or "
           "-DBIRKHOFF_CUDA=OFF); rebuild with CUDA, or set run.device to cpu or auto", cfg.source);
  BK_CHECK(run.device != "cuda" || gpus > 0,
           "{}: run.device: cuda, but no CUDA device is visible (no driver, no GPU, or CUDA_VISIBLE_DEVICES "
           "hides them); set run.device to cpu or auto", cfg.source);
  const bool gpu = run.device == "cuda" || (run.device == "auto" && gpus > 0);
  BK_CHECK(gpu || run.precision != "bf16",
           "{}: run.precision: bf16 needs the GPU (the CPU kernels compute in f32); set run.precision to f32 "
           "or auto, or run.device to cuda", cfg.source);
  format_.dtype = run.precision == "f32" || (run.precision == "auto" && !gpu) ? DType::f32 : DType::bf16;
  if (!gpu) return;
#ifdef BIRKHOFF_WITH_CUDA
  index_ = local_rank % gpus;
  gpu_ = std::make_unique<Gpu>(index_);  // before any device buffer: theirs is its compute stream
  name_ = cuda_device_name(index_);
  format_.device = Device::cuda;
#endif
}

ComputeDevice::~ComputeDevice() {
#ifdef BIRKHOFF_WITH_CUDA
  // Cached blocks belong to this context's streams, which die with it: give them back (another
  // ComputeDevice in this process, e.g. a second trainer, makes new streams).
  if (gpu_) {
    try {  // a destructor, possibly unwinding a CUDA error: report, never throw
      gpu_->ctx.synchronize();
      device_allocator().release_cached();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "warning: releasing the GPU's cached memory: %s\n", e.what());
    }
  }
#endif
}

DeviceMemory ComputeDevice::memory() const {
  DeviceMemory m;
#ifdef BIRKHOFF_WITH_CUDA
  if (gpu_) {
    const AllocatorStats s = device_allocator().stats();
    constexpr double GiB = double(1 << 30);
    m.allocated_gb = double(s.allocated) / GiB;
    m.peak_gb = double(s.peak_allocated) / GiB;
    m.reserved_gb = double(s.peak_reserved) / GiB;
  }
#endif
  return m;
}

void ComputeDevice::reset_peak_memory() {
#ifdef BIRKHOFF_WITH_CUDA
  if (gpu_) device_allocator().reset_peak();
#endif
}

void ComputeDevice::synchronize() const {
#ifdef BIRKHOFF_WITH_CUDA
  if (gpu_) gpu_->ctx.synchronize();
#endif
}

std::unique_ptr<Communicator> ComputeDevice::device_transport(Communicator& bootstrap, double timeout_s) const {
  BK_CHECK(gpu_, "device_transport: this process runs on the CPU");
#ifdef BIRKHOFF_WITH_NCCL
  NcclCommunicator::Options opt;
  opt.timeout_s = timeout_s;
  return NcclCommunicator::create(bootstrap, gpu_->ctx.compute(), gpu_->ctx.comm(), opt);
#else
  (void)bootstrap;
  (void)timeout_s;
  BK_FAIL("several processes on GPUs need NCCL, and this birkhoff was built without it (cmake found no nccl.h "
          "and libnccl under /usr/local/cuda or NCCL_ROOT); install NCCL and rebuild, or run one process");
#endif
}

}  // namespace bk
