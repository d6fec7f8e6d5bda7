#include "model/param.h"

namespace bk {

void Param::init_normal(uint64_t seed, double std) {
  Rng rng(seed, Rng::stream_of(name));
  float* p = value.ptr<float>();
  for (int64_t i = 0; i < value.numel(); ++i) p[i] = float(std * rng.normal());
}

void Param::fill(float v) { value.fill(v); }

void Param::to(DType dtype) {
  value = value.to(dtype);
  grad = grad.to(dtype);
}

}  // namespace bk
