// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI (RFC 3720), ext4,
// safetensors checkpoints' state.json (docs/checkpoint-format.md) and TFRecord/TensorBoard.
//
//   crc32c("123456789") == 0xE3069283
//
// Incremental use: the seed is the CRC of the bytes before, so
//   crc32c(b, nb, crc32c(a, na)) == crc32c(a ++ b)
// and crc32c(p, 0, c) == c. Uses the SSE4.2 instruction when the build targets it (x86-64-v2 does),
// otherwise slicing-by-8 tables; both give the same value.
#pragma once
#include <cstddef>
#include <cstdint>

namespace bk {

uint32_t crc32c(const void* data, size_t n, uint32_t seed = 0);

// TFRecord's masked CRC (record length and data checksums in TensorBoard event files):
// rotate right by 15 bits and add 0xa282ead8.
inline uint32_t mask_crc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }
inline uint32_t masked_crc32c(const void* data, size_t n) { return mask_crc32c(crc32c(data, n)); }

namespace detail {
// The table-driven implementation, always available (tests compare it with crc32c()).
uint32_t crc32c_portable(const void* data, size_t n, uint32_t seed = 0);
}  // namespace detail

}  // namespace bk
