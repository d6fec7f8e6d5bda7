// Host-side bfloat16 conversions (bits in a uint16_t): round to nearest even, as CUDA's
// __float2bfloat16 does, so host-prepared values match what device kernels produce.
#pragma once
#include <bit>
#include <cstdint>

namespace bk {

inline uint16_t f32_to_bf16_bits(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);  // NaN stays NaN
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float bf16_bits_to_f32(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

// f rounded to the nearest bfloat16, as a float.
inline float round_bf16(float f) { return bf16_bits_to_f32(f32_to_bf16_bits(f)); }

}  // namespace bk
