// Caching allocators for device memory and pinned host memory (DESIGN.md §2: "caching arena
// on CUDA"). cudaMalloc/cudaFree synchronise the device and cost 10-100 us each, so a training
// step must never call them: freed blocks go to a free list per (stream, size class) and the
// next request of that class on that stream takes one back. After the first step every size
// the step needs is cached and the steady state allocates nothing from the driver
// (stats().driver_allocs stops growing; tests/cuda/allocator_test.cpp checks it).
//
// Size classes: 8 per power of two (sizes round up by at most 12.5%), at least 512 bytes.
// Every block is its own cudaMalloc (256-byte aligned, so 128-bit vector loads are always
// legal at a buffer's start).
//
// Stream ordering: a block belongs to the stream it was allocated on. Returning it to that
// stream's free list needs no synchronisation: later work on the same stream runs after the
// work that used it. Memory used on another stream (e.g. the communication stream) must be
// ordered back to its owner (an Event) before it is freed; the allocator cannot see such uses.
//
// No CUDA headers here: host code compiled without nvcc includes this file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/stream.h"

namespace bk {

struct AllocatorStats {
  size_t allocated = 0;       // bytes handed out and not yet freed (size classes)
  size_t peak_allocated = 0;  // high-water mark of `allocated` since the last reset_peak()
  size_t reserved = 0;        // bytes obtained from the driver (allocated + cached)
  size_t peak_reserved = 0;
  uint64_t requests = 0;       // allocate() calls
  uint64_t driver_allocs = 0;  // cudaMalloc / cudaHostAlloc calls (0 growth in steady state)
  uint64_t driver_frees = 0;   // blocks returned to the driver (release_cached, OOM retry)
};

class CachingAllocator {
 public:
  enum class Kind { device, pinned_host };
  explicit CachingAllocator(Kind kind) : kind_(kind) {}
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // A block of at least `bytes` bytes for use in stream order on `stream` (pinned memory
  // ignores the stream). On driver OOM: frees every cached block and retries once, then throws
  // bk::Error with the allocator's statistics.
  void* allocate(size_t bytes, Stream stream = {});
  // Returns p to its free list. Never throws (it runs in destructors); an unknown pointer is
  // a bug and aborts with a message.
  void free(void* p) noexcept;
  // Gives every cached (free) block back to the driver, after synchronising the device.
  void release_cached();

  AllocatorStats stats() const;
  void reset_peak();
  // Bytes actually reserved for a request of `bytes`.
  static size_t size_class(size_t bytes);

 private:
  struct Live {
    size_t bytes;
    void* stream;
  };
  void* driver_alloc(size_t bytes);  // nullptr on out-of-memory; throws on other errors
  void driver_free(void* p);
  void release_cached_locked();

  Kind kind_;
  mutable std::mutex mu_;
  // stream -> size class -> free blocks
  std::unordered_map<void*, std::unordered_map<size_t, std::vector<void*>>> free_;
  std::unordered_map<void*, Live> live_;
  AllocatorStats stats_;
};

// The process-wide allocators (one process per GPU). Deliberately never destroyed: freeing
// device memory during static destruction races the CUDA runtime's own teardown.
CachingAllocator& device_allocator();
CachingAllocator& pinned_allocator();

}  // namespace bk
