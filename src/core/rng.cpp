#include "core/rng.h"

#include <cmath>

namespace bk {

double Rng::normal() {
  double u1 = uniform();
  double u2 = uniform();
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

uint64_t Rng::stream_of(std::string_view name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace bk
