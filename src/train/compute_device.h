// The device one training process runs on (run.device, run.precision): the CPU, or the GPU of
// its local rank with the CUDA context (streams) that every device buffer and kernel uses.
// Builds without CUDA compile the same code; asking them for cuda is an error with a message.
#pragma once
#include <memory>
#include <string>

#include "config/config.h"
#include "model/layer.h"
#include "parallel/communicator.h"

namespace bk {

struct DeviceMemory {
  double allocated_gb = 0;  // tensor bytes in use now
  double peak_gb = 0;       // their high-water mark since reset_peak_memory()
  double reserved_gb = 0;   // held from the driver by the caching allocator (peak)
};

class ComputeDevice {
 public:
  // local_rank picks the GPU (local_rank modulo the GPUs of the host). Errors name cfg.source
  // and the key: cuda without a CUDA build or without a GPU, bf16 on the CPU.
  ComputeDevice(const Config& cfg, int local_rank);
  ~ComputeDevice();
  ComputeDevice(const ComputeDevice&) = delete;
  ComputeDevice& operator=(const ComputeDevice&) = delete;

  bool is_gpu() const { return format_.device == Device::cuda; }
  // Activation dtype and device for Model::place.
  const ActivationFormat& format() const { return format_; }
  // "cpu", or the GPU's name (e.g. "NVIDIA H100 80GB HBM3"), and its index on the host.
  const std::string& name() const { return name_; }
  int index() const { return index_; }
  // Device memory of the caching allocator; zeros on the CPU.
  DeviceMemory memory() const;
  void reset_peak_memory();
  // Waits for every queued kernel (timing; surfaces asynchronous errors). No-op on the CPU.
  void synchronize() const;
  // The GPU's transport for device tensors over the ranks of `bootstrap` (collective): NCCL on
  // the context's comm stream, ordered after its compute stream; timeout_s bounds its host
  // waits. An error in a build without NCCL or on the CPU.
  std::unique_ptr<Communicator> device_transport(Communicator& bootstrap, double timeout_s) const;

 private:
  struct Gpu;  // the CUDA context, where built with CUDA
  std::unique_ptr<Gpu> gpu_;
  ActivationFormat format_;
  std::string name_ = "cpu";
  int index_ = -1;
};

}  // namespace bk
