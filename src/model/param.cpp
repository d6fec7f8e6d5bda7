#include "model/param.h"

#include "kernels/ops.h"

namespace bk {

void Param::init_normal(uint64_t seed, double std) {
  Rng rng(seed, Rng::stream_of(name));
  float* p = value.ptr<float>();
  for (int64_t i = 0; i < value.numel(); ++i) p[i] = float(std * rng.normal());
}

void Param::fill(float v) { value.fill(v); }

void Param::refresh() {
  if (!master.empty()) ops::copy(value, master);  // converting copy: rounds to nearest even
}

void Param::place(Device device, DType working) {
  const DType full = working == DType::f64 ? DType::f64 : DType::f32;
  const DType work = full_precision ? full : working;
  // The full-precision weights on the device (f32 <-> f64 converted on the host: the GPU kernels
  // have no f64).
  Buffer on_device = (master.empty() ? value : master).to(full, device);
  if (work == full) {
    value = std::move(on_device);
    master = Buffer();
  } else {
    master = std::move(on_device);
    value = Buffer(master.shape(), work, device);
    refresh();
  }
  grad = Buffer(value.shape(), full, device);
}

}  // namespace bk
