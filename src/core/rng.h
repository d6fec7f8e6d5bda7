// Rng: a counter-based generator. Draw i of stream s under seed k is a pure function of
// (k, s, i), so parameters initialise identically whatever the parallel layout, every consumer
// (weights, connector coefficients, data order) gets its own stream, and the state to save for
// resume is the counter alone.
#pragma once
#include <cstdint>
#include <string_view>

namespace bk {

class Rng {
 public:
  Rng(uint64_t seed, uint64_t stream) : key_(mix(seed * 0x9E3779B97F4A7C15ull ^ mix(stream))) {}

  uint64_t next_u64() { return mix(key_ + 0xD1B54A32D192ED03ull * ++counter_); }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(next_u64() >> 11) * 0x1.0p-53; }
  // Standard normal (Box-Muller; one normal per two uniforms keeps the stream position simple).
  double normal();
  uint64_t counter() const { return counter_; }
  void set_counter(uint64_t c) { counter_ = c; }

  // A stream id from a name, e.g. a global parameter name.
  static uint64_t stream_of(std::string_view name);

 private:
  static uint64_t mix(uint64_t z) {  // splitmix64 finaliser
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t key_;
  uint64_t counter_ = 0;
};

}  // namespace bk
