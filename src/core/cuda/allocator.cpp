#include "core/cuda/allocator.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstdlib>

#include "core/cuda/check.h"
#include "core/cuda/device.h"

namespace bk {

namespace {
constexpr size_t kMinBlock = 512;

std::string mib(size_t bytes) { return fmt::format("{:.1f} MiB", double(bytes) / (1 << 20)); }
}  // namespace

size_t CachingAllocator::size_class(size_t bytes) {
  if (bytes <= kMinBlock) return kMinBlock;
  // 8 classes per octave [2^k, 2^(k+1)): round up to a multiple of 2^(k-3).
  const int k = std::bit_width(bytes) - 1;
  const size_t step = size_t(1) << (k - 3);
  return (bytes + step - 1) / step * step;
}

void* CachingAllocator::driver_alloc(size_t bytes) {
  void* p = nullptr;
  const cudaError_t err = kind_ == Kind::device ? cudaMalloc(&p, bytes)
                                                : cudaHostAlloc(&p, bytes, cudaHostAllocPortable);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear it, or the next launch check would report it
    return nullptr;
  }
  BK_CUDA_CHECK(err);
  ++stats_.driver_allocs;
  stats_.reserved += bytes;
  stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.reserved);
  return p;
}

void CachingAllocator::driver_free(void* p) {
  BK_CUDA_CHECK(kind_ == Kind::device ? cudaFree(p) : cudaFreeHost(p));
  ++stats_.driver_frees;
}

void* CachingAllocator::allocate(size_t bytes, Stream stream) {
  const size_t cls = size_class(bytes);
  void* key = kind_ == Kind::device ? resolve_stream(stream).handle : nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.requests;
  void* p = nullptr;
  auto& lists = free_[key];
  if (auto it = lists.find(cls); it != lists.end() && !it->second.empty()) {
    p = it->second.back();  // LIFO: the most recently freed block is likeliest still in L2
    it->second.pop_back();
  } else {
    p = driver_alloc(cls);
    if (!p) {
      release_cached_locked();  // blocks cached for other sizes or streams may cover it
      p = driver_alloc(cls);
    }
    if (!p) {
      const char* what = kind_ == Kind::device ? "device" : "pinned host";
      BK_FAIL("out of {} memory allocating {} ({} requested); {} in use, {} reserved, peak {}",
              what, mib(cls), bytes, mib(stats_.allocated), mib(stats_.reserved),
              mib(stats_.peak_allocated));
    }
  }
  live_.emplace(p, Live{cls, key});
  stats_.allocated += cls;
  stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
  return p;
}

void CachingAllocator::free(void* p) noexcept {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(p);
  if (it == live_.end()) {
    std::fprintf(stderr, "bk::CachingAllocator::free: %p was not allocated here (double free?)\n", p);
    std::abort();
  }
  const Live live = it->second;
  live_.erase(it);
  stats_.allocated -= live.bytes;
  free_[live.stream][live.bytes].push_back(p);
}

void CachingAllocator::release_cached_locked() {
  bool any = false;
  for (auto& [stream, lists] : free_)
    for (auto& [cls, blocks] : lists) any = any || !blocks.empty();
  if (!any) return;
  // Queued work on a block's stream may still use it: drain the device before freeing.
  if (kind_ == Kind::device) BK_CUDA_CHECK(cudaDeviceSynchronize());
  for (auto& [stream, lists] : free_)
    for (auto& [cls, blocks] : lists) {
      for (void* p : blocks) {
        driver_free(p);
        stats_.reserved -= cls;
      }
      blocks.clear();
    }
}

void CachingAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked();
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_allocated = stats_.allocated;
  stats_.peak_reserved = stats_.reserved;
}

CachingAllocator& device_allocator() {
  static CachingAllocator* a = new CachingAllocator(CachingAllocator::Kind::device);
  return *a;
}

CachingAllocator& pinned_allocator() {
  static CachingAllocator* a = new CachingAllocator(CachingAllocator::Kind::pinned_host);
  return *a;
}

}  // namespace bk
